"""A run's record (config.json, classes.txt) and how progress is shown."""

import io
import json
import os

import pytest

from resnet_jax.configs import digits
from resnet_jax.runs import progress, records


def test_config_json_is_written_then_checked_on_resume(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = digits.get_config()
    config.data_dir = "data"  # relative: recorded absolute, for tools run from elsewhere
    records.record_config(str(tmp_path), config)
    recorded = json.load(open(tmp_path / "config.json"))
    assert recorded["model"] == "resnet20" and recorded["data_dir"] == str(tmp_path / "data")
    config.stop_after_steps = 50  # how far this invocation goes: may change
    config.progress_bar = False
    records.record_config(str(tmp_path), config)
    assert json.load(open(tmp_path / "config.json"))["stop_after_steps"] == 50
    before = open(tmp_path / "config.json").read()
    config.weight_decay, config.seed = 0.0, 3  # the run itself: may not
    with pytest.raises(records.ConfigConflict) as error:
        records.record_config(str(tmp_path), config)
    assert "(seed=0 there, 3 here, weight_decay=0.0005 there, 0.0 here)" in str(error.value)
    assert open(tmp_path / "config.json").read() == before


def test_a_recorded_config_loads_over_todays_defaults(tmp_path):
    config = digits.get_config()
    records.record_config(str(tmp_path), config)
    values = json.load(open(tmp_path / "config.json"))
    del values["crop_min_area"]  # as written by an older version
    (tmp_path / "config.json").write_text(json.dumps(values))
    loaded = records.load_config(str(tmp_path))
    assert loaded.model == "resnet20" and loaded.crop_min_area == 0.08
    os.makedirs(tmp_path / "not_a_run")
    with pytest.raises(records.NotARun, match="has no config.json"):
        records.load_config(str(tmp_path / "not_a_run"))


class _Stream(io.StringIO):
    def __init__(self, tty):
        super().__init__()
        self._tty = tty

    def isatty(self):
        return self._tty


@pytest.mark.parametrize("tty, bar", [(False, True), (True, False), (False, False)])
def test_without_a_terminal_or_a_bar_progress_is_plain_lines(tty, bar):
    stream = _Stream(tty)
    shown = progress.Progress(total=10, initial=0, enabled=True, bar=bar, interval_s=0.0,
                              stream=stream)
    for step in range(1, 11):
        shown.note(loss=1.0 / step)
        shown.update(step)
    shown.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and len(lines) == 11
    assert lines[-1].startswith("train: step 10/10 (100%), ") and "loss 0.1" in lines[-1]
    # the estimate, once, after three timed steps past the first
    assert lines[4].startswith("train: about ") and "for the 6 steps left (done around " \
        in lines[4]


def test_the_first_progress_line_comes_after_the_first_step():
    stream = _Stream(False)
    shown = progress.Progress(total=100, initial=0, enabled=True, bar=False, interval_s=3600,
                              stream=stream)
    shown.update(1)
    assert stream.getvalue().startswith("train: step 1/100 (1%), ")
    for step in range(2, 6):
        shown.update(step)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and lines[1].startswith("train: about ")  # then every hour


def test_on_a_terminal_progress_is_a_bar():
    stream = _Stream(True)
    shown = progress.Progress(total=10, initial=0, enabled=True, bar=True, interval_s=0.0,
                              stream=stream)
    for step in range(1, 11):
        shown.update(step)
    shown.close()
    assert "\r" in stream.getvalue() and "train: step" not in stream.getvalue()
