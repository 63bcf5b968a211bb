"""A run's history: metrics.jsonl (one JSON object a line, the record) and TensorBoard's event
files rewritten from it, written by process 0; and reading it back."""

from __future__ import annotations

import json
import os
import sys

from resnet_jax.data.lazy_tf import tf
from resnet_jax.errors import StorageError
from resnet_jax.files import write_atomically


def read_rows(path: str) -> list[dict]:
    """metrics.jsonl's rows. A torn last line (a crash while it was written) is dropped with a
    warning; any other unreadable line is a StorageError naming the file and line."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        lines = f.read().split("\n")
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError:
            if any(rest.strip() for rest in lines[number:]):
                raise StorageError(f"{path}, line {number}, is not a JSON object; fix or "
                                   f"remove that line") from None
            print(f"warning: {path}: dropped an incomplete last line (written when a run "
                  f"stopped); its step is written again", file=sys.stderr, flush=True)
    return rows


class MetricWriter:
    """One JSON object per line in WORKDIR/metrics.jsonl, and TensorBoard scalars in WORKDIR.

    metrics.jsonl is the record; TensorBoard's event files are rewritten from it when a run
    resumes, so that both show each step once. Only process 0 writes; other processes get a
    writer that does nothing.
    """

    def __init__(self, workdir: str, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.workdir = workdir
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.rows: list[dict] = []  # what metrics.jsonl holds; each checkpoint saves a copy
        self._tensorboard = tensorboard
        self._summary = None

    def resume_at(self, step: int, saved_rows: list | None = None) -> None:
        """Keeps the rows of steps up to `step` (the checkpoint the run resumes from; they will
        be written again after it) and rewrites TensorBoard's events to match. `saved_rows`: the
        checkpoint's copy, which replaces a metrics.jsonl that lost rows (deleted, cut)."""
        if not self.enabled:
            return
        kept = [row for row in read_rows(self.path) if row["step"] <= step]
        if saved_rows is not None and len(saved_rows) > len(kept):
            print(f"warning: {self.path} lacked {len(saved_rows) - len(kept)} of the "
                  f"{len(saved_rows)} rows up to step {step} (deleted or cut?); rebuilt them "
                  f"from checkpoint {step}", file=sys.stderr, flush=True)
            kept = [dict(row) for row in saved_rows]
        elif saved_rows is None and step and not kept:
            print(f"warning: {self.path} holds no rows up to step {step}, and checkpoint "
                  f"{step} (written by an older version) no copy of them: those rows are "
                  f"lost; training continues from step {step}", file=sys.stderr, flush=True)
        self.rows = kept
        write_atomically(self.path, "".join(json.dumps(row) + "\n" for row in kept))
        if self._tensorboard:
            for name in os.listdir(self.workdir):
                if name.startswith("events.out.tfevents."):
                    os.remove(os.path.join(self.workdir, name))
            self._summary = tf.summary.create_file_writer(self.workdir)
            for row in kept:
                self._scalars(row["step"], row["split"], row)
            self._summary.flush()

    def write(self, step: int, split: str, values: dict) -> None:
        if not self.enabled:
            return
        line = json.dumps({"step": int(step), "split": split, **values})
        with open(self.path, "a") as f:
            f.write(line + "\n")
        self.rows.append(json.loads(line))  # as read back: plain JSON values
        if self._summary is not None:
            self._scalars(step, split, values)
            self._summary.flush()

    def _scalars(self, step: int, split: str, values: dict) -> None:
        with self._summary.as_default():
            for key, value in values.items():
                if key not in ("step", "split"):
                    tf.summary.scalar(f"{split}/{key}", value, step=int(step))


def final_eval(workdir: str, step: int) -> dict | None:
    """The eval row a finished run wrote at its last `step`, if there is one."""
    rows = read_rows(os.path.join(workdir, "metrics.jsonl"))
    finals = [row for row in rows if row["step"] == step and row["split"] == "eval"]
    return finals[-1] if finals else None
