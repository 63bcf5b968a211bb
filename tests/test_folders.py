"""Image folders as a dataset: layouts, class names, held-out split, formats, determinism, and
the one-line errors for folders that cannot be used."""

import os

import numpy as np
import pytest
from PIL import Image

from resnet_jax.configs import default
from resnet_jax.data import batching, datasets, folders
from resnet_jax.plan import data_spec


def _image(path, size, mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    pixels = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image.save(path)


def _write(root, layout: dict):
    """layout: {"train/cat": 3, ...} -> that many JPEGs of mixed sizes in each folder."""
    for folder, count in layout.items():
        for i in range(count):
            _image(os.path.join(root, folder, f"{i}.jpg"), (20 + 7 * i, 30 - 3 * i), seed=i)
    return str(root)


def _config(data_dir, **overrides):
    config = default.get_config()
    config.update(dataset="folder", data_dir=str(data_dir), image_size=16, eval_resize=18)
    config.update(overrides)
    return config


def test_classes_are_sorted_folder_names_and_val_is_evaluated(tmp_path):
    root = _write(tmp_path, {"train/zebra": 3, "train/ant": 2, "train/moth": 2,
                             "val/ant": 1, "val/zebra": 2})
    splits = folders.read_splits(root, 0.2)
    assert splits.class_names == ("ant", "moth", "zebra")
    assert splits.eval_from == os.path.join(root, "val")
    assert len(splits.train.paths) == 7 and list(splits.eval.labels) == [0, 2, 2]
    assert all(p.startswith(os.path.join(root, "val", "")) for p in splits.eval.paths)


@pytest.mark.parametrize("name", ["validation", "test"])
def test_other_eval_folder_names_are_accepted(tmp_path, name):
    root = _write(tmp_path, {"train/a": 2, "train/b": 2, f"{name}/b": 1})
    assert folders.read_splits(root, 0.2).eval_from == os.path.join(root, name)


@pytest.mark.parametrize("layout", [{"train/a": 10, "train/b": 5, "train/c": 1},
                                    {"a": 10, "b": 5, "c": 1}])
def test_without_val_a_fixed_stratified_share_is_held_out(tmp_path, layout):
    root = _write(tmp_path, layout)
    first = folders.read_splits(root, 0.2)
    again = folders.read_splits(root, 0.2)
    assert first.eval.paths == again.eval.paths  # fixed: no seed involved
    assert sorted(np.bincount(first.eval.labels, minlength=3)) == [0, 1, 2]  # 20% of 10, of 5
    assert set(first.train.paths).isdisjoint(first.eval.paths)
    assert len(first.train.paths) + len(first.eval.paths) == 16
    assert "held out" in first.eval_from


def test_every_format_and_mode_becomes_rgb_pixels_of_the_crop_size(tmp_path, capsys):
    for i, (ext, mode) in enumerate([("png", "L"), ("png", "RGBA"), ("bmp", "RGB"),
                                     ("gif", "L"), ("jpeg", "RGB"), ("JPG", "RGB"),
                                     ("webp", "RGB"), ("tif", "RGBA"), ("TIFF", "L")]):
        for split in ("train", "val"):
            _image(os.path.join(tmp_path, split, f"c{i % 2}", f"{i}.{ext}"), (13 + i, 25),
                   mode, seed=i)
    (tmp_path / "train" / "c0" / "notes.txt").write_text("not an image: ignored")
    source = datasets.create_source(data_spec(_config(tmp_path)))
    assert (source.info.num_train, source.info.num_eval) == (9, 9)
    assert (f"warning: {tmp_path}/train: ignored 1 file(s) that are not JPG/JPEG/PNG/BMP/GIF/"
            f"WEBP/TIF/TIFF (e.g. {tmp_path}/train/c0/notes.txt)") in capsys.readouterr().err
    batch = next(batching.train_batches(source, 9, 0, 1, seed=0))
    assert batch["image"].shape == (9, 16, 16, 3) and batch["image"].dtype == np.uint8
    evals = list(batching.eval_batches(source, 4))
    assert [int(b["mask"].sum()) for b in evals] == [4, 4, 1]  # every image once, then padding
    gray = np.concatenate([b["image"][b["mask"]] for b in evals])[0]  # 0.png: grayscale
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1],
                                                                         gray[..., 2])


def test_training_order_is_a_function_of_seed_and_step(tmp_path):
    source = datasets.create_source(data_spec(_config(_write(tmp_path, {"train/a": 5, "train/b": 4,
                                                               "val/a": 1}))))
    whole = list(batching.train_batches(source, 4, 0, 5, seed=3))
    resumed = list(batching.train_batches(source, 4, 2, 3, seed=3))
    for a, b in zip(whole[2:], resumed):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])
    other = next(batching.train_batches(source, 4, 0, 1, seed=4))
    assert not np.array_equal(other["image"], whole[0]["image"])


@pytest.mark.parametrize("layout, data_dir, message", [
    ({}, "missing", "data_dir {root}/missing is not a directory"),
    ({"train/a": 0}, "", "has no images"),
    ({"train/a": 2, "val/a": 1, "val/b": 1}, "",
     "{root}/val has class folder(s) 'b' that the training folder does not have"),
    ({"train/a": 1, "train/b": 1}, "", "too few images to hold any out"),
    ({"train/a": 2}, "", "there is no {root}/test folder to evaluate"),
])
def test_unusable_folders_are_one_line_errors(tmp_path, layout, data_dir, message):
    root = _write(tmp_path, layout)
    for folder in layout:
        os.makedirs(os.path.join(root, folder), exist_ok=True)
    overrides = {"eval_split": "test"} if "test folder" in message else {}
    with pytest.raises(folders.FolderError) as error:
        datasets.create_source(data_spec(_config(os.path.join(root, data_dir), **overrides)))
    assert message.format(root=root) in str(error.value)
    assert "\n" not in str(error.value)


def test_a_file_that_is_not_an_image_is_named_before_anything_trains(tmp_path):
    root = _write(tmp_path, {"train/a": 2, "train/b": 2, "val/a": 1})
    impostor = os.path.join(root, "val", "a", "notes.jpg")
    with open(impostor, "w") as f:
        f.write("meeting notes")
    with pytest.raises(folders.FolderError, match=f"^cannot read image {impostor}: "):
        datasets.create_source(data_spec(_config(root)))


def test_an_image_that_cannot_be_decoded_is_named(tmp_path):
    """A truncated JPEG: its header reads, its pixels do not; named when the pipeline meets
    it."""
    root = _write(tmp_path, {"train/a": 3, "train/b": 3, "val/a": 1})
    broken = os.path.join(root, "train", "b", "1.jpg")
    with open(broken, "r+b") as f:
        f.truncate(os.path.getsize(broken) - 40)  # the end of the pixel data
    source = datasets.create_source(data_spec(_config(root)))  # headers are fine
    with pytest.raises(folders.FolderError, match=f"cannot read image {broken}: "):
        list(batching.train_batches(source, 6, 0, 2, seed=0))


def _png_header_only(path, width, height):
    """A PNG whose header declares width x height: what a decompression bomb shows before it is
    decoded (its few kB of data would inflate to gigabytes)."""
    import struct
    import zlib

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    rows = zlib.compress(b"\0" * (width + 1) * 4)  # the first rows; the rest left out
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n"
                + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def test_a_decompression_bomb_is_named_before_anything_decodes(tmp_path):
    root = _write(tmp_path, {"train/a": 2, "train/b": 2, "val/a": 1})
    bomb = os.path.join(root, "train", "b", "bomb.png")
    _png_header_only(bomb, 30000, 30000)
    with pytest.raises(folders.FolderError,
                       match=f"^image {bomb} is 30000x30000, 900,000,000 pixels, more than "
                             f"max_image_pixels=178,956,970 "):
        datasets.create_source(data_spec(_config(root)))
    os.remove(bomb)
    with pytest.raises(folders.FolderError, match=r"/train/a/1\.jpg is 27x27, 729 pixels, "
                                                  r"more than max_image_pixels=700 "):
        datasets.create_source(data_spec(_config(root, max_image_pixels=700)))
    datasets.create_source(data_spec(_config(root, max_image_pixels=729)))  # the limit is inclusive


def test_an_image_removed_while_training_reads_the_folder_is_named(tmp_path):
    root = _write(tmp_path, {"train/a": 3, "train/b": 3, "val/a": 1})
    source = datasets.create_source(data_spec(_config(root)))
    removed = os.path.join(root, "train", "a", "2.jpg")
    os.remove(removed)
    with pytest.raises(folders.FolderError, match=f"^cannot read image {removed}: "):
        list(batching.train_batches(source, 6, 0, 2, seed=0))


def test_hidden_folders_are_counted_and_unrecordable_class_names_refused(tmp_path, capsys):
    root = _write(tmp_path, {"train/a": 2, "train/b": 2, "train/..x": 2, "train/.git": 1})
    source = datasets.create_source(data_spec(_config(root)))
    assert source.info.class_names == ("a", "b")
    assert (f"warning: {root}/train: skipped 2 hidden folder(s) (names starting with '.', "
            f"e.g. '..x')") in capsys.readouterr().err
    _write(tmp_path, {"train/line\nbreak": 2})
    with pytest.raises(folders.FolderError, match="holds a control character"):
        datasets.create_source(data_spec(_config(root)))


@pytest.mark.parametrize("ext, mode", [("webp", "RGB"), ("tiff", "RGBA"), ("tif", "L")])
def test_webp_and_tiff_decode_to_the_pixels_pillow_gives(tmp_path, ext, mode):
    from resnet_jax.data import preprocessing
    from resnet_jax.data.lazy_tf import tf

    path = str(tmp_path / f"photo.{ext}")
    _image(path, (23, 17), mode, seed=3)
    pillow = np.asarray(Image.open(path).convert("RGB"))
    ours = preprocessing.decode_rgb(tf.io.read_file(path)).numpy()
    np.testing.assert_array_equal(ours, pillow)
    # and inside a tf.data pipeline, as training reads it
    ds = tf.data.Dataset.from_tensors(path).map(
        lambda p: preprocessing.decode_rgb(tf.io.read_file(p)))
    np.testing.assert_array_equal(next(iter(ds)).numpy(), pillow)


def _truncated_jpeg(path):
    _image(path, (40, 30), seed=7)
    data = open(path, "rb").read()
    open(path, "wb").write(data[:len(data) // 2])  # the header is intact, the scan is cut


def test_a_truncated_jpeg_stops_the_run_unless_bad_images_are_skipped(tmp_path, capsys):
    root = _write(tmp_path, {"train/a": 3, "train/b": 3, "val/a": 1, "val/b": 1})
    bad = os.path.join(root, "train", "b", "9.jpg")
    _truncated_jpeg(bad)
    source = datasets.create_source(data_spec(_config(root)))  # its header reads fine
    with pytest.raises(folders.FolderError, match=f"cannot read image {bad}: "):
        list(batching.train_batches(source, 7, 0, 1, seed=0))
    skipping = datasets.create_source(data_spec(_config(root, skip_bad_images=True)))
    assert skipping.info.num_train == 6 and len(skipping.info.skipped) == 1
    assert skipping.info.skipped[0].startswith(f"{bad}: ")
    assert "warning: skipped 1 unreadable image(s) (skip_bad_images)" in capsys.readouterr().err
    batches = list(batching.train_batches(skipping, 6, 0, 2, seed=0))
    assert [b["image"].shape for b in batches] == [(6, 16, 16, 3)] * 2
    # a file that is not an image at all (refused at listing otherwise) is skipped too
    (tmp_path / "val" / "a" / "1.jpg").write_text("not a JPEG")
    skipping = datasets.create_source(data_spec(_config(root, skip_bad_images=True)))
    assert skipping.info.num_eval == 2 and len(skipping.info.skipped) == 2


def test_webp_and_tiff_photos_train_and_predict_past_a_truncated_jpeg(tmp_path):
    """As a user runs it: a folder of WebP, TIFF and JPEG photos with one truncated JPEG,
    skip_bad_images=true; then predict.py on a WebP and a TIFF file."""
    import json

    from tests.train_cli import run_cli, run_tool
    from tools.image_folders import write_photo_crops

    root = write_photo_crops(str(tmp_path / "photos"), classes=2, train=6, val=2)
    for i, path in enumerate(sorted(p for p in (tmp_path / "photos").rglob("*.jpg"))):
        ext = ("webp", "tiff", "jpg")[i % 3]
        if ext != "jpg":
            Image.open(path).save(path.with_suffix(f".{ext}"))
            path.unlink()
    bad = str(tmp_path / "photos" / "train" / "class_1" / "zz_truncated.jpg")
    _truncated_jpeg(bad)
    workdir = str(tmp_path / "run")
    proc = run_cli(["--config.dataset=folder", f"--config.data_dir={root}",
                    "--config.model=resnet8", "--config.image_size=16",
                    "--config.eval_resize=18", "--config.batch_size=4",
                    "--config.eval_batch_size=4", "--config.num_train_steps=2",
                    "--config.skip_bad_images=true"], workdir, config="configs/folder.py")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "warning: skipped 1 unreadable image(s) (skip_bad_images)" in proc.stderr
    skipped = open(os.path.join(workdir, "skipped_images.txt")).read().splitlines()
    assert len(skipped) == 1 and skipped[0].startswith(f"{bad}: ")
    queries = [str(next((tmp_path / "photos" / "val").rglob(f"*.{ext}")))
               for ext in ("webp", "tiff")]
    proc = run_tool("predict.py", ["--workdir", workdir, "--json", *queries])
    assert proc.returncode == 0, proc.stderr[-3000:]
    answers = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [a["path"] for a in answers] == queries
    assert all(len(a["top_k"]) == 2 for a in answers)
