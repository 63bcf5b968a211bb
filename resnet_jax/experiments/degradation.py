"""The paper's degradation experiment (plain vs residual nets of growing depth), the library:
its runs, the final errors, the table and the figure. The command, with its usage, is
`resnet_jax.cli.degradation` (`python -m resnet_jax.experiments.degradation`)."""

from __future__ import annotations

import os

import numpy as np

from resnet_jax.errors import UserError
from resnet_jax.experiments import sweep

FAMILIES = ("plain", "resnet")
FINAL_SHARE = 0.1  # the final training error: the mean over this last share of the steps


def planned_runs(depths: list[int], families=FAMILIES) -> list[sweep.Run]:
    from resnet_jax import models

    planned = []
    for family in families:
        if family not in FAMILIES:
            raise UserError(f"--families: {family!r} is not one of {', '.join(FAMILIES)}")
        for depth in depths:
            name = f"{family}{depth}"
            if name not in models.MODELS or not models.is_cifar(name):
                raise UserError(f"--depths: there is no CIFAR-family {name} (depths 6n+2: "
                                f"20, 32, 44, 56, 110)")
            planned.append(sweep.Run(name, {"model": name}))
    return planned


def final_errors(run_dir: str) -> dict | None:
    from resnet_jax.runs import history

    rows = history.read_rows(os.path.join(run_dir, "metrics.jsonl"))
    train = [r for r in rows if r["split"] == "train"]
    evals = [r for r in rows if r["split"] == "eval"]
    if not train or not evals:
        return None
    last_step = train[-1]["step"]
    tail = [r for r in train if r["step"] > last_step * (1 - FINAL_SHARE)] or train[-1:]
    return {"steps": last_step, "train_error": 1 - float(np.mean([r["top1"] for r in tail])),
            "eval_error": 1 - evals[-1]["top1"]}


def write_table(workdir: str, planned: list[sweep.Run]) -> list[dict]:
    rows = []
    for run in planned:
        errors = final_errors(sweep.run_workdir(workdir, run))
        if errors is not None:
            family = "plain" if run.name.startswith("plain") else "resnet"
            rows.append({"model": run.name, "family": family,
                         "depth": int(run.name.removeprefix(family)), **errors})
    if rows:
        sweep.write_tables(
            os.path.join(workdir, "degradation"), rows,
            ["model", "steps", "final training error (last 10% of steps)", "eval error"],
            [[r["model"], str(r["steps"]), f"{100 * r['train_error']:.2f}%",
              f"{100 * r['eval_error']:.2f}%"] for r in rows])
    return rows


def plot(workdir: str, planned: list[sweep.Run], title: str) -> None:
    """Fig. 6's layout: plain nets left, residual right; thin training error, bold eval error."""
    from resnet_jax.runs import history, plots

    plt = plots.pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    depths = sorted({int(r.name.removeprefix("plain").removeprefix("resnet")) for r in planned})
    colours = dict(zip(depths, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for run in planned:
        family = "plain" if run.name.startswith("plain") else "resnet"
        axis = axes[0 if family == "plain" else 1]
        depth = int(run.name.removeprefix(family))
        rows = history.read_rows(os.path.join(sweep.run_workdir(workdir, run), "metrics.jsonl"))
        train = [r for r in rows if r["split"] == "train"]
        evals = [r for r in rows if r["split"] == "eval"]
        axis.plot([r["step"] for r in train], [100 * (1 - r["top1"]) for r in train],
                  color=colours[depth], linewidth=0.8, alpha=0.8)
        axis.plot([r["step"] for r in evals], [100 * (1 - r["top1"]) for r in evals],
                  color=colours[depth], linewidth=2.2, marker="o" if len(evals) < 3 else None,
                  label=f"{run.name}")
    for axis, name in zip(axes, ("plain", "residual (ResNet)")):
        axis.set_title(f"{name}: training error (thin), eval error (bold)")
        axis.set_xlabel("iterations")
        axis.grid(alpha=0.3)
        axis.legend()
    axes[0].set_ylabel("error (%)")
    figure.suptitle(title, y=1.02)
    for extension in ("png", "svg"):
        plots.save(figure, os.path.join(workdir, f"degradation.{extension}"))
    plt.close(figure)


# The form the docs have given; the command itself is resnet_jax.cli.degradation.
if __name__ == "__main__":
    from resnet_jax.cli import degradation as command

    command.run()
