"""The gallery a service searches: an embeddings file of embed.py, held in memory, searched
exactly (one matrix-vector product on the host: no compilation per gallery size), and grown by
the images added through the service.

An added image is written beside the gallery (GALLERY.images/NAME.EXT, whole or not at all),
then the gallery file is written again with its row (atomically), then the one in memory is
swapped: a crash between the two writes leaves an image file that the next add of that name
overwrites, never a gallery row without its image. Thumbnails are served by row number, so
only the gallery's own files can be asked for.
"""

from __future__ import annotations

import os
import re
import sys
import threading

import numpy as np

from resnet_jax.errors import UserError
from resnet_jax.files import write_atomically
from resnet_jax.retrieval import embeddings as embedding_files
from resnet_jax.retrieval.embeddings import NO_LABEL, Embeddings

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def _empty(source: dict, dimension: int) -> Embeddings:
    return Embeddings(np.array([], dtype=str), np.zeros((0, dimension), np.float32),
                      np.array([], np.int32), np.array([], dtype=str), np.array([], dtype=str),
                      np.array([], np.int64), 0, source)


class Gallery:
    def __init__(self, path: str, contents: Embeddings):
        self.path = path
        self.images_dir = path[:-len(".npz")] + ".images"
        self._contents = contents
        self._lock = threading.Lock()  # one add at a time; a search reads a snapshot

    @classmethod
    def open(cls, path: str, source: dict, dimension: int) -> Gallery:
        """The gallery at `path` (created empty by the first add if there is none), which the
        model `source` (a `Backbone.source`) must have embedded. UserError otherwise."""
        if not path.endswith(".npz"):
            raise UserError(f"--gallery must name an .npz file of embed.py, got {path!r}")
        if not os.path.exists(path):
            if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
                raise UserError(f"the folder of --gallery {path} does not exist")
            print(f"{path} does not exist: the gallery starts empty and is written by the "
                  f"first image added (POST /v1/gallery)", file=sys.stderr, flush=True)
            return cls(path, _empty(source, dimension))
        contents = embedding_files.load(path)
        theirs = contents.source.get("workdir") or contents.source.get("init_from")
        if contents.source.get("workdir") != source["workdir"]:
            raise UserError(f"{path} was embedded by {theirs}, not by the served run "
                            f"{source['workdir']}: embed it with embed.py --workdir "
                            f"{source['workdir']}")
        if contents.embeddings.shape[1] != dimension:
            raise UserError(f"{path} holds embeddings of {contents.embeddings.shape[1]} "
                            f"dimensions; the served model's have {dimension}")
        if contents.source.get("step") != source["step"]:
            print(f"warning: {path} was embedded at step {contents.source.get('step')}; the "
                  f"served checkpoint is step {source['step']}: embed it again to compare "
                  f"alike", file=sys.stderr, flush=True)
        contents.source = source  # the rows added from now on are the served model's
        return cls(path, contents)

    def __len__(self) -> int:
        return len(self._contents.paths)

    def search(self, vector: np.ndarray, k: int) -> list[dict]:
        """The `k` rows nearest to the unit `vector` by cosine similarity, best first."""
        contents = self._contents
        if not len(contents.paths):
            return []
        similarity = contents.embeddings @ vector  # (N,)
        k = min(k, len(similarity))
        best = np.argpartition(-similarity, k - 1)[:k]
        best = best[np.argsort(-similarity[best], kind="stable")]
        found = []
        for i in best:
            entry = {"path": str(contents.paths[i]), "similarity": float(similarity[i]),
                     "index": int(i)}
            if contents.labels[i] != NO_LABEL:
                entry["class"] = str(contents.classes[contents.labels[i]])
            found.append(entry)
        return found

    def image_file(self, index: int) -> str | None:
        """The file of row `index`, or None if there is no such row or its file is gone."""
        contents = self._contents
        if not 0 <= index < len(contents.paths):
            return None
        path = str(contents.paths[index])
        return path if os.path.isfile(path) else None

    def add(self, name: str, data: bytes, suffix: str, vector: np.ndarray) -> dict:
        """Writes the image as NAME`suffix` beside the gallery and its row into the gallery
        file; KeyError if the name is taken, ValueError if it is not a plain file name."""
        if not NAME.fullmatch(name) or ".." in name:
            raise ValueError(f"name must be 1-128 letters, digits, '.', '_' or '-', starting "
                             f"with a letter or digit, got {name!r}")
        with self._lock:
            image_path = os.path.join(self.images_dir, name + suffix)
            contents = self._contents
            taken = {os.path.splitext(os.path.basename(str(p)))[0] for p in contents.paths
                     if os.path.dirname(str(p)) == self.images_dir}
            if name in taken:
                raise KeyError(f"the gallery has an image named {name!r} already")
            os.makedirs(self.images_dir, exist_ok=True)
            write_atomically(image_path, data)
            row = Embeddings(np.array([image_path]), vector[None].astype(np.float32),
                             np.array([NO_LABEL], np.int32), np.array([], dtype=str),
                             np.array([], dtype=str), np.zeros(1, np.int64), 1,
                             contents.source)
            grown = contents.extended(row)
            grown.save(self.path)
            self._contents = grown
            return {"name": name, "path": image_path, "index": len(grown.paths) - 1,
                    "gallery": len(grown.paths)}
