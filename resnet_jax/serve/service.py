"""What the service does, apart from HTTP: a request's image bytes -> the run's answer, in the
shapes predict.py --json and embed.py --gallery --json write. The FastAPI app (`serve.app`)
and the Ray Serve deployment (`serve.ray_app`) both call it; only how images are batched onto
the device (`submit`) differs between them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
import threading
from collections.abc import Awaitable, Callable

import numpy as np

from resnet_jax.data import pillow
from resnet_jax.runs import inference
from resnet_jax.serve import engine as engines
from resnet_jax.serve.engine import Engine
from resnet_jax.serve.gallery import Gallery
from resnet_jax.serve.metrics import Metrics

MAX_TOP_K = 1000
# Pillow's format name -> the file suffix an added gallery image is kept under
SUFFIXES = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp",
            "TIFF": ".tif"}


class RequestError(Exception):
    """A request the service cannot answer as asked: its status (4xx, 503) and one line."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclasses.dataclass
class Service:
    engine: Engine
    source: dict  # the served model, as an embeddings file records it (Backbone.source)
    gallery: Gallery | None
    metrics: Metrics
    # one image's pixels -> its (logits, embedding) rows, once its batch ran on the device
    submit: Callable[[np.ndarray], Awaitable[tuple]] | None = None
    compilations_at_ready: int | None = None
    compile_error: BaseException | None = None
    gallery_writable: bool = True  # False for replicas that share one gallery file (Ray)

    @classmethod
    def load(cls, workdir: str, checkpoint: str = "auto", gallery: str | None = None,
             max_batch_size: int = 16, batch_shapes=None) -> Service:
        """The run's model and gallery, not yet compiled (`compile`). UserError for a workdir
        that is not a run, a run that takes no image files, or a gallery of another model."""
        run = inference.from_workdir(workdir, which=checkpoint)
        run.contract.require_image_files()
        engine = Engine(run, batch_shapes or engines.batch_shapes_up_to(max_batch_size))
        source = {"workdir": os.path.abspath(workdir), "step": run.step,
                  "checkpoint": run.checkpoint}
        dimension = run.model.feature_info[-1].channels
        opened = Gallery.open(gallery, source, dimension) if gallery else None
        metrics = Metrics.create(engine.max_batch_size)
        if opened is not None:
            metrics.gallery_size.set(len(opened))
        return cls(engine, source, opened, metrics)

    # --- start-up --------------------------------------------------------------------------
    def compile(self) -> None:
        """Compiles every batch shape; the service is ready after it."""
        self.engine.compile(progress=lambda size: print(
            f"compiled the forward pass for batches of {size}", file=sys.stderr, flush=True))
        self.compilations_at_ready = engines.compilations()

    def compile_in_background(self) -> threading.Thread:
        def compile_or_keep_error():
            try:
                self.compile()
            except BaseException as error:  # /readyz says it, and the log has the traceback
                self.compile_error = error
                raise

        thread = threading.Thread(target=compile_or_keep_error, name="resnet-jax-compile",
                                  daemon=True)
        thread.start()
        return thread

    @property
    def ready(self) -> bool:
        return self.compilations_at_ready is not None

    def compilations_after_ready(self) -> int:
        return engines.compilations() - self.compilations_at_ready if self.ready else 0

    # --- requests ---------------------------------------------------------------------------
    async def _outputs(self, data: bytes) -> tuple[np.ndarray, np.ndarray]:
        if not self.ready:
            raise RequestError(503, "the model is still compiling: wait for /readyz")
        pixels = await asyncio.to_thread(self._decode, data)  # off the event loop
        return await self.submit(pixels)

    def _decode(self, data: bytes) -> np.ndarray:
        if not data:
            raise RequestError(400, "the request has no image: send it as the body (Content-"
                               "Type: image/...) or as the multipart field 'file'")
        try:
            return self.engine.run.contract.decode(data)
        except pillow.TooManyPixels as error:
            raise RequestError(413, str(error)) from None
        except pillow.UndecodableImage as error:
            raise RequestError(400, str(error)) from None

    async def classify(self, data: bytes, top_k: int = 5, threshold: float | None = None
                       ) -> dict:
        if not 1 <= top_k <= MAX_TOP_K:
            raise RequestError(422, f"top_k must be in 1..{MAX_TOP_K}, got {top_k}")
        if threshold is not None and not 0 < threshold < 1:
            raise RequestError(422, f"threshold must be in (0, 1), got {threshold}")
        logits, _ = await self._outputs(data)
        return self.engine.run.contract.predict(logits[None], top_k, threshold)[0]

    async def embed(self, data: bytes) -> dict:
        _, embedding = await self._outputs(data)
        return {"embedding": embedding.tolist(), "dimension": len(embedding)}

    async def search(self, data: bytes, top_k: int = 5) -> dict:
        gallery = self._require_gallery()
        if not 1 <= top_k <= MAX_TOP_K:
            raise RequestError(422, f"top_k must be in 1..{MAX_TOP_K}, got {top_k}")
        _, embedding = await self._outputs(data)
        return {"neighbors": gallery.search(embedding, top_k)}

    async def add(self, name: str, data: bytes) -> dict:
        gallery = self._require_gallery()
        if not self.gallery_writable:
            raise RequestError(409, "this deployment's replicas share the gallery file and "
                               "cannot add to it: add with embed.py --append, then deploy "
                               "again (or serve with one replica)")
        _, embedding = await self._outputs(data)
        suffix = SUFFIXES.get(self._format(data), ".img")
        try:
            added = await asyncio.to_thread(gallery.add, name, data, suffix, embedding)
        except ValueError as error:
            raise RequestError(422, str(error)) from None
        except KeyError as error:
            raise RequestError(409, error.args[0]) from None
        self.metrics.gallery_size.set(len(gallery))
        return added

    @staticmethod
    def _format(data: bytes) -> str:
        import io

        with pillow.open_image(io.BytesIO(data)) as image:
            return image.format or ""

    def _require_gallery(self) -> Gallery:
        if self.gallery is None:
            raise RequestError(404, "this service has no gallery: start it with --gallery "
                               "G.npz (embed.py --workdir W --output G.npz IMAGES)")
        return self.gallery

    def model_record(self) -> dict:
        run = self.engine.run
        return {"model": run.plan.model.name, "classes": list(run.class_names),
                **run.contract.task.output_record(),
                "input": {"shape": list(run.image_shape), "dtype": "uint8 pixels, RGB"},
                "preprocessing": run.contract.preprocessing_record(),
                "checkpoint": run.checkpoint, "step": run.step,
                "workdir": self.source["workdir"],
                "weights_source": run.plan.loop.init_from or "trained from scratch",
                "embedding_dimension": run.model.feature_info[-1].channels,
                "batch_shapes": list(self.engine.batch_shapes),
                "gallery": None if self.gallery is None else {
                    "path": self.gallery.path, "images": len(self.gallery)}}
