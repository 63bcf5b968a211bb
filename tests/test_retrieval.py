"""Image search pieces without a model: exact top-k in blocks, the faiss index, retrieval
quality, class labels from folders, the embeddings file and the merging of shards."""

import os

import numpy as np
import pytest

from resnet_jax.errors import UserError
from resnet_jax.retrieval import embeddings, search


def unit_vectors(count, dimension, seed):
    x = np.random.RandomState(seed).randn(count, dimension).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_blocked_search_equals_brute_force_across_blocks_and_chunks():
    """Blocks of 7 gallery rows and chunks of 3 queries: padding, merging and the last,
    partial block and chunk are all exercised; the answer is numpy's full sort."""
    gallery, queries = unit_vectors(40, 8, 0), unit_vectors(10, 8, 1)
    similarities, indices = search.nearest(queries, gallery, 5, gallery_block=7, query_chunk=3)
    full = queries @ gallery.T
    expected = np.argsort(-full, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_allclose(similarities, np.take_along_axis(full, expected, 1), rtol=1e-6)


def test_search_asks_for_no_more_neighbours_than_the_gallery_has():
    similarities, indices = search.nearest(unit_vectors(2, 4, 0), unit_vectors(3, 4, 1), 10)
    assert indices.shape == (2, 3) and sorted(indices[0]) == [0, 1, 2]
    assert np.all(np.isfinite(similarities))


def test_faiss_index_finds_what_the_exact_search_finds():
    pytest.importorskip("faiss", reason="faiss-cpu is an optional install (the search extra)")
    gallery, queries = unit_vectors(2000, 32, 0), unit_vectors(50, 32, 1)
    _, exact = search.nearest(queries, gallery, 10)
    _, approximate = search.nearest_faiss(queries, gallery, 10)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approximate, exact)])
    assert recall >= 0.95


def test_retrieval_quality_by_hand():
    """Gallery of 4 on a line; two queries whose rankings are known."""
    gallery = np.array([[1, 0], [0.8, 0.6], [0, 1], [-1, 0]], np.float32)
    gallery_labels = np.array([0, 1, 1, 0])
    queries = np.array([[1, 0], [0, 1], [0.6, 0.8]], np.float32)
    query_labels = np.array([1, 1, 2])  # class 2 is not in the gallery
    quality = search.retrieval_quality(queries, query_labels, gallery, gallery_labels)
    # query 0 ranks 0,1,2,3: relevant at ranks 2, 3 -> AP = (1/2 + 2/3) / 2; recall@1 miss.
    # query 1 ranks 2,1,0,3: relevant at ranks 1, 2 -> AP = 1; recall@1 hit.
    assert quality["recall@1"] == 0.5 and quality["recall@5"] == 1.0
    assert quality["map"] == pytest.approx(((1 / 2 + 2 / 3) / 2 + 1) / 2)
    assert quality["queries"] == 2 and quality["queries_without_gallery_class"] == 1


def test_class_folders_give_labels_and_anything_else_gives_none(tmp_path):
    for name in ("b/cat/1.jpg", "b/cat/2.jpg", "b/dog/3.jpg", "c/dog/4.jpg", "loose/x.jpg"):
        os.makedirs(tmp_path / os.path.dirname(name), exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    root = str(tmp_path)

    def groups(*arguments):
        return [(os.path.join(root, a), sorted(
            os.path.join(d, f) for d, _, files in os.walk(os.path.join(root, a))
            for f in files)) for a in arguments]

    labels, classes = embeddings.class_labels(groups("b", "c"))
    assert classes == ("cat", "dog") and list(labels) == [0, 0, 1, 1]
    labels, classes = embeddings.class_labels(groups("b", "loose"))
    assert classes == () and list(labels) == [embeddings.NO_LABEL] * 4
    labels, classes = embeddings.class_labels(groups("."))  # two levels down: not classes
    assert classes == ()


def _shard(order, total, source=None):
    order = np.array(order, np.int64)
    return embeddings.Embeddings(
        np.array([f"img{i}.jpg" for i in order]), unit_vectors(len(order), 4, int(order[0])),
        np.zeros(len(order), np.int32), np.array(["a"]), np.array([], str), order, total,
        source or {"workdir": "/w", "step": 3})


def test_shards_merge_in_the_images_order_through_files(tmp_path):
    parts = [_shard([0, 2, 4], 5), _shard([1, 3], 5)]
    for i, part in enumerate(parts):
        part.save(str(tmp_path / f"{i}.npz"))
    loaded = [embeddings.load(str(tmp_path / f"{i}.npz")) for i in range(2)]
    merged = embeddings.merge(loaded, ["0.npz", "1.npz"])
    assert list(merged.paths) == [f"img{i}.jpg" for i in range(5)]
    assert merged.paths.dtype.kind == "U"  # strings, not pickled objects
    np.testing.assert_array_equal(merged.embeddings[2], loaded[0].embeddings[1])
    np.testing.assert_array_equal(merged.embeddings[1], loaded[1].embeddings[0])
    assert merged.source == {"workdir": "/w", "step": 3}


@pytest.mark.parametrize("parts,message", [
    ([_shard([0, 2], 5), _shard([1, 3], 5)], "a shard is missing"),
    ([_shard([0, 1], 2), _shard([1], 2)], "overlap"),
    ([_shard([0], 2), _shard([1], 2, {"workdir": "/other", "step": 3})], "not shards of one"),
])
def test_shards_of_another_job_or_an_incomplete_set_are_refused(parts, message):
    with pytest.raises(UserError, match=message):
        embeddings.merge(parts, ["a.npz", "b.npz"])


def test_a_file_that_is_not_ours_is_one_line(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, x=np.zeros(3))
    with pytest.raises(UserError, match="not a whole embeddings file"):
        embeddings.load(str(path))
    with pytest.raises(UserError, match="does not exist"):
        embeddings.load(str(tmp_path / "missing.npz"))


def test_a_gallery_extended_keeps_its_rows_classes_and_no_path_twice(tmp_path):
    source = {"workdir": "/w", "step": 3}
    first = embeddings.Embeddings(
        np.array(["a.jpg", "b.jpg"]), unit_vectors(2, 4, 0), np.array([0, 1], np.int32),
        np.array(["cat", "dog"]), np.array([], str), np.arange(2), 2, source)
    second = embeddings.Embeddings(
        np.array(["b.jpg", "c.jpg", "d.jpg"]), unit_vectors(3, 4, 1),
        np.array([0, 1, 0], np.int32), np.array(["ant", "dog"]), np.array(["x.jpg: bad"]),
        np.arange(3), 4, source)
    grown = first.extended(second)
    grown.save(str(tmp_path / "g.npz"))
    grown = embeddings.load(str(tmp_path / "g.npz"))
    assert list(grown.paths) == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]  # b.jpg once, the first
    np.testing.assert_array_equal(grown.embeddings[:2], first.embeddings)
    np.testing.assert_array_equal(grown.embeddings[2:], second.embeddings[1:])
    assert [str(grown.classes[label]) for label in grown.labels] == ["cat", "dog", "dog", "ant"]
    assert grown.total == len(grown.paths) + len(grown.skipped) == 5
    unlabelled = embeddings.Embeddings(
        np.array(["e.jpg"]), unit_vectors(1, 4, 2), np.array([embeddings.NO_LABEL], np.int32),
        np.array([], str), np.array([], str), np.arange(1), 1, source)
    mixed = grown.extended(unlabelled)
    assert not mixed.labelled and mixed.labels[-1] == embeddings.NO_LABEL
    assert str(mixed.classes[mixed.labels[0]]) == "cat"  # the others keep their class
    unlabelled.source = {"workdir": "/other", "step": 3}
    with pytest.raises(UserError, match="another model"):
        grown.extended(unlabelled)


def _damaged(gallery, how):
    if how == "truncated":
        return None
    fields = dict(gallery.__dict__)
    if how == "nan row":
        fields["embeddings"] = fields["embeddings"].copy()
        fields["embeddings"][0, 1] = np.nan
    elif how == "not unit":
        fields["embeddings"] = fields["embeddings"] * 2
    elif how == "label out of range":
        fields["labels"] = np.array([0, 0, 1, 7, 0], np.int32)
    elif how == "short paths":
        fields["paths"] = fields["paths"][:3]
    return embeddings.Embeddings(**fields)


@pytest.mark.parametrize("how, said", [
    ("truncated", "is not a whole embeddings file of embed.py"),
    ("nan row", "is damaged: row 0 (img0.jpg) is not finite"),
    ("not unit", "is damaged: row 0 (img0.jpg) has length 2, not 1"),
    ("label out of range", "is damaged: labels outside -1..0 (classes: 1)"),
    ("short paths", "is damaged: paths has shape (3,), the embeddings 5 rows"),
])
def test_a_truncated_or_crafted_gallery_is_one_line(tmp_path, how, said):
    path = str(tmp_path / "g.npz")
    gallery = _shard([0, 1, 2, 3, 4], 5)
    damaged = _damaged(gallery, how)
    if damaged is None:
        gallery.save(path)
        data = open(path, "rb").read()
        open(path, "wb").write(data[:len(data) // 2])
    else:
        damaged.save(path)
    with pytest.raises(UserError) as refused:
        embeddings.load(path)
    assert said in str(refused.value) and "\n" not in str(refused.value)


def test_queries_of_other_weights_are_refused_whatever_their_width():
    from resnet_jax.retrieval import backbone, jobs

    ours = {"workdir": "/w", "step": 3, "weights": "aa"}
    jobs.same_model(dict(ours), ours, "the queries", "g.npz")  # the same weights
    # an older file without a digest: by its run and step
    jobs.same_model({"workdir": "/w", "step": 3}, ours, "the queries", "g.npz")
    for other in ({"workdir": "/w", "step": 3, "weights": "bb"},  # retrained in place
                  {"config": {"model": "resnet18"}, "init_from": "/x.pth", "weights": "cc"},
                  {"workdir": "/w", "step": 9}):
        with pytest.raises(UserError, match="come from different weights"):
            jobs.same_model(other, ours, "the queries", "g.npz")
    digest = backbone.weights_digest({"params": {"w": np.ones(3, np.float32)}})
    assert digest == backbone.weights_digest({"params": {"w": np.ones(3, np.float32)}})
    assert digest != backbone.weights_digest({"params": {"w": np.zeros(3, np.float32)}})
