"""Your own images end to end, through the command-line tools as a user runs them: fine-tune
from a torchvision state dict on an image folder, then evaluate, predict and export the run.

One small run serves every test (resnet18 at 32x32 on 3 classes of photo crops). It starts from
a torchvision resnet18's state dict and trains at learning rate 0 with `bn_momentum=0`, so its
checkpoint must hold that state dict's tensors bit for bit.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.train_cli import REPO, read_metrics, reported_lines, run_cli, run_tool
from tools.image_folders import write_photo_crops

torch = pytest.importorskip("torch", reason="the torchvision side of the round trip")
torchvision = pytest.importorskip("torchvision")

CLASSES = 3


def _fresh_tree(path):
    return {os.path.relpath(os.path.join(d, f), path): os.path.getsize(os.path.join(d, f))
            for d, _, files in os.walk(path) for f in files}


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return write_photo_crops(str(tmp_path_factory.mktemp("photos")), classes=CLASSES,
                             train=16, val=6)


@pytest.fixture(scope="module")
def fine_tuned(tmp_path_factory, photos):
    """(workdir, the .pth it started from, the run's stdout and stderr)."""
    root = tmp_path_factory.mktemp("own_images")
    torch.manual_seed(0)
    weights = str(root / "resnet18.pth")
    model = torchvision.models.resnet18(num_classes=CLASSES)
    with torch.no_grad():  # running statistics that are not the defaults 0 and 1
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 2.0)
    torch.save(model.state_dict(), weights)
    workdir = str(root / "run")
    proc = run_cli(["--config.dataset=folder", f"--config.data_dir={photos}",
                    "--config.model=resnet18", "--config.image_size=32",
                    "--config.eval_resize=36", f"--config.init_from={weights}",
                    "--config.learning_rate=0", "--config.bn_momentum=0",
                    "--config.num_train_steps=2", "--config.batch_size=8",
                    "--config.eval_batch_size=8", "--config.log_every_steps=1",
                    "--config.progress_interval_s=0.001"],
                   workdir, config="configs/folder.py")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir, weights, proc.stdout, proc.stderr


def test_the_run_says_what_it_loaded_and_records_itself(fine_tuned):
    workdir, weights, stdout, stderr = fine_tuned
    assert f"init_from {weights}: loaded 102 of 102 tensors" in stdout
    # No terminal (and progress_bar=False): plain progress lines, no carriage returns.
    assert "\r" not in stderr and "train: step 2/2 (100%)" in stderr
    assert "step 2: eval top-1 " in stdout
    config = json.load(open(os.path.join(workdir, "config.json")))
    assert config["init_from"] == weights and config["model"] == "resnet18"
    assert open(os.path.join(workdir, "classes.txt")).read().split() == [
        f"class_{k}" for k in range(CLASSES)]
    report = open(os.path.join(workdir, "report.txt")).read()
    assert "confusion matrix (rows: true class" in report
    assert all(f"{k}: class_{k}" in report for k in range(CLASSES))
    for figure in ("training_curves.png", "confusion_matrix.png"):
        with open(os.path.join(workdir, "plots", figure), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_learning_rate_zero_round_trip_is_bitwise(fine_tuned, tmp_path):
    workdir, weights, *_ = fine_tuned
    output = str(tmp_path / "exported.pth")
    proc = run_tool("export.py", ["--workdir", workdir, "--format", "torchvision",
                                  "--output", output])
    assert proc.returncode == 0, proc.stderr[-3000:]
    original = torch.load(weights, weights_only=True)
    exported = torch.load(output, weights_only=True)
    model = torchvision.models.resnet18(num_classes=CLASSES)
    model.load_state_dict(exported, strict=True)
    compared = [k for k in original if not k.endswith("num_batches_tracked")]
    assert len(compared) == 102
    for key in compared:
        assert torch.equal(original[key], exported[key]), key


def test_evaluate_repeats_the_final_eval_and_leaves_the_metrics(fine_tuned):
    workdir, *_ = fine_tuned
    metrics = os.path.join(workdir, "metrics.jsonl")
    before = open(metrics).read()
    final = [row for row in read_metrics(workdir) if row["split"] == "eval"][-1]
    proc = run_tool("evaluate.py", ["--workdir", workdir])
    assert proc.returncode == 0, proc.stderr[-3000:]
    # 3 classes: top-5 would always be 1, and is not reported
    assert f"top-1 {final['top1']:.4f}, loss " in proc.stdout and "top-5" not in proc.stdout
    assert "top5" not in final
    assert open(metrics).read() == before
    report = open(os.path.join(workdir, "report_val.txt")).read()
    assert f"top-1 accuracy: {final['top1']:.4f}" in report
    assert os.path.exists(os.path.join(workdir, "plots", "confusion_matrix_val.png"))


def test_evaluate_takes_a_weights_file_without_a_workdir(fine_tuned, photos):
    """The run trained at learning rate 0 from these weights: the same numbers."""
    workdir, weights, *_ = fine_tuned
    final = [row for row in read_metrics(workdir) if row["split"] == "eval"][-1]
    proc = run_tool("evaluate.py", [
        "--config", "configs/folder.py", f"--config.data_dir={photos}",
        "--config.model=resnet18", "--config.image_size=32", "--config.eval_resize=36",
        "--config.eval_batch_size=6", f"--config.init_from={weights}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"top-1 {final['top1']:.4f}, loss {final['loss']:.4f}" in proc.stdout


def test_installed_commands_find_the_shipped_configs_by_name(tmp_path):
    """After `pip install`, from any directory: `resnet-jax-train --config digits`."""
    command = os.path.join(os.path.dirname(sys.executable), "resnet-jax-train")
    proc = subprocess.run([command, "--config", "digits", "--workdir", str(tmp_path / "w"),
                           "--config.learning_rate=-1"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert reported_lines(proc.stderr) == [
        "error: learning_rate must be >= 0 (a negative rate climbs the loss), got -1.0"]


def test_predict_json_agrees_with_the_evaluation(fine_tuned, photos):
    workdir, *_ = fine_tuned
    final = [row for row in read_metrics(workdir) if row["split"] == "eval"][-1]
    proc = run_tool("predict.py", ["--workdir", workdir, "--json", "--top_k", "2",
                                   os.path.join(photos, "val")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == CLASSES * 6
    assert all(len(r["top_k"]) == 2 and r["top_k"][0]["probability"] >=
               r["top_k"][1]["probability"] for r in rows)
    right = [r["top_k"][0]["class"] == os.path.basename(os.path.dirname(r["path"]))
             for r in rows]
    assert np.mean(right) == pytest.approx(final["top1"])


def test_weights_without_a_run_predict_and_export_as_the_run(fine_tuned, photos, tmp_path):
    """predict.py and export.py with --config + init_from (no workdir): the run trained at
    learning rate 0 from these weights, so the same probabilities and the same tensors."""
    workdir, weights, *_ = fine_tuned
    image = os.path.join(photos, "val", "class_1", "000.jpg")
    config = ["--config", "configs/folder.py", "--config.model=resnet18",
              "--config.image_size=32", "--config.eval_resize=36",
              f"--config.init_from={weights}"]
    by_run = run_tool("predict.py", ["--workdir", workdir, "--json", "--top_k", "3", image])
    by_weights = run_tool("predict.py", [*config, "--json", "--top_k", "3", image])
    assert by_run.returncode == 0 and by_weights.returncode == 0, by_weights.stderr[-3000:]
    ours, theirs = json.loads(by_run.stdout)["top_k"], json.loads(by_weights.stdout)["top_k"]
    assert [t["class"] for t in theirs] == [t["class"].removeprefix("class_") for t in ours]
    np.testing.assert_allclose([t["probability"] for t in theirs],
                               [t["probability"] for t in ours], rtol=1e-5)
    output = str(tmp_path / "weights.pth")
    proc = run_tool("export.py", [*config, "--format", "torchvision", "--output", output])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.load(open(output + ".json"))["init_from"] == weights
    original, exported = torch.load(weights, weights_only=True), torch.load(output,
                                                                          weights_only=True)
    assert all(torch.equal(original[k], exported[k]) for k in original
               if not k.endswith("num_batches_tracked"))


def test_onnx_export_gives_our_logits_and_the_docs_client_our_answers(fine_tuned, photos,
                                                                     tmp_path):
    """The ONNX model's logits are ours; docs/serving/onnx_classify.py (onnxruntime, Pillow,
    the sidecar, nothing of resnet-jax) answers as predict.py does for the same files."""
    onnxruntime = pytest.importorskip("onnxruntime", reason="the [export] extra")
    from resnet_jax.runs import inference

    workdir, *_ = fine_tuned
    output = str(tmp_path / "model.onnx")
    proc = run_tool("export.py", ["--workdir", workdir, "--format", "onnx", "--output", output])
    assert proc.returncode == 0, proc.stderr[-3000:]
    sidecar = json.load(open(output + ".json"))
    assert sidecar["classes"] == [f"class_{k}" for k in range(CLASSES)]
    assert sidecar["preprocessing"]["center_crop"] == [32, 32]
    assert sidecar["preprocessing"]["resize_shorter_side"] == 36
    images = np.random.default_rng(1).standard_normal((4, 32, 32, 3), dtype=np.float32)
    ours = inference.logits_fn(inference.from_workdir(workdir, kernels="xla"))(images)
    session = onnxruntime.InferenceSession(output, providers=["CPUExecutionProvider"])
    theirs = session.run(None, {"images": images.transpose(0, 3, 1, 2).copy()})[0]
    assert np.max(np.abs(theirs - ours)) <= 1e-4 * np.max(np.abs(ours))

    files = sorted(os.path.join(d, f) for d, _, names in os.walk(os.path.join(photos, "val"))
                   for f in names)
    client = subprocess.run([sys.executable, "docs/serving/onnx_classify.py", output, *files],
                            capture_output=True, text=True, cwd=REPO)
    predicted = run_tool("predict.py", ["--workdir", workdir, "--json", "--top_k", "5", *files])
    assert client.returncode == 0 and predicted.returncode == 0, client.stderr[-3000:]
    by_client = [json.loads(line) for line in client.stdout.splitlines()]
    by_predict = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert len(by_client) == len(files) == len(by_predict)
    for theirs, ours in zip(by_client, by_predict):
        assert [t["class"] for t in theirs["top_k"]] == [t["class"] for t in ours["top_k"]]
        np.testing.assert_allclose([t["probability"] for t in theirs["top_k"]],
                                   [t["probability"] for t in ours["top_k"]], atol=1e-5)


def test_jax_export_deserialises_and_runs(fine_tuned, tmp_path):
    import jax

    from resnet_jax.runs import inference

    workdir, *_ = fine_tuned
    output = str(tmp_path / "model.jax")
    proc = run_tool("export.py", ["--workdir", workdir, "--format", "jax", "--output", output])
    assert proc.returncode == 0, proc.stderr[-3000:]
    exported = jax.export.deserialize(bytearray(open(output, "rb").read()))
    images = np.random.default_rng(2).standard_normal((5, 32, 32, 3), dtype=np.float32)
    ours = inference.logits_fn(inference.from_workdir(workdir, kernels="xla"))(images)
    np.testing.assert_allclose(np.asarray(exported.call(images)), ours, rtol=1e-5, atol=1e-5)
    # made here (a CPU), it is lowered for the accelerators' servers too
    assert {"cpu", "cuda", "tpu"} <= set(exported.platforms)
    with open(output + ".json") as f:
        assert json.load(f)["input"]["jax_version"] == jax.__version__
    proc = run_tool("export.py", ["--check", output])
    assert proc.returncode == 0 and "runs here" in proc.stdout, proc.stderr[-2000:]


def test_a_jax_export_that_cannot_run_here_is_one_line(fine_tuned, tmp_path):
    workdir, *_ = fine_tuned
    tpu_only = str(tmp_path / "tpu.jax")
    proc = run_tool("export.py", ["--workdir", workdir, "--format", "jax", "--output", tpu_only,
                                  "--platforms", "tpu"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_tool("export.py", ["--check", tpu_only])
    assert proc.returncode == 2 and "lowered for tpu, not for this machine's cpu" in proc.stderr
    with open(tpu_only + ".json") as f:  # as if a newer jax had made it
        record = json.load(f)
    record["input"]["jax_version"] = "99.0.0"
    with open(tpu_only + ".json", "w") as f:
        json.dump(record, f)
    proc = run_tool("export.py", ["--check", tpu_only])
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "exported with jax 99.0.0" in proc.stderr and "not newer" in proc.stderr


def test_torchvision_with_the_exported_preprocessing_classifies_alike(fine_tuned, photos,
                                                                       tmp_path):
    from PIL import Image
    from torchvision.transforms import v2

    workdir, *_ = fine_tuned
    output = str(tmp_path / "model.pth")
    proc = run_tool("export.py", ["--workdir", workdir, "--format", "torchvision",
                                  "--output", output])
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.load(open(output + ".json"))
    spec = record["preprocessing"]
    model = torchvision.models.resnet18(num_classes=len(record["classes"]))
    model.load_state_dict(torch.load(output, weights_only=True), strict=True)
    transform = v2.Compose([
        v2.PILToTensor(), v2.Resize(spec["resize_shorter_side"], antialias=True),
        v2.CenterCrop(spec["center_crop"]), v2.ToDtype(torch.float32),
        v2.Normalize(spec["mean"], spec["std"])])
    right = []
    for k, name in enumerate(record["classes"]):
        folder = os.path.join(photos, "val", name)
        for file in sorted(os.listdir(folder)):
            image = transform(Image.open(os.path.join(folder, file)).convert("RGB"))
            with torch.no_grad():
                right.append(int(model.eval()(image[None]).argmax()) == k)
    final = [row for row in read_metrics(workdir) if row["split"] == "eval"][-1]
    assert abs(np.mean(right) - final["top1"]) <= 1 / len(right) + 1e-9


@pytest.fixture(scope="module")
def gallery(fine_tuned, photos, tmp_path_factory):
    """embed.py's embeddings of the training images (class folders), and its stdout."""
    workdir, *_ = fine_tuned
    output = str(tmp_path_factory.mktemp("embeddings") / "gallery.npz")
    proc = run_tool("embed.py", ["--workdir", workdir, "--output", output,
                                 os.path.join(photos, "train")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return output, proc.stdout


def test_embeddings_are_torchvision_pooled_features_of_the_eval_pixels(fine_tuned, photos,
                                                                        gallery):
    """The run trained at learning rate 0 from the .pth: its embeddings are torchvision's
    resnet18 avgpool output for the same evaluation pixels, L2-normalised."""
    from resnet_jax.data import folders, preprocessing

    _, weights, *_ = fine_tuned
    output, stdout = gallery
    with np.load(output, allow_pickle=False) as f:
        paths, vectors, labels, classes = f["paths"], f["embeddings"], f["labels"], f["classes"]
    assert f"wrote {output}: {CLASSES * 16} embeddings of dimension 512, 3 classes" in stdout
    assert vectors.shape == (CLASSES * 16, 512) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, rtol=1e-5)
    assert list(classes) == [f"class_{k}" for k in range(CLASSES)]
    assert [classes[label] for label in labels] == [os.path.basename(os.path.dirname(p))
                                                    for p in paths]
    model = torchvision.models.resnet18(num_classes=CLASSES)
    model.load_state_dict(torch.load(weights, weights_only=True))
    model.fc = torch.nn.Identity()
    chosen = [0, 17, len(paths) - 1]
    pixels = np.stack([folders.read_eval_image(str(paths[i]), 32, 36) for i in chosen])
    x = (pixels / 1.0 - preprocessing.IMAGENET_MEAN) / preprocessing.IMAGENET_STD
    with torch.no_grad():
        pooled = model.eval()(torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32)))
    expected = pooled.numpy() / np.linalg.norm(pooled.numpy(), axis=1, keepdims=True)
    np.testing.assert_allclose(vectors[chosen], expected, atol=1e-5)


def test_search_names_neighbours_and_measures_retrieval(gallery, photos):
    """The gallery remembers its model: the queries need no --workdir."""
    output, _ = gallery
    proc = run_tool("embed.py", ["--gallery", output, "--top_k", "3", "--json",
                                 os.path.join(photos, "val")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == CLASSES * 6
    with np.load(output, allow_pickle=False) as f:
        gallery_paths = set(f["paths"])
    for row in rows:
        similarities = [n["similarity"] for n in row["neighbors"]]
        assert len(similarities) == 3 and similarities == sorted(similarities, reverse=True)
        assert all(n["path"] in gallery_paths and n["class"] == os.path.basename(
            os.path.dirname(n["path"])) for n in row["neighbors"])
    quality = json.load(open(output[:-len(".npz")] + ".retrieval.json"))
    nearest_right = np.mean([r["neighbors"][0]["class"] == os.path.basename(
        os.path.dirname(r["path"])) for r in rows])
    assert quality["recall@1"] == pytest.approx(nearest_right)
    assert quality["queries"] == CLASSES * 6 and 0 < quality["map"] <= 1
    assert f"retrieval: recall@1 {quality['recall@1']:.4f}" in proc.stderr


def test_shards_and_a_weights_file_give_the_same_embeddings(fine_tuned, photos, gallery,
                                                             tmp_path):
    """In-process: two shards merged equal the whole job; `--config` with the .pth (the run's
    starting weights, kept bitwise) embeds alike; an unreadable file is named and skipped."""
    import shutil

    from resnet_jax.configs import folder
    from resnet_jax.retrieval import backbone, embeddings, jobs

    workdir, weights, *_ = fine_tuned
    output, _ = gallery
    whole = embeddings.load(output)
    run_backbone = backbone.from_workdir(workdir)
    train = os.path.join(photos, "train")
    shards = [str(tmp_path / f"{k}.npz") for k in range(2)]
    for k, shard in enumerate(shards):
        jobs.embed_to_file(run_backbone, [train], shard, 8, shard=f"{k}/2")
    merged = jobs.merge_files(shards, str(tmp_path / "merged.npz"))
    np.testing.assert_array_equal(merged.paths, whole.paths)
    np.testing.assert_allclose(merged.embeddings, whole.embeddings, atol=1e-6)

    config = folder.get_config()
    config.model, config.image_size, config.eval_resize = "resnet18", 32, 36
    config.init_from = weights
    damaged = tmp_path / "damaged"
    shutil.copytree(os.path.join(train, "class_1"), damaged / "class_1")
    (damaged / "class_1" / "broken.jpg").write_bytes(b"not a JPEG")
    from_weights = jobs.embed(backbone.from_config(config), [str(damaged)], 4)
    assert [os.path.basename(s.split(": ")[0].split()[-1]) for s in from_weights.skipped] == \
        ["broken.jpg"]
    expected = whole.embeddings[[os.path.basename(os.path.dirname(p)) == "class_1"
                                 for p in whole.paths]]
    np.testing.assert_allclose(from_weights.embeddings, expected, atol=1e-5)


def test_a_resume_with_another_config_is_refused_untouched(fine_tuned, photos):
    workdir, weights, *_ = fine_tuned
    before = _fresh_tree(workdir)
    proc = run_cli(["--config.dataset=folder", f"--config.data_dir={photos}",
                    "--config.model=resnet18", "--config.image_size=32",
                    "--config.eval_resize=36", f"--config.init_from={weights}",
                    "--config.learning_rate=0.5", "--config.bn_momentum=0",
                    "--config.num_train_steps=2", "--config.batch_size=8",
                    "--config.eval_batch_size=8"], workdir, config="configs/folder.py")
    assert proc.returncode == 2
    assert reported_lines(proc.stderr) == [
        f"error: {workdir}/config.json records another config for this run (learning_rate=0.0 "
        f"there, 0.5 here); use another --workdir for a new run (--config.init_from={workdir} "
        f"starts it from this run's weights), or the recorded value(s) to continue it"]
    assert _fresh_tree(workdir) == before


@pytest.mark.parametrize("tool, args, message", [
    ("evaluate.py", ["--workdir", "{missing}"], "error: workdir {missing} does not exist"),
    ("predict.py", ["--workdir", "{workdir}", "{missing}"], "error: {missing} does not exist"),
    ("predict.py", ["--workdir", "{workdir}", "--batch_size=0", "{workdir}"],
     "error: --batch_size must be >= 1, got 0"),
    ("export.py", ["--workdir", "{workdir}", "--format", "jax", "--output",
                   "{workdir}/config.json"],
     "error: {workdir}/config.json exists; choose another --output or pass --overwrite"),
    ("embed.py", ["--workdir", "{workdir}", "{workdir}"],
     "error: --output E.npz is where the embeddings go: set it"),
    ("embed.py", ["--gallery", "{missing}.npz", "{workdir}"],
     "error: {missing}.npz does not exist"),
])
def test_tool_mistakes_are_one_line_and_exit_2(fine_tuned, tmp_path, tool, args, message):
    workdir, *_ = fine_tuned
    before = _fresh_tree(workdir)
    names = {"workdir": workdir, "missing": str(tmp_path / "missing")}
    proc = run_tool(tool, [a.format(**names) for a in args])
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert reported_lines(proc.stderr) == [message.format(**names)]
    assert _fresh_tree(workdir) == before


def test_a_query_set_with_no_readable_image_is_one_line(gallery, tmp_path):
    queries = tmp_path / "queries"
    queries.mkdir()
    (queries / "a.jpg").write_bytes(b"not an image")
    (queries / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    quality = gallery[0][:-len(".npz")] + ".retrieval.json"
    before = os.stat(quality).st_mtime_ns if os.path.exists(quality) else None
    proc = run_tool("embed.py", ["--gallery", gallery[0], str(queries)])
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in reported_lines(proc.stderr) if line.startswith("error:")]
    assert len(lines) == 1 and proc.stderr.strip().splitlines()[-1] == lines[0]
    assert lines[0].startswith(
        f"error: none of the 2 images in {queries} could be read (the first: cannot read "
        f"image {queries}/a.jpg"), lines
    assert (os.stat(quality).st_mtime_ns if os.path.exists(quality) else None) == before


def test_a_newline_in_a_file_name_stays_inside_its_record(fine_tuned, photos, tmp_path):
    """Plain output is one line per image: control characters in a name are escaped (--json
    escapes them as JSON does)."""
    import shutil

    workdir, *_ = fine_tuned
    first = sorted(os.listdir(os.path.join(photos, "val", sorted(os.listdir(
        os.path.join(photos, "val")))[0])))[0]
    source = os.path.join(photos, "val", sorted(os.listdir(os.path.join(photos, "val")))[0],
                          first)
    odd = tmp_path / "two\nlines\x1b[31m.jpg"
    shutil.copy(source, odd)
    plain = run_tool("predict.py", ["--workdir", workdir, str(odd)])
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert plain.stdout.count("\n") == 1
    assert plain.stdout.startswith(f"{tmp_path}/two\\nlines\\x1b[31m.jpg: ")
    as_json = run_tool("predict.py", ["--workdir", workdir, "--json", str(odd)])
    assert json.loads(as_json.stdout)["path"] == str(odd)


def test_plain_names_escape_control_characters_and_line_separators():
    from resnet_jax.files import printable

    assert printable("cat\u00e9/\u732b.jpg") == "cat\u00e9/\u732b.jpg"
    assert printable("a\nb\tc\r\x00\x1b\u2028\x85") == "a\\nb\\tc\\r\\x00\\x1b\\u2028\\x85"


def test_an_int8_onnx_model_is_calibrated_on_the_run_and_checked_on_its_eval_split(
        fine_tuned, photos, tmp_path):
    """onnxruntime's static quantiser: the command prints both models' top-1 on the evaluation
    split; the file is a QDQ model that onnxruntime runs, predicting as the float model does
    for nearly every image; the sidecar records how it was made."""
    onnxruntime = pytest.importorskip("onnxruntime", reason="the [export] extra")
    import onnx

    from resnet_jax.runs import inference

    workdir, *_ = fine_tuned
    output = str(tmp_path / "model.int8.onnx")
    proc = run_tool("export.py", ["--workdir", workdir, "--format", "onnx", "--quantize",
                                  "int8", "--calibration_images", "40", "--output", output])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(os.listdir(tmp_path)) == ["model.int8.onnx", "model.int8.onnx.json"]
    record = json.load(open(output + ".json"))["quantization"]
    assert record["calibration_images"] == 40 and record["eval_images"] == CLASSES * 6
    final = [row for row in read_metrics(workdir) if row["split"] == "eval"][-1]
    assert record["top1_float32"] == pytest.approx(final["top1"])  # the run's own evaluation
    assert (f"int8: top-1 {record['top1_int8']:.4f}, float32 {record['top1_float32']:.4f} on "
            f"the {CLASSES * 6} evaluation images") in proc.stdout
    operators = {node.op_type for node in onnx.load(output).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= operators
    run = inference.from_workdir(workdir, kernels="xla")
    files = sorted(os.path.join(d, f) for d, _, names in os.walk(os.path.join(photos, "val"))
                   for f in names)
    pixels = np.stack([run.contract.read_image(f) for f in files]).astype(np.float32)
    mean, std = run.contract.normalization
    images = ((pixels - np.asarray(mean)) / np.asarray(std)).astype(np.float32)
    ours = np.asarray(inference.logits_fn(run)(images)).argmax(-1)
    session = onnxruntime.InferenceSession(output, providers=["CPUExecutionProvider"])
    theirs = session.run(None, {"images": images.transpose(0, 3, 1, 2).copy()})[0].argmax(-1)
    assert np.mean(theirs == ours) >= 0.9


@pytest.mark.parametrize("args, message", [
    (["--format", "jax", "--quantize", "int8"], "--quantize int8 makes an ONNX model from a "
     "run: give --format onnx and --workdir W (its training images calibrate it)"),
    (["--format", "onnx", "--quantize", "int8", "--calibration_images", "0"],
     "--calibration_images must be >= 1, got 0"),
])
def test_int8_mistakes_are_one_line(fine_tuned, tmp_path, args, message):
    workdir, *_ = fine_tuned
    proc = run_tool("export.py", ["--workdir", workdir, "--output", str(tmp_path / "m"), *args])
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert reported_lines(proc.stderr) == [f"error: {message}"]
    assert os.listdir(tmp_path) == []
