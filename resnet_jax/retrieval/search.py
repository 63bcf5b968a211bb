"""Nearest neighbours by cosine similarity (embeddings are unit vectors: the dot product), and
retrieval quality.

`nearest` is exact and runs on the devices: the gallery goes through in blocks of
`GALLERY_BLOCK` rows and the queries in chunks of `QUERY_CHUNK`, each block's top k merged into
the running top k, so memory stays bounded whatever the gallery's size. `nearest_faiss` builds
a faiss HNSW index (approximate; `pip install faiss-cpu`) for galleries searched many times.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from resnet_jax import extras
from resnet_jax.errors import UserError

GALLERY_BLOCK = 32_768
QUERY_CHUNK = 1_024


def unit_rows(x):
    """Each row of `x` scaled to length 1 (an all-zero row stays zero): what makes the dot
    product the cosine similarity."""
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@functools.partial(jax.jit, static_argnames="k")
def _merge_block(best_similarity, best_index, queries, block, first, valid, *, k):
    """The running top k of `queries` (Q, D) merged with a gallery block (B, D) whose rows
    start at gallery row `first`; rows `valid` and after are padding."""
    similarity = queries @ block.T  # (Q, B)
    rows = jnp.arange(block.shape[0])
    similarity = jnp.where(rows[None, :] < valid, similarity, -jnp.inf)
    similarity = jnp.concatenate([best_similarity, similarity], axis=1)  # (Q, k + B)
    index = jnp.concatenate([best_index, jnp.broadcast_to(first + rows, similarity.shape[:1]
                                                          + rows.shape)], axis=1)
    top, where = jax.lax.top_k(similarity, k)
    return top, jnp.take_along_axis(index, where, axis=1)


def nearest(queries: np.ndarray, gallery: np.ndarray, k: int,
            gallery_block: int = GALLERY_BLOCK, query_chunk: int = QUERY_CHUNK):
    """(similarities (Q, k) float32, best first; indices (Q, k) into `gallery`), exact."""
    k = min(k, len(gallery))
    block = min(gallery_block, len(gallery))
    similarities, indices = [], []
    for q in range(0, len(queries), query_chunk):
        chunk = np.zeros((min(query_chunk, len(queries)), queries.shape[1]), np.float32)
        count = min(query_chunk, len(queries) - q)
        chunk[:count] = queries[q:q + count]
        best = jnp.full((len(chunk), k), -jnp.inf, jnp.float32)
        best_index = jnp.full((len(chunk), k), -1, jnp.int32)
        for first in range(0, len(gallery), block):
            rows = np.zeros((block, gallery.shape[1]), np.float32)
            valid = min(block, len(gallery) - first)
            rows[:valid] = gallery[first:first + valid]
            best, best_index = _merge_block(best, best_index, chunk, rows, first, valid, k=k)
        similarities.append(np.asarray(best)[:count])
        indices.append(np.asarray(best_index)[:count])
    return np.concatenate(similarities), np.concatenate(indices).astype(np.int64)


def require_faiss():
    """The faiss module; UserError naming the install where it is missing."""
    try:
        import faiss
    except ImportError:
        raise UserError(f"--index faiss needs faiss: {extras.install_command('search')} (or "
                        "faiss-cpu; or use the exact search, --index exact)") from None
    return faiss


def nearest_faiss(queries: np.ndarray, gallery: np.ndarray, k: int, neighbors: int = 32):
    """As `nearest`, from a faiss HNSW index (inner product): approximate, fast to query."""
    faiss = require_faiss()
    k = min(k, len(gallery))
    index = faiss.IndexHNSWFlat(gallery.shape[1], neighbors, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 2 * neighbors
    index.add(np.ascontiguousarray(gallery, np.float32))
    index.hnsw.efSearch = max(256, 2 * k)
    similarities, indices = index.search(np.ascontiguousarray(queries, np.float32), k)
    return similarities, indices.astype(np.int64)


def retrieval_quality(queries: np.ndarray, query_labels: np.ndarray, gallery: np.ndarray,
                      gallery_labels: np.ndarray, ks=(1, 5), chunk: int = 256) -> dict:
    """recall@k (the share of queries with an image of their class among their k nearest) and
    mAP (the mean over queries of the average precision of the whole ranked gallery), exact.
    Queries whose class has no image in the gallery are left out (and counted)."""
    relevant_counts = np.array([np.sum(gallery_labels == label) for label in query_labels])
    scored = relevant_counts > 0
    queries, query_labels = queries[scored], query_labels[scored]
    hits = {k: 0 for k in ks}
    precisions = []
    for start in range(0, len(queries), chunk):
        similarity = queries[start:start + chunk] @ gallery.T  # (q, M)
        ranking = np.argsort(-similarity, axis=1, kind="stable")
        relevant = gallery_labels[ranking] == query_labels[start:start + chunk, None]
        for k in ks:
            hits[k] += int(np.sum(relevant[:, :k].any(axis=1)))
        found = np.cumsum(relevant, axis=1)
        ranks = np.arange(1, relevant.shape[1] + 1)
        precisions += list((relevant * found / ranks).sum(axis=1) / relevant.sum(axis=1))
    scored_count = len(queries)
    result = {f"recall@{k}": hits[k] / max(scored_count, 1) for k in ks}
    result["map"] = float(np.mean(precisions)) if precisions else 0.0
    result["queries"] = scored_count
    result["queries_without_gallery_class"] = int(np.sum(~scored))
    result["gallery"] = len(gallery)
    return result
