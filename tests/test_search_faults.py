"""The search study under faults: a journal torn by a crash or a full disk, damage that is not
a crash's, a copied workdir, a continued seed, the study's records (stand-in workers: no
model is compiled)."""

import errno
import json
import os
import resource
import signal
import subprocess
import sys

import pytest

from resnet_jax import errors
from resnet_jax.experiments import journal, trials
from tests.test_search import load, stand_in_workers
from tests.train_cli import REPO, cli_env

pytest.importorskip("optuna", reason="the search needs the tune extra's Optuna")


def run_workers(workdir, total, count=1, **kwargs):
    workers = stand_in_workers(workdir, "", total, count, **kwargs)
    outputs = [worker.communicate(timeout=120)[0] for worker in workers]
    return [worker.returncode for worker in workers], "\n".join(outputs)


def finished(workdir):
    study = load(workdir, "")
    return [(t.number, t.state.name, t.params) for t in study.trials]


@pytest.mark.parametrize("cut", ["mid-record", "newline-kept"])
def test_a_torn_last_record_is_set_aside_and_the_study_continues(tmp_path, cut):
    codes, output = run_workers(tmp_path, 2)
    assert codes == [0], output
    before = finished(tmp_path)
    path = tmp_path / trials.JOURNAL_FILE
    data = path.read_bytes()
    last = data.rstrip(b"\n").rfind(b"\n") + 1
    # a crash in the middle of writing the last record (with or without its newline)
    torn = data[:last + (len(data) - last) // 2] + (b"\n" if cut == "newline-kept" else b"")
    path.write_bytes(torn)

    codes, output = run_workers(tmp_path, 4)
    assert codes == [0], output
    assert f"its {len(torn) - last} bytes were moved to {path}.torn" in output
    after = finished(tmp_path)
    assert [n for n, _, _ in after] == [0, 1, 2, 3]
    assert all(state in ("COMPLETE", "PRUNED") for _, state, _ in after), after
    assert after[0][2] == before[0][2]  # the earlier trials kept their values
    assert (path.parent / (path.name + ".torn")).read_bytes().startswith(torn[last:].rstrip())


def test_a_full_disk_during_a_journal_write_leaves_no_torn_record(tmp_path):
    """A file size limit (RLIMIT_FSIZE) makes the journal's write stop part way, as a full disk
    does; the worker fails, the journal is cut back to its last whole record, and the same
    command continues the study once the limit is gone."""
    codes, output = run_workers(tmp_path, 1)
    assert codes == [0], output
    path = tmp_path / trials.JOURNAL_FILE
    limit = path.stat().st_size + 700  # room for a few records, not for a whole trial

    def small_disk():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG from write(), not a signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    command = [sys.executable, "tests/search_worker.py", str(tmp_path), "", "3", "0", "stand-in"]
    failed = subprocess.run(command, cwd=REPO, env=cli_env(1), capture_output=True, text=True,
                            timeout=120, preexec_fn=small_disk)
    assert failed.returncode != 0 and "File too large" in failed.stderr, failed.stderr[-3000:]
    assert path.read_bytes().endswith(b"\n")
    for line in path.read_bytes().splitlines():
        json.loads(line)

    codes, output = run_workers(tmp_path, 3)
    assert codes == [0], output
    assert [n for n, _, _ in finished(tmp_path)] == [0, 1, 2]


@pytest.mark.parametrize("damage, said", [
    (b"\x00\x17garbage\xff\n", "line 2: not a JSON record"),
    (b'{"op_code": 99, "worker_id": "w"}\n', "line 2: an unknown operation (99)"),
    (b'["not", "a", "record"]\n', "line 2: not an Optuna journal record"),
])
def test_damage_that_is_not_a_crash_is_one_line_and_the_file_is_untouched(tmp_path, damage,
                                                                            said):
    codes, output = run_workers(tmp_path, 1)
    assert codes == [0], output
    path = tmp_path / trials.JOURNAL_FILE
    lines = path.read_bytes().splitlines(keepends=True)
    damaged = lines[0] + damage + b"".join(lines[1:])
    path.write_bytes(damaged)
    with pytest.raises(errors.UserError) as raised:
        journal.backend(str(path))
    assert said in str(raised.value) and "\n" not in str(raised.value)
    assert path.read_bytes() == damaged


def test_a_directory_in_the_journals_place_is_one_line(tmp_path):
    (tmp_path / trials.JOURNAL_FILE).mkdir()
    with pytest.raises(errors.UserError, match="is a directory, not a study journal"):
        journal.backend(str(tmp_path / trials.JOURNAL_FILE))


def test_an_append_that_fails_cuts_the_file_back(tmp_path, monkeypatch):
    path = str(tmp_path / trials.JOURNAL_FILE)
    backend = journal.backend(path)
    backend.append_logs([{"op_code": 0, "worker_id": "a", "study_name": "s",
                          "directions": [1]}])
    before = open(path, "rb").read()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(journal.os, "fsync", full)
    with pytest.raises(OSError):
        backend.append_logs([{"op_code": 2, "worker_id": "a", "study_id": 0,
                              "user_attr": {"k": "v"}}])
    monkeypatch.undo()
    assert open(path, "rb").read() == before
    # and an append never extends a torn record another writer left meanwhile
    said = []
    other = journal.backend(path, said.append)
    with open(path, "ab") as f:
        f.write(b'{"op_code": 2, "wor')
    other.append_logs([{"op_code": 2, "worker_id": "a", "study_id": 0,
                        "user_attr": {"k": "v"}}])
    assert len(said) == 1 and "moved to" in said[0]
    assert [json.loads(line)["op_code"] for line in open(path, "rb")] == [0, 2]


def test_a_storage_urls_password_is_never_printed():
    assert trials.without_password(
        "could not connect to postgresql://bob:hunter2@db.example:5432/optuna") == (
        "could not connect to postgresql://bob:***@db.example:5432/optuna")
    assert trials.without_password("sqlite:///tmp/study.db") == "sqlite:///tmp/study.db"


def stand_in_search(workdir, total, seed=0, name="", pruner=("none", 0), **overrides):
    """The search command's own path (study name, checks, results, figures) with the stand-in
    training of tests/search_worker.py."""
    from resnet_jax.configs import digits
    from resnet_jax.experiments import search, space
    from tests.search_worker import EVAL_EVERY, stand_in_train

    config = digits.get_config()
    config.eval_every_steps = EVAL_EVERY
    config.update(overrides)
    specs = ["learning_rate=loguniform:0.01:0.5"]
    searched = space.parse_space(specs, config)
    search.search(config, str(workdir), specs, searched, "eval_top1", total, "random", seed,
                  search.create_pruner(*pruner[:1], config, pruner[1]), "", name,
                  train=stand_in_train(0))
    return trials.open_study(str(workdir), "", search.study_name(str(workdir), "", ""),
                             "maximize")


def test_a_copied_workdir_continues_its_own_study_and_a_seed_draws_new_values(tmp_path):
    import shutil

    first = stand_in_search(tmp_path / "search", 2)
    drawn = [t.params["learning_rate"] for t in first.trials]
    shutil.copytree(tmp_path / "search", tmp_path / "copy")
    shutil.move(tmp_path / "search", tmp_path / "renamed")
    for workdir in ("copy", "renamed"):
        study = stand_in_search(tmp_path / workdir, 4)  # the same --seed again
        rates = [t.params["learning_rate"] for t in study.trials]
        assert [t.number for t in study.trials] == [0, 1, 2, 3], workdir
        assert rates[:2] == drawn and not set(rates[2:]) & set(drawn), (workdir, rates)
        assert all(t.state.name == "COMPLETE" for t in study.trials)
        with open(tmp_path / workdir / trials.JOURNAL_FILE) as f:  # one study, no second
            assert {record["study_name"] for record in map(json.loads, f)
                    if record["op_code"] == 0} == {study.study_name}


def test_the_study_keeps_its_base_config_and_results_come_from_the_study(tmp_path):
    import csv
    import shutil

    workdir = tmp_path / "search"
    stand_in_search(workdir, 2)
    os.remove(workdir / "trials" / "config.json")
    with pytest.raises(errors.UserError, match=r"weight_decay=0.0005 there, 0.01 here"):
        stand_in_search(workdir, 3, weight_decay=0.01)
    with pytest.raises(errors.UserError, match="holds the study .*, not 'other'"):
        stand_in_search(workdir, 3, name="other")
    shutil.rmtree(workdir / "trials" / "0001")
    study = stand_in_search(workdir, 2)
    told = {t.number: t.value for t in study.trials}
    rows = {int(r["trial"]): r for r in csv.DictReader(open(workdir / "results.csv"))}
    assert rows[1]["note"] == "folder missing" and rows[0]["note"] == ""
    assert rows[1]["state"] == "COMPLETE" and float(rows[1]["value"]) == pytest.approx(told[1])
    assert int(rows[1]["steps"]) == 6


def test_no_trial_is_pruned_before_the_minimum_resource(tmp_path):
    """The stand-in evaluates at steps 2, 4 and 6; with a minimum of 4 steps ASHA judges no
    trial at step 2, and still prunes (at 4 or 6)."""
    study = stand_in_search(tmp_path / "search", 12, pruner=("asha", 4))
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    assert pruned, [t.state.name for t in study.trials]
    assert all(max(t.intermediate_values) >= 4 for t in pruned)


def test_the_minimum_resource_is_an_epoch_and_never_less_than_the_warm_up():
    import math

    from resnet_jax.configs import digits
    from resnet_jax.experiments import search, space

    config = digits.get_config()  # 1,437 training images, batch 64: 22.45 steps an epoch
    searched = space.parse_space(["learning_rate=loguniform:0.01:1"], config)
    epoch = math.ceil(1437 / 64)
    assert search.min_resource(config, searched, 0) == epoch
    assert search.min_resource(config, searched, 100) == 100
    config.warmup_epochs = 3.0
    assert search.min_resource(config, searched, 10) == math.ceil(3 * 1437 / 64)
    searched = space.parse_space(["warmup_epochs=uniform:0:5"], config)
    assert search.min_resource(config, searched, 0) == math.ceil(5 * 1437 / 64)
    with pytest.raises(errors.UserError, match="eval_map is the mean average precision"):
        search.check_objective("eval_map", config)


def test_a_workdir_of_an_earlier_version_continues_its_one_study(tmp_path):
    """No W/study.json: the one study of the journal (whatever the folder is called now);
    a journal of two studies asks for --study."""
    from resnet_jax.experiments import search

    study = trials.open_study(str(tmp_path), "", "old-name", "maximize")
    study.ask()
    trials.open_study(str(tmp_path), "", "old-name", "maximize")  # a CREATE_STUDY repeated
    with open(tmp_path / trials.JOURNAL_FILE, "ab") as f:
        f.write(b'{"op_code": 4, "wor')  # and a record being written, or torn
    assert search.study_name(str(tmp_path), "", "") == "old-name"
    assert json.load(open(tmp_path / search.STUDY_FILE))["name"] == "old-name"
    other = tmp_path / "two"
    for name in ("a", "b"):
        trials.open_study(str(other), "", name, "maximize")
    with pytest.raises(errors.UserError, match="holds the studies 'a', 'b': name this "
                                               "workdir's one with --study NAME"):
        search.study_name(str(other), "", "")
