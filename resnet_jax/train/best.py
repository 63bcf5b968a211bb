"""The best checkpoint and early stopping (Keras' ModelCheckpoint(save_best_only) and
EarlyStopping, timm's model_best): at every evaluation the state is saved to WORKDIR/best if it
scored better than every evaluation before on `best_metric`; after `early_stopping_patience`
evaluations without an improvement the run stops. The best checkpoint has a manager of its own,
so the pruning of the latest checkpoints (`keep_checkpoints`) never removes it, and its record
(step, metric, value) travels in its metadata: a resumed run compares with it, and counts the
evaluations since it from the metrics rows its latest checkpoint carries."""

from __future__ import annotations

import dataclasses
import math
import sys

import orbax.checkpoint as ocp

from resnet_jax.plan import BEST_METRICS, LoopSpec
from resnet_jax.runs import checkpoint, records


@dataclasses.dataclass
class BestKeeper:
    workdir: str
    metric: str  # "eval_top1", "eval_map", "eval_loss"
    patience: int  # 0: no early stopping
    best_step: int | None = None
    best_value: float | None = None
    since_best: int = 0  # evaluations since the best one
    manager: ocp.CheckpointManager | None = None

    @classmethod
    def resume(cls, workdir: str, loop: LoopSpec, rows: list[dict] | None,
               say=lambda line: print(line, file=sys.stderr, flush=True)) -> BestKeeper:
        """The keeper of a run (re)starting with the metrics `rows` its checkpoint carries."""
        keeper = cls(workdir, loop.best_metric, loop.early_stopping_patience)
        record = checkpoint.best_record(workdir)
        if record is None:
            return keeper
        if record.get("metric") != loop.best_metric:
            say(f"warning: the best checkpoint (step {record['step']}) was chosen by "
                f"{record.get('metric')}; best_metric is {loop.best_metric} now: the next "
                f"evaluation replaces it")
            return keeper
        keeper.best_step, keeper.best_value = record["step"], record["value"]
        keeper.since_best = sum(1 for row in rows or () if row.get("split") == "eval"
                                and row["step"] > keeper.best_step)
        return keeper

    def _improves(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.best_value is None:
            return True
        higher = BEST_METRICS[self.metric][1]
        return value > self.best_value if higher else value < self.best_value

    def observe(self, step: int, values: dict, state, description: dict) -> str | None:
        """The evaluation at `step`: saves `state` as the best if it improved; returns why the
        run stops early here, or None. Every process calls it (the save is collective)."""
        value = float(values[BEST_METRICS[self.metric][0]])
        if self._improves(value):
            if self.manager is None:
                self.manager = checkpoint.create_manager(self.workdir, 1, checkpoint.BEST_DIR)
            checkpoint.save(self.manager, step, state, {
                **description, "best": {"metric": self.metric, "value": value}})
            self.best_step, self.best_value, self.since_best = step, value, 0
            return None
        self.since_best += 1
        if self.patience and self.since_best >= self.patience:
            return (f"early stopping: {self.metric} has not improved for {self.since_best} "
                    f"evaluation(s) (best {self.best_value:.4f} at step {self.best_step})")
        return None

    def summary(self) -> str:
        if self.best_step is None:
            return "no best checkpoint"
        return f"best {self.metric} {self.best_value:.4f} at step {self.best_step}"

    def wait(self) -> None:
        if self.manager is not None:
            self.manager.wait_until_finished()


@dataclasses.dataclass(frozen=True)
class Halt:
    """An evaluation that ends the run there, checkpointed: a pruned trial, or early stopping."""

    step: int
    reason: str
    values: dict  # that evaluation's
    pruned: bool = False


def halted(workdir: str, halt: Halt, total_steps: int, is_main: bool) -> dict:
    """The run's last line and result after `halt`; early stopping is recorded in
    WORKDIR/early_stopping.json, so the same command again has nothing to do."""
    if is_main:
        print(f"stopped at step {halt.step} of {total_steps}: {halt.reason} (checkpoint saved)",
              flush=True)
    if halt.pruned:
        return {"step": halt.step, "pruned": True}
    if is_main:
        records.write_record(workdir, records.EARLY_STOPPING_FILE,
                             {"step": halt.step, "reason": halt.reason, "eval": halt.values})
    return {**halt.values, "step": halt.step, "early_stopped": True}


def stopped_early(workdir: str, step: int, is_main: bool) -> dict | None:
    """The result of a run that stopped early at `step` (its latest checkpoint), or None."""
    stopped = records.read_record(workdir, records.EARLY_STOPPING_FILE)
    if stopped is None or stopped["step"] != step:
        return None
    if is_main:
        print(f"{workdir} stopped early at step {step} ({stopped['reason']}): nothing to do "
              f"(remove {records.EARLY_STOPPING_FILE} there to train on)", flush=True)
    return {**stopped["eval"], "step": step, "early_stopped": True}
