"""What `embed.py` does: embed image files into a file, merge the shards of a job, and search a
gallery with query images (printing the neighbours, and the retrieval quality where both sides
are labelled by their class folders)."""

from __future__ import annotations

import json
import os
import sys

import numpy as np

from resnet_jax import environment
from resnet_jax.data import folders
from resnet_jax.errors import UserError
from resnet_jax.files import printable, write_atomically
from resnet_jax.retrieval import embeddings as embedding_files
from resnet_jax.retrieval import search
from resnet_jax.retrieval.backbone import Backbone, same_weights
from resnet_jax.retrieval.embeddings import Embeddings

INDEXES = ("exact", "faiss")


def parse_shard(text: str) -> tuple[int, int]:
    """"K/N" -> (K, N): this process embeds images K, K+N, K+2N, ... of the sorted list."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        index = count = -1
    if not 0 <= index < count:
        raise UserError(f"--shard must be K/N with 0 <= K < N (e.g. 0/4), got {text!r}")
    return index, count


def embed(backbone: Backbone, arguments: list[str], batch_size: int,
          shard: tuple[int, int] = (0, 1)) -> Embeddings:
    """The embeddings of the images that `arguments` (files, folders) name, this shard's."""
    groups = [(argument, folders.find_images([argument])) for argument in arguments]
    paths = [path for _, found in groups for path in found]
    labels, classes = embedding_files.class_labels(groups)
    index, count = shard
    mine = np.arange(index, len(paths), count)
    environment.announce(backbone.plan.model.kernels, backbone.plan.model.dtype,
                         file=sys.stderr)
    print(f"embedding {len(mine)} images with {backbone.description}"
          + (f" (shard {index}/{count} of {len(paths)})" if count > 1 else ""),
          file=sys.stderr, flush=True)
    vectors, kept, skipped = embedding_files.embed_files(
        backbone, [paths[i] for i in mine], batch_size)
    if len(mine) and not kept:
        raise UserError(f"none of the {len(mine)} images in {', '.join(arguments)} could be "
                        f"read (the first: {skipped[0]})")
    order = mine[kept]
    return Embeddings(np.array([paths[i] for i in order], dtype=str), vectors,
                      labels[order], np.array(classes, dtype=str),
                      np.array(skipped, dtype=str), order.astype(np.int64), len(paths),
                      backbone.source)


def embed_to_file(backbone: Backbone, arguments: list[str], output: str, batch_size: int,
                  shard: str = "", append: bool = False) -> Embeddings:
    """Embeds the images into `output`; with `append`, adds them to the gallery there (which
    the same model must have embedded; images it holds already are not added twice)."""
    _check_output(output)
    existing = None
    if append and os.path.exists(output):
        if shard:
            raise UserError("--append adds to a whole gallery: embed the shards, --merge "
                            "them, then append")
        existing = embedding_files.load(output)
        if not same_weights(existing.source, backbone.source):
            raise UserError(f"{output} was embedded by another model ({existing.source}); "
                            f"these images would be embedded by {backbone.description}: "
                            f"give the gallery's --workdir (or --config)")
    result = embed(backbone, arguments, batch_size, parse_shard(shard) if shard else (0, 1))
    if existing is not None:
        before = len(existing.paths)
        result = existing.extended(result)
        print(f"adding {len(result.paths) - before} new images to the {before} of {output}",
              file=sys.stderr, flush=True)
    result.save(output)
    skipped = f", {len(result.skipped)} unreadable files skipped" if len(result.skipped) else ""
    print(f"wrote {output}: {len(result.paths)} embeddings of dimension "
          f"{result.embeddings.shape[1]}"
          + (f", {len(result.classes)} classes" if result.labelled else "") + skipped)
    return result


def merge_files(inputs: list[str], output: str) -> Embeddings:
    _check_output(output)
    merged = embedding_files.merge([embedding_files.load(p) for p in inputs], inputs)
    merged.save(output)
    print(f"wrote {output}: {len(merged.paths)} embeddings from {len(inputs)} shards")
    return merged


def _check_output(output: str) -> None:
    if not output.endswith(".npz"):
        raise UserError(f"--output must name an .npz file, got {output!r}")
    folder = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(folder):
        raise UserError(f"the folder of --output {output} does not exist")


def search_gallery(gallery_path: str, arguments: list[str], top_k: int, *,
                   backbone: Backbone | None = None, batch_size: int = 32,
                   index: str = "exact", as_json: bool = False,
                   quality_output: str | None = None) -> dict | None:
    """Prints each query's `top_k` nearest gallery images; returns (and writes beside the
    gallery) the retrieval quality where queries and gallery sit in class folders."""
    if top_k < 1:
        raise UserError(f"--top_k must be >= 1, got {top_k}")
    if index not in INDEXES:
        raise UserError(f"--index must be one of {', '.join(INDEXES)}, got {index!r}")
    if index == "faiss":
        search.require_faiss()  # before any image is embedded
    gallery = embedding_files.load(gallery_path)
    if len(gallery.paths) == 0:
        raise UserError(f"{gallery_path} holds no embeddings")
    if len(arguments) == 1 and arguments[0].endswith(".npz"):
        queries = embedding_files.load(arguments[0])  # embedded before
        same_model(queries.source, gallery.source, f"the queries in {arguments[0]}",
                   gallery_path)
    else:
        if backbone is None:
            from resnet_jax.retrieval import backbone as backbones
            backbone = backbones.from_source(gallery.source)
        else:
            same_model(backbone.source, gallery.source, "the model given", gallery_path)
        queries = embed(backbone, arguments, batch_size)
    if queries.embeddings.shape[1] != gallery.embeddings.shape[1]:
        raise UserError(f"the queries' embeddings have {queries.embeddings.shape[1]} "
                        f"dimensions, the gallery's {gallery.embeddings.shape[1]}: another "
                        f"model embedded them")
    find = search.nearest if index == "exact" else search.nearest_faiss
    similarities, neighbors = find(queries.embeddings, gallery.embeddings, top_k)
    _print_neighbors(queries, gallery, similarities, neighbors, as_json)
    if not (queries.labelled and gallery.labelled):
        return None
    quality = _quality(queries, gallery)
    if quality is not None:
        path = quality_output or gallery_path[:-len(".npz")] + ".retrieval.json"
        write_atomically(path, json.dumps(quality, indent=2) + "\n")
        print(f"retrieval: recall@1 {quality['recall@1']:.4f}, recall@5 "
              f"{quality['recall@5']:.4f}, mAP {quality['map']:.4f} ({quality['queries']} "
              f"queries, {quality['gallery']} gallery images; written to {path})",
              file=sys.stderr, flush=True)
    return quality


def same_model(source: dict, gallery_source: dict, what: str, gallery_path: str) -> None:
    """UserError when `source` names other weights than the gallery's: neighbours found across
    two models are meaningless, however alike their widths. Compared by the weights' digest
    (`Backbone.source["weights"]`); files of versions without one, by the run or weights file."""
    from resnet_jax.retrieval.backbone import describe_source

    if not same_weights(source, gallery_source):
        raise UserError(f"{what} and {gallery_path} come from different weights ({what}: "
                        f"{describe_source(source)}; the gallery: "
                        f"{describe_source(gallery_source)}): embeddings of two models cannot "
                        f"be compared. Leave out --workdir/--config to embed the queries with "
                        f"the gallery's own model")


def _print_neighbors(queries, gallery, similarities, neighbors, as_json: bool) -> None:
    for path, row_similarity, row in zip(queries.paths, similarities, neighbors):
        found = []
        for similarity, i in zip(row_similarity, row):
            entry = {"path": str(gallery.paths[i]), "similarity": float(similarity)}
            if gallery.labelled:
                entry["class"] = str(gallery.classes[gallery.labels[i]])
            found.append(entry)
        if as_json:
            print(json.dumps({"path": str(path), "neighbors": found}), flush=True)
        else:
            shown = ", ".join(f"{printable(n['path'])} {n['similarity']:.4f}" for n in found)
            print(f"{printable(str(path))}: {shown}", flush=True)


def _quality(queries: Embeddings, gallery: Embeddings) -> dict | None:
    """Retrieval quality with the queries' classes mapped to the gallery's by name."""
    gallery_class = {str(name): i for i, name in enumerate(gallery.classes)}
    query_labels = np.array([gallery_class.get(str(queries.classes[label]), -1)
                             for label in queries.labels])
    if not np.any(query_labels >= 0):
        print("warning: no query's class folder is a class of the gallery: no retrieval "
              "quality", file=sys.stderr, flush=True)
        return None
    quality = search.retrieval_quality(queries.embeddings, query_labels, gallery.embeddings,
                                       gallery.labels)
    quality["query_classes_not_in_gallery"] = sorted(
        {str(queries.classes[label]) for label, mapped in zip(queries.labels, query_labels)
         if mapped < 0})
    return quality
