"""The paper's central experiment (Fig. 1 / Fig. 6): plain and residual nets at growing depth,
trained with one recipe; a deeper *plain* net ends with a higher training error (degradation),
a deeper residual net does not.

    python -m resnet_jax.experiments.degradation --config configs/digits.py --depths 20,56 \\
        --workdir W [--config.KEY=VALUE ...] [--families plain,resnet]

Trains plainD and resnetD for each depth D (CIFAR-family models) through the normal training
path, one sub-workdir each (W/runs/MODEL; re-running finishes only what is missing), then draws
W/degradation.png and .svg as the paper does: training error (thin) and eval error (bold)
against iterations, plain nets left, residual nets right, one colour per depth; and writes
W/degradation.csv / .md with each run's final errors. The training error is the mean over the
last 10% of the steps (on the augmented training batches, as the paper's curves are).
"""

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
    from resnet_jax.train import metrics

    rows = metrics.read_rows(os.path.join(run_dir, "metrics.jsonl"))
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
    from resnet_jax.train import metrics, plots

    plt = plots.pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    depths = sorted({int(r.name.removeprefix("plain").removeprefix("resnet")) for r in planned})
    colours = dict(zip(depths, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for run in planned:
        family = "plain" if run.name.startswith("plain") else "resnet"
        axis = axes[0 if family == "plain" else 1]
        depth = int(run.name.removeprefix(family))
        rows = metrics.read_rows(os.path.join(sweep.run_workdir(workdir, run), "metrics.jsonl"))
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


def define_flags() -> None:
    from absl import flags
    from ml_collections import config_flags

    from resnet_jax.cli import flags as cli

    flags.DEFINE_string("workdir", None, "The experiment's directory: runs/, table, figure.")
    flags.mark_flag_as_required("workdir")
    config_flags.DEFINE_config_file("config", None, "The recipe every net trains with.",
                                    lock_config=True)
    flags.mark_flag_as_required("config")
    flags.DEFINE_list("depths", ["20", "56"], "Depths of the CIFAR-family nets (6n+2).")
    flags.DEFINE_list("families", list(FAMILIES), "plain, resnet, or both.")
    cli.define_launch_flags()


def main(argv) -> None:
    import jax
    from absl import flags

    from resnet_jax.cli import flags as cli

    FLAGS = flags.FLAGS
    try:
        depths = [int(d) for d in FLAGS.depths]
    except ValueError:
        raise UserError(f"--depths must be integers, got {','.join(FLAGS.depths)}") from None
    planned = planned_runs(depths, FLAGS.families)
    cli.launch()
    sweep.train_all(FLAGS.config, FLAGS.workdir, planned)
    if jax.process_index() == 0:
        rows = write_table(FLAGS.workdir, planned)
        config = FLAGS.config
        plot(FLAGS.workdir, planned, f"{config.dataset}, batch {config.batch_size}, "
                                     f"lr {config.learning_rate} ({config.schedule})")
        print(open(os.path.join(FLAGS.workdir, "degradation.md")).read() if rows else "",
              f"figure: {FLAGS.workdir}/degradation.png (.svg); table: "
              f"{FLAGS.workdir}/degradation.md (.csv)", sep="", flush=True)


if __name__ == "__main__":
    from resnet_jax.cli import flags as _cli

    define_flags()
    _cli.run(main, "the degradation experiment")
