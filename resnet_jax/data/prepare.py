"""Prepares a TFDS dataset for training, once, ahead of it:

    python -m resnet_jax.data.prepare NAME [--data_dir DIR]

NAME is cifar10, cifar100, imagenette or imagenet2012 (whose two tar files must be in
DIR/downloads/manual first). Not prepared yet: downloads and builds it, as ArrayRecord (random
access) for imagenet2012 and imagenette, which training reads by index, as TFRecord for the
CIFARs, which training loads into memory. That is what `tfds build` does, without the `tfds`
command-line tool, which needs Apache Beam installed even to build without it. Prepared as
TFRecord only (e.g. by an older `tfds build`): adds ArrayRecord files in place (`convert`).

`convert` does what `tfds convert_format --out_file_format array_record` does for a dataset
version dir: every TFRecord shard is copied record for record into the ArrayRecord shard of
the same name and length. Then `dataset_info.json` names `array_record` as the file format and
`tfrecord` as an alternative: TFDS 4.9's registered builders (`tfds.builder(name)`) ignore
alternative formats, so only this way round does `tfds.data_source` find the new files
(`as_dataset` then refuses: it reads the primary format). The TFRecord files are left as they
are. Each shard is written to a temporary name and renamed when whole; `dataset_info.json` is
rewritten last, so an interrupted conversion is simply run again (finished shards are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from resnet_jax import extras
from resnet_jax.errors import UserError

FORMAT = "array_record"
IMAGENET_TARS = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")


def _shards(version_dir: str, info: dict, split: dict) -> list[tuple[str, str]]:
    """(TFRecord shard, ArrayRecord shard) paths of one split, in shard order."""
    count = len(split["shardLengths"])
    template = split.get("filepathTemplate", "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}")
    paths = []
    for shard in range(count):
        names = [template.replace("{DATASET}", info["name"]).replace("{SPLIT}", split["name"])
                 .replace("{FILEFORMAT}", file_format)
                 .replace("{SHARD_X_OF_Y}", f"{shard:05d}-of-{count:05d}")
                 for file_format in ("tfrecord", FORMAT)]
        paths.append(tuple(os.path.join(version_dir, name) for name in names))
    return paths


def convert(version_dir: str, log=print) -> None:
    from array_record.python import array_record_module

    from resnet_jax.data.lazy_tf import tf

    info_path = os.path.join(version_dir, "dataset_info.json")
    try:
        with open(info_path) as file:
            info = json.load(file)
    except (OSError, ValueError) as error:
        raise UserError(f"{version_dir} is not a prepared TFDS dataset version "
                        f"(reading dataset_info.json: {error})") from None
    formats = [info.get("fileFormat", "tfrecord"), *info.get("alternativeFileFormats", [])]
    if FORMAT in formats:
        log(f"{version_dir} already has {FORMAT} files; nothing to do")
        return
    if "tfrecord" not in formats:
        raise UserError(f"{version_dir} is stored as {formats[0]}, not TFRecord")
    for split in info["splits"]:
        lengths = [int(length) for length in split["shardLengths"]]
        start = time.monotonic()
        for (source, target), length in zip(_shards(version_dir, info, split), lengths):
            if os.path.exists(target):
                continue  # converted by an interrupted earlier run: shards are renamed whole
            if not os.path.exists(source):
                raise UserError(f"{source} is missing: the dataset is incomplete")
            partial = target + ".incomplete"
            writer = array_record_module.ArrayRecordWriter(partial, "group_size:1")
            written = 0
            for record in tf.data.TFRecordDataset(source).as_numpy_iterator():
                writer.write(record)
                written += 1
            writer.close()
            if written != length:
                os.remove(partial)
                raise UserError(f"{source} holds {written} records, dataset_info.json says "
                                f"{length}")
            os.replace(partial, target)
        log(f"{split['name']}: {sum(lengths):,} records in {len(lengths)} shards, "
            f"{time.monotonic() - start:.1f} s")
    info["fileFormat"] = FORMAT
    info["alternativeFileFormats"] = [*info.get("alternativeFileFormats", []), "tfrecord"]
    from resnet_jax.files import write_atomically
    write_atomically(info_path, json.dumps(info, indent=2))
    log(f"{version_dir}: {FORMAT} files added; training reads them by index")


def prepare(name: str, data_dir: str, log=print) -> None:
    from resnet_jax.data.datasets import RANDOM_ACCESS_TFDS
    from resnet_jax.data.lazy_tf import tfds

    builder = tfds.builder(name, data_dir=data_dir or None)
    if builder.is_prepared():
        if name in RANDOM_ACCESS_TFDS:
            convert(builder.data_dir, log)
        else:
            log(f"{name} is prepared in {builder.data_dir}; nothing to do")
        return
    if name == "imagenet2012":  # TFDS cannot download it: check what its manual step needs
        manual = os.path.join(os.path.expanduser(data_dir or tfds.core.constants.DATA_DIR),
                              "downloads", "manual")
        missing = [tar for tar in IMAGENET_TARS if not os.path.exists(os.path.join(manual, tar))]
        if missing:
            raise UserError(f"imagenet2012 needs {' and '.join(missing)} in {manual} (from "
                            f"https://image-net.org/download-images, after registering)")
    file_format = FORMAT if name in RANDOM_ACCESS_TFDS else "tfrecord"
    tfds.builder(name, data_dir=data_dir or None, file_format=file_format) \
        .download_and_prepare()
    log(f"{name} prepared ({file_format}) in {builder.data_dir}")


def main(argv: list[str] | None = None) -> int:
    from resnet_jax.data.datasets import TFDS_DATASETS

    parser = argparse.ArgumentParser(prog="python -m resnet_jax.data.prepare",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=TFDS_DATASETS)
    parser.add_argument("--data_dir", default="", help="TFDS data dir (default: TFDS's, "
                        "~/tensorflow_datasets); pass the same as --config.data_dir")
    args = parser.parse_args(argv)
    try:
        extras.require_extra("train", "preparing a dataset")
        prepare(args.dataset, os.path.expanduser(args.data_dir))
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
