"""A refused start changes nothing, and states a user caused are refused in one line: owned
paths of the wrong kind, an init_from that cannot be used (then the corrected command runs),
a resume whose config drifted after config.json was lost."""

import os
import shutil

import pytest

from resnet_jax.runs import checkpoint, records
from resnet_jax.train import loop
from tests.digits_runs import small_digits_config
from tests.train_cli import reported_lines, run_cli


@pytest.mark.parametrize("name,kind", [("checkpoints", "file"), ("config.json", "directory"),
                                       ("lock", "directory"), ("metrics.jsonl", "directory")])
def test_an_owned_path_of_the_wrong_kind_is_refused_untouched(tmp_path, name, kind):
    workdir = tmp_path / "run"
    workdir.mkdir()
    path = workdir / name
    if kind == "file":
        path.write_text("mine\n")
    else:
        (path / "inside").mkdir(parents=True)
    proc = run_cli(["--config.model=resnet8", "--config.num_train_steps=2"], str(workdir),
                   timeout=60)  # the hang this replaces never exited
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = reported_lines(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"error: {path} is not a directory"
                                                   if kind == "file" else
                                                   f"error: {path} is a directory"), lines
    assert sorted(os.listdir(workdir)) == [name]  # nothing written beside it
    if kind == "file":
        assert path.read_text() == "mine\n"
    else:
        assert os.listdir(path) == ["inside"]


def test_a_refused_init_from_records_nothing_and_the_corrected_command_runs(tmp_path,
                                                                           cache_dir):
    workdir = str(tmp_path / "run")
    config = small_digits_config(cache_dir, num_train_steps=6, eval_every_steps=6,
                                 init_from=str(tmp_path / "missing.pth"))
    with pytest.raises(Exception, match="missing.pth does not exist") as refused:
        loop.train_and_evaluate(config, workdir)
    assert refused.value.exit_status == 2
    assert not os.path.exists(os.path.join(workdir, records.CONFIG_FILE))
    corrected = small_digits_config(cache_dir, num_train_steps=6, eval_every_steps=6)
    result = loop.train_and_evaluate(corrected, workdir)
    assert result["step"] == 6
    assert records.read_config_json(os.path.join(workdir, records.CONFIG_FILE))["init_from"] == ""


def test_a_lost_config_json_cannot_let_a_resume_drift(tmp_path, finished_run, cache_dir):
    """The checkpoints carry the run-defining config: with config.json deleted, a resume with
    another learning rate is refused, naming the key, and nothing is written."""
    workdir = str(tmp_path / "run")
    shutil.copytree(finished_run[0], workdir)
    os.remove(os.path.join(workdir, records.CONFIG_FILE))
    drifted = small_digits_config(cache_dir, learning_rate=0.05)
    with pytest.raises(checkpoint.CheckpointMismatch,
                       match=r"learning_rate: checkpoint 0\.1 vs config 0\.05"):
        loop.train_and_evaluate(drifted, workdir)
    assert not os.path.exists(os.path.join(workdir, records.CONFIG_FILE))


def test_a_checkpoint_left_unfinished_is_removed_at_start(tmp_path, finished_run, cache_dir,
                                                         capfd):
    """What a second Ctrl-C or kill -9 during a save leaves: removed, with a line."""
    workdir = str(tmp_path / "run")
    shutil.copytree(finished_run[0], workdir)
    leftover = os.path.join(workdir, "checkpoints", f"30{checkpoint.UNFINISHED_MARK}-1764")
    os.makedirs(os.path.join(leftover, "state"))
    loop.train_and_evaluate(small_digits_config(cache_dir), workdir)
    assert not os.path.exists(leftover)
    assert f"warning: removed {leftover}: a checkpoint left unfinished" in capfd.readouterr().err
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["12", "24"]


def test_a_failed_atomic_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    from resnet_jax.files import write_atomically

    path = tmp_path / "report.txt"
    path.write_text("the last good report\n")

    def full_disk(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_atomically(str(path), "a new report\n")
    assert os.listdir(tmp_path) == ["report.txt"]
    assert path.read_text() == "the last good report\n"


def test_out_of_memory_is_one_line_and_a_smaller_batch_then_starts(tmp_path, cache_dir,
                                                                  monkeypatch):
    """XLA's out-of-memory error names the batch, the device and what to change; the workdir
    has no checkpoint, so the corrected command starts afresh (its config replaces the one the
    failed start recorded)."""
    import jax

    from resnet_jax import errors
    from resnet_jax.train import steps

    workdir = str(tmp_path / "run")
    compile_train_step = steps.compile_train_step

    def out_of_memory(*args, **kwargs):
        raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to "
                                         "allocate 53687091200 bytes.\nBufferAssignment ...")

    monkeypatch.setattr(steps, "compile_train_step", out_of_memory)
    with pytest.raises(errors.UserError) as refused:
        loop.train_and_evaluate(small_digits_config(cache_dir, batch_size=32), workdir)
    message = str(refused.value)
    assert message.startswith("out of memory on cpu (cpu): resnet8, batch_size=32 (16 per "
                              "device, 1 micro-batch(es)), image_size=8, dtype float32; lower "
                              "batch_size or image_size, or raise grad_accumulation_steps"), \
        message
    assert "53687091200 bytes" in message and "\n" not in message
    monkeypatch.setattr(steps, "compile_train_step", compile_train_step)
    smaller = small_digits_config(cache_dir, batch_size=16, num_train_steps=4,
                                  eval_every_steps=4)
    assert loop.train_and_evaluate(smaller, workdir)["step"] == 4
    recorded = records.read_config_json(os.path.join(workdir, records.CONFIG_FILE))
    assert recorded["batch_size"] == 16


def test_a_signal_while_the_data_is_listed_stops_before_the_workdir_is_touched(
        tmp_path, cache_dir, monkeypatch):
    import signal

    from resnet_jax import errors
    from resnet_jax.data import datasets

    create_source = datasets.create_source

    def listed_then_signalled(config):
        source = create_source(config)
        os.kill(os.getpid(), signal.SIGTERM)  # e.g. a scheduler's preemption during set-up
        return source

    monkeypatch.setattr(datasets, "create_source", listed_then_signalled)
    workdir = tmp_path / "run"
    with pytest.raises(errors.Interrupted, match="^SIGTERM before the run started: nothing "
                                                 "was written"):
        loop.train_and_evaluate(small_digits_config(cache_dir), str(workdir))
    assert not workdir.exists()


@pytest.mark.parametrize("error,status", [("errors.UserError('bad')", 2),
                                          ("OSError(28, 'No space left on device', 'x')", 5),
                                          ("RuntimeError('a bug')", 1)])
def test_a_command_exits_on_an_error_even_if_a_thread_never_ends(error, status):
    """As after a failed Orbax save: a non-daemon thread blocked forever would keep interpreter
    shutdown waiting; the command still exits, with its status, within EXIT_GRACE_S."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import sys, threading
        from resnet_jax import errors
        from resnet_jax.cli import flags as cli
        errors.EXIT_GRACE_S = 2.0

        def main(argv):
            threading.Thread(target=threading.Event().wait, daemon=False).start()  # never ends
            raise {error}

        sys.argv = ["resnet-jax-test"]
        cli.run(main, "testing")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert proc.returncode == status, proc.stderr
    assert "background threads were still running 2 s after the error" in proc.stderr


def test_reported_errors_in_process_arm_nothing():
    """errors.reported inside a process that goes on (a test, a notebook) leaves no timer."""
    import threading

    from resnet_jax import errors

    before = threading.active_count()
    with pytest.raises(SystemExit), errors.reported():
        raise errors.UserError("bad")
    assert threading.active_count() == before


def test_a_deleted_metrics_file_is_rebuilt_from_the_checkpoint(tmp_path, finished_run,
                                                              cache_dir, capfd):
    from tests.train_cli import read_metrics

    workdir = str(tmp_path / "run")
    shutil.copytree(finished_run[0], workdir)
    before = read_metrics(workdir)
    os.remove(os.path.join(workdir, "metrics.jsonl"))
    # finished, but without its final eval row: it evaluates again, after rebuilding the rest
    assert loop.train_and_evaluate(small_digits_config(cache_dir), workdir)["step"] == 24
    assert "rebuilt them from checkpoint 24" in capfd.readouterr().err
    assert read_metrics(workdir) == before


def _tiny_own_data_config(data_dir, dataset, cache_dir):
    from resnet_jax.configs import folder

    config = folder.get_config()
    config.update(dataset=dataset, data_dir=str(data_dir), model="resnet8", image_size=16,
                  eval_resize=18, batch_size=4, eval_batch_size=4, num_train_steps=2,
                  eval_every_steps=0, warmup_epochs=0, progress_bar=False,
                  compilation_cache_dir=cache_dir)
    return config


def _snapshot(workdir):
    return {os.path.join(root, name): os.stat(os.path.join(root, name)).st_mtime_ns
            for root, _, names in os.walk(workdir) for name in names}


@pytest.mark.parametrize("dataset", ["folder", "multilabel"])
def test_a_class_renamed_between_stop_and_resume_is_refused_naming_it(tmp_path, cache_dir,
                                                                      dataset):
    """The checkpoint carries the class names in order: a resume whose data renames a class
    (the count unchanged) would give an output unit another meaning; refused, nothing written."""
    from PIL import Image

    data = tmp_path / "data"
    if dataset == "folder":
        for i, name in enumerate(["ant", "bee", "cat"] * 3):
            os.makedirs(data / "train" / name, exist_ok=True)
            Image.new("RGB", (20, 20), (40 * i, 0, 0)).save(data / "train" / name / f"{i}.png")
        for name in ("ant", "bee", "cat"):
            os.makedirs(data / "val" / name)
            Image.new("RGB", (20, 20)).save(data / "val" / name / "v.png")
    else:
        os.makedirs(data)
        for i in range(6):
            Image.new("RGB", (20, 20), (40 * i, 0, 0)).save(data / f"{i}.png")
        rows = ["0.png,ant", "1.png,bee", "2.png,cat ant", "3.png,bee", "4.png,cat"]
        (data / "train.csv").write_text("path,labels\n" + "\n".join(rows) + "\n")
        (data / "val.csv").write_text("path,labels\n5.png,bee cat\n")
    workdir = str(tmp_path / "run")
    config = _tiny_own_data_config(data, dataset, cache_dir)
    assert loop.train_and_evaluate(config, workdir)["step"] == 2
    if dataset == "folder":
        for split in ("train", "val"):
            os.rename(data / split / "bee", data / split / "bumblebee")  # sorted: still 2nd
    else:
        for name in ("train.csv", "val.csv"):
            (data / name).write_text((data / name).read_text().replace("bee", "bumblebee"))
    before = _snapshot(workdir)
    with pytest.raises(checkpoint.CheckpointMismatch) as refused:
        loop.train_and_evaluate(_tiny_own_data_config(data, dataset, cache_dir), workdir)
    assert refused.value.exit_status == 2
    assert "class 1 = 'bee'; the data now calls it 'bumblebee'" in str(refused.value)
    assert "\n" not in str(refused.value)
    assert _snapshot(workdir) == before
    assert records.read_class_names(workdir) == ("ant", "bee", "cat")
    # evaluate, predict, embed and serve name the outputs as the checkpoint does
    from resnet_jax.runs import inference

    os.remove(os.path.join(workdir, records.CLASSES_FILE))
    assert tuple(inference.from_workdir(workdir).class_names) == ("ant", "bee", "cat")
