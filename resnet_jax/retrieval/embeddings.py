"""Image files -> L2-normalised embeddings (the backbone's pooled features), and the .npz file
that holds them.

The file (numpy's .npz, read with `allow_pickle=False`: nothing in it is a pickled object):
    paths       (N,) str    the images, as they were named
    embeddings  (N, D) float32, each row of unit length
    labels      (N,) int32  the class of each image, where all sat in class folders (else -1)
    classes     (C,) str    the class folders' names, sorted (empty without labels)
    skipped     (S,) str    files that could not be read, with the reason
    order       (N,) int64  each image's position among all the images (shards merge by it)
    total       ()  int64   how many images all shards together were given
    source      () str      JSON: the backbone that embedded them (`backbone.Backbone.source`)
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import io
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from resnet_jax.errors import UserError
from resnet_jax.files import write_atomically
from resnet_jax.launch import sharding
from resnet_jax.models import kernels
from resnet_jax.models.inputs import normalize_images
from resnet_jax.retrieval import search
from resnet_jax.retrieval.backbone import Backbone, decode_source, encode_source
from resnet_jax.runs.progress import Progress

NO_LABEL = -1


@dataclasses.dataclass
class Embeddings:
    paths: np.ndarray
    embeddings: np.ndarray
    labels: np.ndarray
    classes: np.ndarray
    skipped: np.ndarray
    order: np.ndarray
    total: int
    source: dict

    @property
    def labelled(self) -> bool:
        return len(self.classes) > 0 and bool(np.all(self.labels != NO_LABEL))

    def save(self, path: str) -> None:
        """Writes the .npz whole or not at all."""
        buffer = io.BytesIO()
        np.savez(buffer, paths=self.paths, embeddings=self.embeddings, labels=self.labels,
                 classes=self.classes, skipped=self.skipped, order=self.order,
                 total=np.int64(self.total), source=np.str_(encode_source(self.source)))
        write_atomically(path, buffer.getvalue())

    def extended(self, other: Embeddings) -> Embeddings:
        """These embeddings and `other`'s (the same model's: UserError otherwise) as one
        gallery: `other`'s images after these, a path already here not added twice. Labels
        keep their class (classes merged by name); an image without one has NO_LABEL."""
        from resnet_jax.retrieval.backbone import same_weights

        if not same_weights(other.source, self.source):
            raise UserError("the new images were embedded by another model than the gallery's "
                            "(or another checkpoint): embed them with the gallery's model")
        new = ~np.isin(other.paths, self.paths)
        paths = np.concatenate([self.paths, other.paths[new]])
        classes = sorted(set(self.classes.tolist()) | set(other.classes.tolist()))
        index = {name: i for i, name in enumerate(classes)}

        def relabelled(part: Embeddings, rows) -> list[int]:
            return [NO_LABEL if k == NO_LABEL else index[str(part.classes[k])]
                    for k in part.labels[rows]]

        labels = np.array(relabelled(self, slice(None)) + relabelled(other, new), np.int32)
        skipped = np.concatenate([self.skipped, other.skipped])
        return Embeddings(paths, np.concatenate([self.embeddings, other.embeddings[new]]),
                          labels, np.array(classes, dtype=str), skipped,
                          np.arange(len(paths), dtype=np.int64), len(paths) + len(skipped),
                          self.source)


def load(path: str) -> Embeddings:
    """The embeddings file at `path`, checked (`check`); UserError if it is missing, not one of
    ours, or damaged (truncated, arrays that disagree, rows that are not finite unit vectors)."""
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as f:
            contents = Embeddings(f["paths"], f["embeddings"], f["labels"], f["classes"],
                                  f["skipped"], f["order"], int(f["total"]),
                                  decode_source(str(f["source"])))
    except FileNotFoundError:
        raise UserError(f"{path} does not exist") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a directory, not an embeddings file") from None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        # not an .npz (or a truncated one), or not ours
        reason = (str(error).splitlines() or [type(error).__name__])[0]
        raise UserError(f"{path} is not a whole embeddings file of embed.py ({reason}); embed "
                        f"the images again") from None
    problem = check(contents)
    if problem:
        raise UserError(f"{path} is damaged: {problem}; embed the images again")
    return contents


def check(contents: Embeddings) -> str:
    """What is wrong with the arrays of an embeddings file ('' if nothing)."""
    vectors = contents.embeddings
    if vectors.ndim != 2 or not np.issubdtype(vectors.dtype, np.floating):
        return f"its embeddings are {vectors.dtype} of shape {vectors.shape}, not (N, D) floats"
    n = len(vectors)
    lengths = {"paths": contents.paths, "labels": contents.labels, "order": contents.order}
    for name, values in lengths.items():
        if values.ndim != 1 or len(values) != n:
            return f"{name} has shape {values.shape}, the embeddings {n} rows"
    if not np.issubdtype(contents.labels.dtype, np.integer) or n and (
            contents.labels.min() < NO_LABEL or contents.labels.max() >= len(contents.classes)):
        return f"labels outside -1..{len(contents.classes) - 1} (classes: {len(contents.classes)})"
    finite = np.isfinite(vectors).all(axis=1)
    if not finite.all():
        row = int(np.argmin(finite))
        return f"row {row} ({contents.paths[row]}) is not finite"
    norms = np.linalg.norm(vectors, axis=1)
    off = np.abs(norms - 1.0) > 1e-3
    if off.any():
        row = int(np.argmax(off))
        return f"row {row} ({contents.paths[row]}) has length {norms[row]:.4g}, not 1"
    return ""


def class_labels(groups: list[tuple[str, list[str]]]) -> tuple[np.ndarray, tuple[str, ...]]:
    """(labels, classes) for images found under the arguments (`groups`: each argument with the
    images found under it), where every argument is a folder of class folders (ARG/CLASS/FILE);
    otherwise every label is NO_LABEL and there are no classes."""
    names = []
    for argument, paths in groups:
        for path in paths:
            parts = os.path.relpath(path, argument).split(os.sep)
            if not os.path.isdir(argument) or len(parts) != 2:
                total = sum(len(p) for _, p in groups)
                return np.full(total, NO_LABEL, np.int32), ()
            names.append(parts[0])
    classes = tuple(sorted(set(names)))
    index = {name: i for i, name in enumerate(classes)}
    return np.array([index[n] for n in names], np.int32), classes


def embedding_fn(backbone: Backbone, batch_size: int):
    """(uint8 images, padded to `batch_size`) -> (batch_size, D) float32 unit vectors, in eval
    mode, the batch split over every device. Made once per backbone and batch size."""
    if batch_size in backbone.embedders:
        return backbone.embedders[batch_size]
    mesh = sharding.create_mesh()
    normalization = backbone.contract.normalization

    def embed(variables, images):
        x = backbone.model.apply(variables, normalize_images(images, normalization),
                                 train=False).astype(jnp.float32)  # (B, D)
        return search.unit_rows(x)

    jitted = jax.jit(embed, in_shardings=(sharding.replicated(mesh),
                                          sharding.batch_sharding(mesh)))
    variables = jax.device_put(
        kernels.for_inference(backbone.model, backbone.variables, backbone.contract.image_shape),
        sharding.replicated(mesh))
    backbone.embedders[batch_size] = lambda images: jitted(variables, images)
    return backbone.embedders[batch_size]


def round_up_to_devices(batch_size: int) -> int:
    devices = jax.device_count()
    return -(-batch_size // devices) * devices


def embed_files(backbone: Backbone, paths: list[str], batch_size: int,
                progress: bool = True) -> tuple[np.ndarray, list[int], list[str]]:
    """(embeddings of the readable files, their positions in `paths`, "path: reason" of each
    unreadable file). Files are decoded by a thread pool while the devices embed the batch
    before; an unreadable file is named on stderr and skipped."""
    batch_size = round_up_to_devices(batch_size)
    embed = embedding_fn(backbone, batch_size)
    contract = backbone.contract
    image_shape = contract.image_shape

    def read(path):
        try:
            return contract.read_image(path), None
        except UserError as error:
            return None, str(error)

    shown = Progress(len(paths), 0, enabled=progress, bar=True, interval_s=10.0,
                     job="embed", unit="image")
    outputs, kept, skipped = [], [], []
    pending = None  # the batch on the devices while the next one is decoded

    def collect(pending):
        result, count = pending
        outputs.append(np.asarray(result)[:count])

    with concurrent.futures.ThreadPoolExecutor(max(2, min(8, os.cpu_count() or 2))) as pool:
        for start in range(0, len(paths), batch_size):
            chunk = paths[start:start + batch_size]
            images = np.zeros((batch_size, *image_shape), np.uint8)
            count = 0
            for offset, (pixels, problem) in enumerate(pool.map(read, chunk)):
                if problem is not None:
                    skipped.append(problem)
                    print(f"warning: skipped: {problem}", file=sys.stderr, flush=True)
                    continue
                images[count] = pixels
                kept.append(start + offset)
                count += 1
            if pending is not None:
                collect(pending)
                pending = None
            if count:
                pending = (embed(images), count)  # dispatched: runs while the next is read
            shown.update(start + len(chunk))
        if pending is not None:
            collect(pending)
    shown.close()
    dimension = backbone.model.feature_info[-1].channels
    embeddings = np.concatenate(outputs) if outputs else np.zeros((0, dimension), np.float32)
    return embeddings, kept, skipped


def merge(parts: list[Embeddings], names: list[str]) -> Embeddings:
    """The shards of one embedding job (`--shard K/N`) as one file, in the images' order.
    UserError for shards of different jobs, or an incomplete or overlapping set."""
    first = parts[0]
    for part, name in zip(parts[1:], names[1:]):
        if part.source != first.source or part.total != first.total:
            raise UserError(f"{name} and {names[0]} are not shards of one job (another model "
                            f"or another set of images)")
        if not np.array_equal(part.classes, first.classes):
            raise UserError(f"{name} and {names[0]} have different class folders")
    order = np.concatenate([p.order for p in parts])
    skipped = np.concatenate([p.skipped for p in parts])
    if len(np.unique(order)) != len(order):
        raise UserError(f"the shards {', '.join(names)} overlap: give each shard once")
    if len(order) + len(skipped) != first.total:
        raise UserError(f"the shards hold {len(order)} embeddings and {len(skipped)} skipped "
                        f"files of {first.total} images: a shard is missing")
    by_order = np.argsort(order, kind="stable")
    return Embeddings(
        np.concatenate([p.paths for p in parts])[by_order],
        np.concatenate([p.embeddings for p in parts])[by_order],
        np.concatenate([p.labels for p in parts])[by_order], first.classes, skipped,
        order[by_order], first.total, first.source)
