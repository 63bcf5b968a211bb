"""Input pipelines: deterministic order, exact-once evaluation, TFDS sources, augmentations."""

import contextlib
import os
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from resnet_jax.configs import default
from resnet_jax.data import batching, datasets, prepare, preprocessing, synthetic
from resnet_jax.plan import data_spec

N = 10  # examples in the id-carrying source


def id_source(num_train=N, num_eval=N, seed=0):
    """Examples whose image is their own id; no augmentation: positions can be traced."""
    train = (np.arange(num_train, dtype=np.float32).reshape(-1, 1, 1, 1), np.zeros(num_train))
    evaluation = (np.arange(num_eval, dtype=np.float32).reshape(-1, 1, 1, 1),
                  np.zeros(num_eval))
    return datasets._in_memory("ids", train, evaluation, 1, ["0"], (1, 1, 1),
                         lambda ex, rng: ex, lambda ex: ex)


def ids(batch):
    return batch["image"].reshape(-1).astype(int).tolist()


def test_every_example_once_per_epoch_in_a_seeded_order():
    batches = list(batching.train_batches(id_source(), 4, 0, 10, seed=0))  # 40 positions: 4 epochs
    stream = sum((ids(b) for b in batches), [])
    for epoch in range(4):
        window = stream[epoch * N:(epoch + 1) * N]
        assert sorted(window) == list(range(N))
        assert window == batching.epoch_permutation(0, epoch, N).tolist()
    assert stream[:N] != stream[N:2 * N]  # reshuffled each epoch
    other_seed = sum((ids(b) for b in batching.train_batches(id_source(seed=1), 4, 0, 3,
                                                             seed=1)), [])
    assert other_seed[:N] != stream[:N]


def test_resume_and_process_shares_give_the_same_global_batches():
    full = [ids(b) for b in batching.train_batches(id_source(), 4, 0, 10, seed=0)]
    resumed = [ids(b) for b in batching.train_batches(id_source(), 4, 3, 7, seed=0)]
    assert resumed == full[3:]
    shares = [[ids(b) for b in batching.train_batches(id_source(), 4, 0, 10, 0, p, 2)]
              for p in (0, 1)]
    assert [a + b for a, b in zip(*shares)] == full


@pytest.mark.parametrize("num_eval,global_batch,processes", [(10, 4, 1), (10, 4, 2), (7, 6, 3),
                                                             (3, 8, 2), (12, 4, 1)])
def test_eval_visits_every_example_exactly_once(num_eval, global_batch, processes):
    source = id_source(num_eval=num_eval)
    seen, masked = [], 0
    for p in range(processes):
        batches = list(batching.eval_batches(source, global_batch, p, processes))
        assert len(batches) == batching.num_eval_batches(source, global_batch)
        for batch in batches:
            assert batch["image"].shape[0] == global_batch // processes  # static shapes
            seen += [i for i, m in zip(ids(batch), batch["mask"]) if m]
            masked += int((~batch["mask"]).sum())
    assert sorted(seen) == list(range(num_eval))
    assert masked == batching.num_eval_batches(source, global_batch) * global_batch - num_eval


def test_pad_crop_flip_takes_a_window_of_the_padded_image():
    image = tf.reshape(tf.range(4 * 4 * 1, dtype=tf.float32) + 1, (4, 4, 1))
    padded = np.pad(image.numpy(), ((2, 2), (2, 2), (0, 0)))
    windows = {(i, j, flip): padded[i:i + 4, j:j + 4][:, ::-1 if flip else 1]
               for i in range(5) for j in range(5) for flip in (False, True)}
    found = set()
    for seed in range(40):
        key = tf.constant([0, seed], tf.int64)
        out = preprocessing.pad_crop_flip(image, key, pad=2, flip=True).numpy()
        again = preprocessing.pad_crop_flip(image, key, pad=2, flip=True)
        np.testing.assert_array_equal(out, again)  # stateless: same seed, same crop
        match = [k for k, w in windows.items() if np.array_equal(w, out)]
        assert match, f"seed {seed}: not a window of the padded image"
        found.add(match[0])
    assert {flip for _, _, flip in found} == {False, True}
    assert len({(i, j) for i, j, _ in found}) > 5


def test_digits_split_is_fixed_and_stratified():
    (train_x, train_y), (eval_x, eval_y) = datasets.digits_arrays()
    assert len(train_y) + len(eval_y) == 1797 and len(eval_y) == datasets.DIGITS_EVAL_EXAMPLES
    assert np.bincount(eval_y).min() >= 35  # ~36 per class
    (_, again_y), _ = datasets.digits_arrays()
    np.testing.assert_array_equal(train_y, again_y)


def test_digits_augmented_batches_are_a_function_of_seed_and_step():
    config = default.get_config()
    config.dataset, config.seed = "digits", 0
    source = datasets.create_source(data_spec(config))
    first = list(batching.train_batches(source, 32, 5, 2, seed=0))
    again = list(batching.train_batches(source, 32, 5, 2, seed=0))
    other = list(batching.train_batches(source, 32, 5, 2, seed=1))
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a["image"], b["image"])
    assert not np.array_equal(first[0]["image"], other[0]["image"])
    assert first[0]["image"].shape == (32, 8, 8, 1)


def _config(dataset, **overrides):
    config = default.get_config()
    config.dataset = dataset
    for key, value in overrides.items():
        config[key] = value
    return config


@contextlib.contextmanager
def _mock_tfds(num_examples):
    """TFDS's mock data; its builders are not `is_prepared()` (no files), which
    `prepared_builder` checks before anything else: that check is told yes."""
    with tfds.testing.mock_data(num_examples=num_examples), mock.patch.object(
            tfds.core.DatasetBuilder, "is_prepared", return_value=True):
        yield


def test_cifar10_on_tfds_mock_data():
    with _mock_tfds(20):
        source = datasets.create_source(data_spec(_config("cifar10", image_size=32)))
        assert source.info.num_classes == 10 and source.info.class_names[0] == "airplane"
        batch = next(batching.train_batches(source, 8, 0, 1, seed=0))
        assert batch["image"].shape == (8, 32, 32, 3) and batch["image"].dtype == np.float32
        assert abs(batch["image"].mean()) < 1.0 and 0.3 < batch["image"].std() < 3.0
        assert set(batch["label"]) <= set(range(10))
        counted = sum(int(b["mask"].sum()) for b in batching.eval_batches(source, 6))
        assert counted == source.info.num_eval == 20


def test_imagenet2012_on_a_written_array_record_dataset(tmp_path):
    images = [np.full((20 + i, 30, 3), 10 * i, np.uint8) for i in range(6)]
    synthetic.write_jpeg_dataset(str(tmp_path), {"train": images, "validation": images},
                                          name="imagenet2012")
    source = datasets.create_source(data_spec(_config("imagenet2012", data_dir=str(tmp_path),
                                            image_size=32, eval_resize=36)))
    assert source.info.num_classes == 1000 and source.info.num_train == 6
    batch = next(batching.train_batches(source, 3, 0, 1, seed=0))
    assert batch["image"].shape == (3, 32, 32, 3)
    batches = list(batching.eval_batches(source, 4))
    assert sum(int(b["mask"].sum()) for b in batches) == 6
    assert batches[0]["image"].shape == (4, 32, 32, 3)


def test_a_tfrecord_dataset_is_refused_with_the_conversion_command(tmp_path):
    images = [np.zeros((8, 8, 3), np.uint8)] * 2
    synthetic.write_jpeg_dataset(str(tmp_path), {"train": images, "validation": images},
                                          file_format="tfrecord")
    with pytest.raises(datasets.DataError) as error:
        datasets.create_source(data_spec(_config("imagenette", data_dir=str(tmp_path))))
    version_dir = tmp_path / "imagenette" / "full-size-v2" / "1.0.0"
    assert str(error.value) == (
        f"dataset imagenette in {version_dir} is stored as TFRecord, which has no random access; "
        f"convert it once with `python -m resnet_jax.data.prepare imagenette --data_dir "
        f"{tmp_path}` (adds ArrayRecord files beside the TFRecord ones)")
    # ... which then trains: every record once, read by index.
    assert prepare.main(["imagenette", "--data_dir", str(tmp_path)]) == 0
    source = datasets.create_source(data_spec(_config("imagenette", data_dir=str(tmp_path),
                                            image_size=8)))
    assert (source.info.num_train, source.info.num_eval) == (2, 2)
    assert next(batching.train_batches(source, 2, 0, 1, seed=0))["image"].shape == (2, 8, 8, 3)
    assert prepare.main(["imagenette", "--data_dir", str(tmp_path)]) == 0  # nothing to do


def test_an_unprepared_tfds_dataset_fails_at_once_with_the_command(tmp_path):
    # TFDS's own download_and_prepare retries the network for minutes where there is none:
    # it must not be reached.
    with pytest.raises(datasets.DataError) as error, mock.patch.object(
            tfds.core.DatasetBuilder, "download_and_prepare",
            side_effect=AssertionError("tried to download")):
        datasets.create_source(data_spec(_config("cifar10", data_dir=str(tmp_path))))
    assert str(error.value) == (
        f"dataset cifar10 is not prepared in {tmp_path}: run `python -m "
        f"resnet_jax.data.prepare cifar10 --data_dir {tmp_path}` (on a machine with network "
        f"access, then copy {tmp_path}/cifar10 here), or pass --config.data_dir")


def test_jpeg_decoding_crops_and_flips_to_uint8_pixels_on_a_written_tfds_dataset(tmp_path):
    colour = np.array([200, 100, 50], np.uint8)
    half = np.zeros((48, 64, 3), np.uint8)
    half[:, 32:] = 255  # dark left half, bright right half
    train = [np.broadcast_to(colour, (40 + 7 * i, 70 - 5 * i, 3)).copy() for i in range(6)]
    train += [half] * 10
    evaluation = [np.broadcast_to(colour, (50, 90, 3)).copy(), half]
    synthetic.write_jpeg_dataset(str(tmp_path), {"train": train,
                                                          "validation": evaluation})

    source = datasets.create_source(data_spec(_config("imagenette", data_dir=str(tmp_path),
                                                      image_size=24, eval_resize=28)))
    assert (source.info.num_train, source.info.num_eval) == (16, 2)
    # JPEG datasets hand over uint8 pixels; the steps normalise them with these constants.
    assert source.info.pixel_normalization == (preprocessing.IMAGENET_MEAN,
                                               preprocessing.IMAGENET_STD)
    expected = colour.astype(np.float64)
    # Ids are not needed: constant images decode to constant crops at any scale.
    eval_batch = next(batching.eval_batches(source, 2))
    assert eval_batch["image"].shape == (2, 24, 24, 3) and eval_batch["image"].dtype == np.uint8
    np.testing.assert_allclose(eval_batch["image"][0], np.broadcast_to(expected, (24, 24, 3)),
                               atol=3)  # JPEG's chroma rounding
    # Center crop of the half-dark image keeps the dark half on the left.
    assert eval_batch["image"][1][:, :8].mean() < eval_batch["image"][1][:, -8:].mean()

    first = list(batching.train_batches(source, 16, 0, 2, seed=0))
    again = list(batching.train_batches(source, 16, 0, 2, seed=0))
    np.testing.assert_array_equal(first[1]["image"], again[1]["image"])
    assert first[0]["image"].dtype == np.uint8
    images = np.concatenate([b["image"] for b in first]).astype(np.float64)
    coloured = [im for im in images if np.allclose(im.mean((0, 1)), expected, atol=3)]
    assert len(coloured) == 12  # 6 coloured images, 2 epochs
    assert all(im.std(axis=(0, 1)).max() < 3 for im in coloured)
    # Random-resized crops of the half image, some flipped: dark on the left for some, on the
    # right for others (crops entirely inside one half are neither).
    split_images = [im for im in images if im.std(axis=(0, 1)).max() > 30]
    left_dark = [im[:, :4].mean() < im[:, -4:].mean() for im in split_images]
    assert any(left_dark) and not all(left_dark)


def test_unknown_and_unprepared_datasets_are_one_line_errors(tmp_path):
    with pytest.raises(datasets.DataError, match="unknown dataset 'mnist'.*digits, cifar10"):
        datasets.create_source(data_spec(_config("mnist")))
    with pytest.raises(datasets.DataError) as error:
        datasets.create_source(data_spec(_config("imagenet2012", data_dir=str(tmp_path))))
    message = str(error.value)
    assert "\n" not in message
    assert os.path.join(str(tmp_path), "downloads/manual") in message
    assert "ILSVRC2012_img_train.tar" in message


def test_repeated_augmentation_epochs_hold_each_image_ra_reps_times_apart():
    """torchvision's RASampler: an epoch is the first floor(N/256)*256 entries of the
    permutation with each index repeated R times; here the copies sit 256/R apart in each block
    of 256 positions. The order stays a function of (seed, global batch): any process count,
    any resume step."""
    n, reps = 1100, 4  # epoch length 1024 = 4 blocks: 256 distinct images, 4 copies each
    source = id_source(num_train=n)
    assert batching.epoch_length(n, reps) == 1024
    batches = list(batching.train_batches(source, 64, 0, 32, 0, repetitions=reps))  # 2 epochs
    stream = sum((ids(b) for b in batches), [])
    for epoch in range(2):
        window = stream[epoch * 1024:(epoch + 1) * 1024]
        counts = np.bincount(window, minlength=n)
        assert sorted(set(window)) == sorted(batching.epoch_permutation(0, epoch, n)[:256])
        assert set(counts[counts > 0]) == {4}
        for block in range(4):
            part = window[block * 256:(block + 1) * 256]
            assert part[:64] == part[64:128] == part[128:192] == part[192:]
            assert len(set(part[:64])) == 64  # mixup's neighbour is another image
    shares = [[ids(b) for b in batching.train_batches(source, 64, 5, 20, 0, p, 2,
                                                      repetitions=reps)] for p in (0, 1)]
    assert [a + b for a, b in zip(*shares)] == [ids(b) for b in batches[5:25]]


def test_the_eval_crop_can_differ_from_the_train_crop(tmp_path):
    """torchvision's --train-crop-size 176 --val-crop-size 224: eval batches at their own size."""
    images = [np.full((40 + i, 50, 3), 20 * i, np.uint8) for i in range(6)]
    synthetic.write_jpeg_dataset(str(tmp_path), {"train": images, "validation": images})
    source = datasets.create_source(data_spec(_config("imagenette", data_dir=str(tmp_path),
                                                      image_size=16, eval_crop_size=24,
                                                      eval_resize=28)))
    assert source.info.image_shape == (16, 16, 3) and source.info.eval_shape == (24, 24, 3)
    assert next(batching.train_batches(source, 2, 0, 1, 0))["image"].shape == (2, 16, 16, 3)
    batches = list(batching.eval_batches(source, 4))
    assert all(b["image"].shape == (4, 24, 24, 3) for b in batches)
    assert sum(int(b["mask"].sum()) for b in batches) == 6
