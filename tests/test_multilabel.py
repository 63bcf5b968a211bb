"""Multi-label image sets: the CSVs and their refusals, the loss and metrics against torch and
scikit-learn, and a run end to end (train, report, evaluate, predict with a threshold, export)."""

import json
import os

import numpy as np
import pytest

from resnet_jax.data import multilabel, synthetic
from resnet_jax.data.folders import FolderError
from tests.train_cli import run_cli, run_tool


def _write(root, train_rows, val_rows=("a.jpg,cat",), images=("a.jpg", "b.jpg", "c.jpg")):
    from PIL import Image

    os.makedirs(root, exist_ok=True)
    for name in images:
        Image.new("RGB", (8, 8)).save(os.path.join(root, name))
    for name, rows in (("train.csv", train_rows), ("val.csv", val_rows)):
        with open(os.path.join(root, name), "w") as f:
            f.write("path,labels\n" + "".join(row + "\n" for row in rows))
    return str(root)


def test_the_csvs_become_sorted_classes_and_multi_hot_rows(tmp_path):
    root = _write(tmp_path, ["a.jpg,dog cat", "b.jpg,dog", "", "c.jpg,bird cat cat"],
                  ["a.jpg,cat", "c.jpg,bird dog"])
    splits = multilabel.read_splits(root)
    assert splits.class_names == ("bird", "cat", "dog")
    np.testing.assert_array_equal(splits.targets(splits.train),
                                  [[0, 1, 1], [0, 0, 1], [1, 1, 0]])
    np.testing.assert_array_equal(splits.targets(splits.eval), [[0, 1, 0], [1, 0, 1]])
    assert splits.train.paths[0] == os.path.join(root, "a.jpg")


@pytest.mark.parametrize("train_rows, val_rows, message", [
    (["a.jpg,cat", "b.jpg,dog"], ["a.jpg,cat", "c.jpg,fox"],
     r"val.csv: .*c.jpg has label\(s\) fox that no image of train.csv has"),
    (["a.jpg,cat", "b.jpg,"], ["a.jpg,cat"], r"train.csv, row 3: b.jpg has no labels"),
    (["a.jpg,cat", "b.jpg,dog", "a.jpg,dog"], ["a.jpg,cat"],
     r"train.csv, row 4: a.jpg is listed twice \(first in row 2\)"),
    (["a.jpg,cat", "gone.jpg,dog"], ["a.jpg,cat"], r"train.csv, row 3: .*gone.jpg does not exist"),
    (["a.jpg"], ["a.jpg,cat"], r"train.csv, row 2: expected 'path,labels'"),
    (["a.jpg,cat", 'b.jpg,"dog,cat"'], ["a.jpg,cat"],
     r"train.csv, row 3: the label 'dog,cat' holds a comma: separate an image's labels with "
     r"spaces"),
    (["a.jpg,cat,dog"], ["a.jpg,cat"], r"train.csv, row 2: 3 columns, expected 2"),
    (["a.jpg,cat", "b.jpg,d\x00og"], ["a.jpg,cat"],
     r"train.csv, row 3: the label 'd\\x00og' holds the control character '\\x00'"),
    (["a.jpg,cat", 'b.jpg,"d\x07og"'], ["a.jpg,cat"],
     r"train.csv, row 3: the label 'd\\x07og' holds the control character '\\x07'"),
    (["a.jpg,cat", "b.jpg," + "x" * 200_000], ["a.jpg,cat"],
     r"train.csv, row 3: not a CSV row \(field larger than field limit"),
])
def test_mistakes_in_the_csvs_name_the_file_and_row(tmp_path, train_rows, val_rows, message):
    root = _write(tmp_path, train_rows, val_rows)
    with pytest.raises(FolderError, match=message):
        multilabel.read_splits(root)


def test_excels_csv_utf8_with_a_bom_is_read_and_other_encodings_name_the_row(tmp_path):
    root = _write(tmp_path, ["a.jpg,cat", "b.jpg,dog"])
    train = os.path.join(root, "train.csv")
    with open(train, "rb") as f:
        text = f.read()
    with open(train, "wb") as f:
        f.write(b"\xef\xbb\xbf" + text)  # what Excel's "CSV UTF-8" writes first
    assert multilabel.read_splits(root).class_names == ("cat", "dog")
    with open(train, "wb") as f:
        f.write("path,labels\na.jpg,cat\nb.jpg,caf\u00e9\n".encode("latin-1"))
    with pytest.raises(FolderError, match=r"train.csv, row 3: byte 0xe9 is not UTF-8; save "
                                          r"the file as UTF-8"):
        multilabel.read_splits(root)


def test_a_val_image_that_is_also_a_train_image_is_counted_in_a_warning(tmp_path, capsys):
    root = _write(tmp_path, ["a.jpg,cat", "b.jpg,dog", "c.jpg,dog"], ["a.jpg,cat", "c.jpg,dog"])
    multilabel.read_splits(root)
    assert "warning: 2 of the 2 images of" in capsys.readouterr().err


def test_a_missing_csv_or_header_is_one_line(tmp_path):
    root = _write(tmp_path, ["a.jpg,cat"])
    os.remove(os.path.join(root, "val.csv"))
    with pytest.raises(FolderError, match=r"val.csv is missing: a multi-label data_dir holds"):
        multilabel.read_splits(root)
    with open(os.path.join(root, "val.csv"), "w") as f:
        f.write("file,tags\na.jpg,cat\n")
    with pytest.raises(FolderError, match=r"val.csv, row 1: the header must be 'path,labels'"):
        multilabel.read_splits(root)


def test_the_loss_is_torchs_bce_and_the_hits_count_labels():
    torch = pytest.importorskip("torch")
    import jax.numpy as jnp

    from resnet_jax import tasks

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 5)).astype(np.float32)
    targets = (rng.random((6, 5)) < 0.4).astype(np.float32)
    mask = np.array([1, 1, 1, 1, 1, 0], bool)
    sums = tasks.MultiLabel().sums(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(mask))
    reference = torch.nn.BCEWithLogitsLoss()(torch.tensor(logits[:5]), torch.tensor(targets[:5]))
    np.testing.assert_allclose(float(sums["loss"]) / 5, float(reference), rtol=1e-6)
    best = logits[:5].argmax(-1)
    assert float(sums["top1"]) == sum(targets[i, best[i]] for i in range(5))
    assert float(sums["count"]) == 5


@pytest.mark.slow
def test_a_multilabel_run_reports_map_and_predicts_labels_above_the_threshold(tmp_path):
    data = synthetic.write_multilabel_folder(str(tmp_path / "shapes"), train=48, val=16,
                                             size=40)
    workdir = str(tmp_path / "run")
    proc = run_cli(["--config.dataset=multilabel", f"--config.data_dir={data}",
                    "--config.model=resnet8", "--config.image_size=32",
                    "--config.eval_resize=36", "--config.batch_size=16",
                    "--config.eval_batch_size=16", "--config.num_train_steps=12",
                    "--config.eval_every_steps=6", "--config.learning_rate=0.1"],
                   workdir, config="configs/folder.py")
    assert proc.returncode == 0, proc.stderr[-3000:]
    evals = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    evals = [row for row in evals if row["split"] == "eval"]
    assert [row["step"] for row in evals] == [6, 12]
    assert all(0 < row["map"] <= 1 for row in evals)
    report = open(os.path.join(workdir, "report.txt")).read()
    assert f"mean average precision (mAP, macro): {evals[-1]['map']:.4f}" in report
    for shape in synthetic.MULTILABEL_SHAPES:
        assert f"\n{shape}" in report.split("average precision per class")[1]

    evaluated = run_tool("evaluate.py", ["--workdir", workdir])
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert f"mAP {evals[-1]['map']:.4f}" in evaluated.stdout  # the same weights, the same mAP
    assert f"report: {workdir}/report_val.txt" in evaluated.stdout  # named after val.csv

    def predict(threshold):
        proc = run_tool("predict.py", ["--workdir", workdir, "--json", "--threshold",
                                       str(threshold), os.path.join(data, "images")])
        assert proc.returncode == 0, proc.stderr[-2000:]
        return {row["path"]: row["labels"] for row in map(json.loads, proc.stdout.splitlines())}

    high, low = predict(0.6), predict(0.3)
    assert len(high) == len(low) == 64
    for path, labels in low.items():
        probabilities = [label["probability"] for label in labels]
        assert probabilities == sorted(probabilities, reverse=True)
        assert all(p >= 0.3 for p in probabilities)
        kept = [label for label in labels if label["probability"] >= 0.6]
        assert high[path] == kept, path  # the same probabilities, another threshold

    exported = run_tool("export.py", ["--workdir", workdir, "--format", "jax", "--output",
                                      str(tmp_path / "model.jax")])
    assert exported.returncode == 0, exported.stderr[-2000:]
    sidecar = json.load(open(tmp_path / "model.jax.json"))
    assert (sidecar["task"], sidecar["output"], sidecar["threshold"]) == (
        "multilabel", "sigmoid per class", 0.5)
    assert sidecar["classes"] == sorted(synthetic.MULTILABEL_SHAPES)
