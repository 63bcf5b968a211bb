"""A grid of configs, the library: the grid, its runs (each a normal training in its own
workdir), their results and figure. The command, with its usage, is `resnet_jax.cli.sweep`
(`python -m resnet_jax.experiments.sweep`)."""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import os
import shlex

import numpy as np

from resnet_jax.experiments import trials
from resnet_jax.experiments.space import SpaceError, check_key, typed_value

SweepError = SpaceError  # a --set that cannot be swept


@dataclasses.dataclass(frozen=True)
class Run:
    name: str            # the sub-workdir's name: KEY=VALUE,...
    overrides: dict      # config key -> value


def parse_sets(sets: list[str], config) -> dict[str, list]:
    """['lr=0.1,0.2', ...] -> {'lr': [0.1, 0.2], ...}, values typed as the config's."""
    grid = {}
    for item in sets:
        key, separator, values = item.partition("=")
        key = key.strip()
        if not separator or not values:
            raise SweepError(f"--set {item!r}: expected KEY=VALUE1,VALUE2,...")
        check_key("--set", key, config)
        if key in grid:
            raise SweepError(f"--set {key} is given twice")
        grid[key] = [typed_value("--set", key, v.strip(), config[key])
                     for v in values.split(",")]
    if not grid:
        raise SweepError("give at least one --set KEY=VALUE1,VALUE2")
    return grid


def runs(grid: dict[str, list], sample: int = 0, seed: int = 0) -> list[Run]:
    """Every combination of `grid` (or a seeded sample of `sample` of them), in grid order."""
    keys = list(grid)
    combinations = list(itertools.product(*(grid[k] for k in keys)))
    if sample:
        if sample > len(combinations):
            raise SweepError(f"--random {sample}: the grid has only {len(combinations)} "
                             f"combinations")
        chosen = np.random.default_rng(seed).choice(len(combinations), sample, replace=False)
        combinations = [combinations[i] for i in sorted(chosen)]
    return [Run(",".join(f"{k}={v}" for k, v in zip(keys, values)), dict(zip(keys, values)))
            for values in combinations]


def run_workdir(workdir: str, run: Run) -> str:
    return os.path.join(workdir, "runs", run.name.replace("/", "_"))


def config_overrides(argv: list[str]) -> list[str]:
    """The --config.KEY=VALUE (or --config.KEY VALUE) arguments of a command line."""
    found = []
    for i, arg in enumerate(argv):
        if arg.startswith("--config."):
            if "=" in arg or i + 1 == len(argv):
                found.append(arg)
            else:
                found.append(f"{arg}={argv[i + 1]}")
    return found


def train_command(config_path: str, workdir: str, run: Run, base: list[str] = ()) -> str:
    args = ["python", "train.py", "--config", config_path, "--workdir", run_workdir(workdir, run)]
    args += list(base) + [f"--config.{k}={v}" for k, v in run.overrides.items()]
    return " ".join(shlex.quote(a) for a in args)


DIVERGED_FILE = trials.DIVERGED_FILE  # in a run's workdir: why it stopped; not retried


def train_all(config, workdir: str, planned: list[Run], train=None) -> None:
    """Trains every run in turn, as the trials of an Optuna study in W (the runner a search
    uses): each planned run is enqueued once, in order, so running the command again (or in
    another process at once) skips finished runs and resumes an interrupted one. A run that
    diverges (a learning rate too high is a common point of a grid) is recorded as such and the
    sweep goes on; it is not retried. `train`: the training function (the loop's
    `train_and_evaluate`)."""
    import jax

    study = trials.open_study(workdir, "", "sweep", "maximize")
    keys = list(planned[0].overrides) if planned else []
    space = {key: trials.optuna().distributions.CategoricalDistribution(
        list(dict.fromkeys(run.overrides[key] for run in planned))) for key in keys}
    if jax.process_index() == 0:
        with trials.held(os.path.join(workdir, trials.CHOOSE_LOCK)):
            for run in planned:
                study.enqueue_trial(run.overrides, skip_if_exists=True)
    total = len(study.get_trials(deepcopy=False))

    named = {tuple(sorted(run.overrides.items())): run for run in planned}

    def directory(number: int, params: dict) -> str:  # the planned run's, by its values
        run = named.get(tuple(sorted(params.items())))
        return run_workdir(workdir, run or Run(",".join(f"{k}={params[k]}" for k in keys),
                                               params))

    search = trials.Search(study, workdir, total, space, config, trial_workdir=directory,
                           train=train)
    trials.work(search, say=lambda line: print(f"sweep: {line}", flush=True))


def final_values(run_dir: str) -> dict | None:
    """The last eval row and the last train row of a run's metrics, or None if unfinished."""
    from resnet_jax.runs import history, records

    rows = history.read_rows(os.path.join(run_dir, "metrics.jsonl"))
    evals = [r for r in rows if r["split"] == "eval"]
    trains = [r for r in rows if r["split"] == "train"]
    if not evals or not os.path.exists(os.path.join(run_dir, records.CONFIG_FILE)):
        return None
    return {"step": evals[-1]["step"], "eval_top1": evals[-1]["top1"],
            "eval_loss": evals[-1]["loss"],
            "train_top1": trains[-1]["top1"] if trains else float("nan"),
            "train_loss": trains[-1]["loss"] if trains else float("nan")}


def write_results(workdir: str, planned: list[Run]) -> list[dict]:
    """W/results.csv and W/results.md, best eval top-1 first; returns the rows."""
    rows = []
    for run in planned:
        values = final_values(run_workdir(workdir, run))
        if values is not None:
            rows.append({"run": run.name, **run.overrides, "status": "finished", **values})
        elif os.path.exists(os.path.join(run_workdir(workdir, run), DIVERGED_FILE)):
            nan = float("nan")
            rows.append({"run": run.name, **run.overrides, "status": "diverged", "step": "",
                         "eval_top1": nan, "eval_loss": nan, "train_top1": nan,
                         "train_loss": nan})
    rows.sort(key=lambda r: -r["eval_top1"] if r["eval_top1"] == r["eval_top1"] else 1.0)
    if rows:
        shown = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
        columns = list(rows[0])
        write_tables(os.path.join(workdir, "results"), rows, columns,
                     [[shown(r[c]) for c in columns] for r in rows])
    return rows


def write_tables(stem: str, rows: list[dict], header: list[str], cells: list[list[str]]) -> None:
    """STEM.csv (`rows`, every value as it is) and STEM.md (`header` over `cells`, the values
    as a reader wants them), each written whole."""
    from resnet_jax.files import write_atomically

    text = io.StringIO()
    writer = csv.DictWriter(text, list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_atomically(stem + ".csv", text.getvalue())
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    write_atomically(stem + ".md", "\n".join(lines) + "\n")


def plot(workdir: str, planned: list[Run], path: str) -> None:
    """Every run's training loss and eval top-1 against step, overlaid."""
    from resnet_jax.runs import history, plots

    plt = plots.pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(12, 4))
    for run in planned:
        rows = history.read_rows(os.path.join(run_workdir(workdir, run), "metrics.jsonl"))
        train = [r for r in rows if r["split"] == "train"]
        evals = [r for r in rows if r["split"] == "eval"]
        line, = axes[0].plot([r["step"] for r in train], [r["loss"] for r in train],
                             linewidth=1, label=run.name)
        axes[1].plot([r["step"] for r in evals], [r["top1"] for r in evals], marker="o",
                     color=line.get_color(), label=run.name)
    for axis, title in zip(axes, ("training loss", "eval top-1")):
        axis.set_xlabel("step")
        axis.set_title(title)
        axis.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[1].legend(fontsize=8)
    plots.save(figure, path)
    plt.close(figure)


# The form the docs have given; the command itself is resnet_jax.cli.sweep.
if __name__ == "__main__":
    from resnet_jax.cli import sweep as command

    command.run()
