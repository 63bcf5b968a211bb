"""Image search at gallery scale: the exact blocked search on the devices against a faiss HNSW
index, on synthetic embeddings (unit vectors around cluster centres, as a trained backbone's
embeddings gather by class): seconds to build, seconds per 1,000 queries, and the faiss
index's recall of the exact top k.

    python -m resnet_jax.bench --search --gallery_size 100000 --dimension 512 --queries 1000
"""

from __future__ import annotations

import time

import numpy as np


def clustered_unit_vectors(count: int, dimension: int, clusters: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dimension), dtype=np.float32)
    x = centres[rng.integers(0, clusters, count)] + 0.5 * rng.standard_normal(
        (count, dimension), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def run(gallery_size: int = 100_000, dimension: int = 512, queries: int = 1_000, k: int = 10,
        clusters: int = 1_000) -> dict:
    from resnet_jax.retrieval import search

    gallery = clustered_unit_vectors(gallery_size, dimension, clusters, 0)
    query = clustered_unit_vectors(queries, dimension, clusters, 1)
    search.nearest(query[:8], gallery[:1000], k)  # compiles the block merge for small shapes
    search.nearest(query, gallery, k)  # and for these
    start = time.perf_counter()
    _, exact = search.nearest(query, gallery, k)
    exact_s = time.perf_counter() - start
    result = {"gallery_size": gallery_size, "dimension": dimension, "queries": queries, "k": k,
              "exact_s_per_1000_queries": exact_s * 1000 / queries,
              "date": time.strftime("%Y-%m-%d")}
    try:
        import faiss  # noqa: F401
    except ImportError:
        result["faiss"] = "not installed (pip install faiss-cpu)"
        return result
    start = time.perf_counter()
    _, approximate = search.nearest_faiss(query, gallery, k)
    total_s = time.perf_counter() - start
    # nearest_faiss builds and searches: time the search alone on the built index too
    import faiss
    index = faiss.IndexHNSWFlat(dimension, 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 64
    start = time.perf_counter()
    index.add(gallery)
    build_s = time.perf_counter() - start
    index.hnsw.efSearch = max(256, 2 * k)
    start = time.perf_counter()
    index.search(query, k)
    search_s = time.perf_counter() - start
    result.update({
        "faiss_build_s": build_s, "faiss_s_per_1000_queries": search_s * 1000 / queries,
        "faiss_build_and_search_s": total_s,
        "faiss_recall_at_k": float(np.mean([len(set(a) & set(e)) / k
                                            for a, e in zip(approximate, exact)]))})
    return result
