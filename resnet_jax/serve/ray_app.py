"""The same service on Ray Serve: replicas across devices and machines, Ray's request batching
(`@serve.batch`) in place of the single process's, the same app, endpoints and answers.

    python -m resnet_jax.serve.ray_app --workdir W [--gallery G.npz] --replicas 2 \\
        [--gpus_per_replica 1] [--host 127.0.0.1] [--port 8000]

Starts a local Ray instance, or joins the cluster that RAY_ADDRESS (or `ray start`'s) names,
deploys the replicas behind Ray Serve's HTTP proxy on --host:--port, and runs until SIGTERM or
Ctrl-C, then shuts the deployment down (each replica answers what it holds first). Needs the
ray extra: pip install -e '.[train,serve,ray]'. Every replica reads the run (and the gallery)
from the same path, so on several machines they must share it (a network file system).

A gallery is searched by every replica; adding to it (POST /v1/gallery) is refused with more
than one replica, since each would write the file without seeing the others' additions: add
with embed.py --append and deploy again.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading

import numpy as np
from absl import app, flags
from ray import serve

from resnet_jax.serve import API_KEY_VARIABLE
from resnet_jax.serve.app import create_app
from resnet_jax.serve.service import Service

flags.DEFINE_string("workdir", None, "The run to serve.")
flags.DEFINE_string("checkpoint", "auto", "best, latest or a step (default: best where kept).")
flags.DEFINE_string("gallery", None, "The embeddings file (.npz, embed.py) to search.")
flags.DEFINE_integer("replicas", 2, "How many copies of the model serve requests.")
flags.DEFINE_float("gpus_per_replica", 0, "GPUs each replica holds (Ray places them).")
flags.DEFINE_string("host", "127.0.0.1", "The address of Ray Serve's HTTP proxy.")
flags.DEFINE_integer("port", 8000, "The port of Ray Serve's HTTP proxy.")
flags.DEFINE_string("api_key", None, "As serve.py's --api_key (default: $RESNET_JAX_API_KEY).")
flags.DEFINE_integer("max_batch_size", 16, "The most images in one forward pass (per replica).")
flags.DEFINE_float("max_delay_ms", 5.0, "How long a batch waits for more images.")
flags.DEFINE_float("max_body_mb", 20.0, "The largest request body, in MiB.")
FLAGS = flags.FLAGS


@serve.deployment(name="resnet_jax")
@serve.ingress()
class ResNetReplica:
    """One replica: the run's model compiled for every batch shape before it takes requests
    (Ray routes to it once its constructor returns)."""

    def __init__(self, workdir: str, checkpoint: str, gallery: str | None, max_batch_size: int,
                 max_delay_s: float, api_key: str | None, max_body_bytes: int,
                 gallery_writable: bool):
        self.service = Service.load(workdir, checkpoint, gallery, max_batch_size)
        self.service.gallery_writable = gallery_writable
        self.service.compile()
        self.forward_one.set_max_batch_size(self.service.engine.max_batch_size)
        self.forward_one.set_batch_wait_timeout_s(max_delay_s)
        self.service.submit = self.forward_one
        self._app_options = {"api_key": api_key, "max_body_bytes": max_body_bytes}

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def forward_one(self, images: list[np.ndarray]) -> list[tuple]:
        self.service.metrics.batch_size.observe(len(images))
        logits, embeddings = await asyncio.to_thread(self.service.engine.forward,
                                                     np.stack(images))
        return list(zip(logits, embeddings))

    def __serve_build_asgi_app__(self):
        return create_app(self.service, **self._app_options)


def deployment(workdir: str, *, checkpoint: str = "auto", gallery: str | None = None,
               replicas: int = 2, gpus_per_replica: float = 0, max_batch_size: int = 16,
               max_delay_s: float = 0.005, api_key: str | None = None,
               max_body_bytes: int = 20 * 2**20):
    """The bound application for `serve.run`, with absolute paths (replicas may start
    elsewhere)."""
    return ResNetReplica.options(
        num_replicas=replicas, ray_actor_options={"num_gpus": gpus_per_replica},
        # room for two full batches per replica: one on the device, the next one filling
        max_ongoing_requests=2 * max_batch_size,
        logging_config={"enable_access_log": False}).bind(
        os.path.abspath(workdir), checkpoint, os.path.abspath(gallery) if gallery else None,
        max_batch_size, max_delay_s, api_key, max_body_bytes, replicas == 1)


def main(argv):
    import ray

    from resnet_jax import errors
    from resnet_jax.errors import UserError

    with errors.reported():
        if len(argv) > 1:
            raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")
        if not FLAGS.workdir or not os.path.isdir(FLAGS.workdir):
            raise UserError(f"--workdir must name a run's folder, got {FLAGS.workdir!r}")
        if FLAGS.replicas < 1:
            raise UserError(f"--replicas must be >= 1, got {FLAGS.replicas}")
        ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False,
                 log_to_driver=True)
        serve.start(http_options={"host": FLAGS.host, "port": FLAGS.port})
        serve.run(deployment(
            FLAGS.workdir, checkpoint=FLAGS.checkpoint, gallery=FLAGS.gallery,
            replicas=FLAGS.replicas, gpus_per_replica=FLAGS.gpus_per_replica,
            max_batch_size=FLAGS.max_batch_size, max_delay_s=FLAGS.max_delay_ms / 1000,
            api_key=FLAGS.api_key or os.environ.get(API_KEY_VARIABLE) or None,
            max_body_bytes=int(FLAGS.max_body_mb * 2**20)), name="resnet_jax",
            route_prefix="/")
        stop = threading.Event()  # after Ray's start-up, which sets handlers of its own
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        print(f"serving {FLAGS.workdir} on Ray Serve, {FLAGS.replicas} replicas, at "
              f"http://{FLAGS.host}:{FLAGS.port}/", file=sys.stderr, flush=True)
        stop.wait()
        serve.shutdown()
        ray.shutdown()
        print("stopped", file=sys.stderr, flush=True)


if __name__ == "__main__":
    app.run(main)
