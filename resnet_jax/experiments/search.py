"""Hyper-parameter search on Optuna: adaptive sampling, early stopping, many workers on one study.

    python -m resnet_jax.experiments.search --config configs/digits.py --workdir W \\
        --space learning_rate=loguniform:0.01:1 --space weight_decay=loguniform:1e-5:1e-2 \\
        --trials 20 [--sampler tpe|random|grid|cmaes] [--pruner asha|hyperband|median|none] \\
        [--objective eval_top1|eval_loss] [--storage URL] [--config.KEY=VALUE ...]

Each trial is a normal run in W/trials/NNNN (checkpoints, metrics, report, plots, resume, the
lock, the divergence guard). Every evaluation (`--config.eval_every_steps`) is reported to the
study, whose pruner may stop the trial there (saved, recorded PRUNED); a diverged trial is
recorded FAIL and the search goes on. The study lives in W/study.journal (or `--storage`, e.g.
postgresql://...), so the same command again continues it, and the same command in several
processes or on several hosts shares it: `--trials` is the study's total. A killed worker's
trial is resumed from its checkpoint by the next worker. At the end: W/results.csv and
W/results.md (one row per trial, best first) and figures in W (optimisation history, parameter
importances, every trial's eval curve). `optuna-dashboard W/study.journal` shows the study live.
"""

from __future__ import annotations

import math
import os

from resnet_jax import errors
from resnet_jax.experiments import space as space_lib
from resnet_jax.experiments import trials

SAMPLERS = ("tpe", "random", "grid", "cmaes")
PRUNERS = ("asha", "hyperband", "median", "none")
REDUCTION_FACTOR = 3  # ASHA/Hyperband keep the best third at each rung
FIGURES = ("optimization_history.png", "param_importances.png", "eval_curves.png")


def create_sampler(name: str, space: dict, trial_count: int, seed: int | None):
    module = trials.optuna()
    if name == "grid":
        ranges = [key for key, d in space.items() if not hasattr(d, "choices")]
        if ranges:
            raise errors.UserError(f"--sampler grid needs a list of choices for every key; "
                                   f"{', '.join(ranges)} is a range")
        size = math.prod(len(d.choices) for d in space.values())
        if trial_count > size:
            raise errors.UserError(f"--sampler grid: the grid has {size} points; ask for at "
                                   f"most --trials {size}")
        return _grid_sampler(module)({k: list(d.choices) for k, d in space.items()}, seed=seed)
    if name == "random":
        return module.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        return module.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    # TPE's random start-up: a tenth of the budget (2..10), so a small study still models;
    # constant_liar: parallel workers do not all sample next to the same running trial.
    return module.samplers.TPESampler(seed=seed, constant_liar=True,
                                      n_startup_trials=min(10, max(2, trial_count // 10)))


def _grid_sampler(module):
    class Grid(module.samplers.GridSampler):
        """Optuna's grid, without its `study.stop()` once the grid is exhausted: that works
        only inside `study.optimize`, and the workers stop at the study's total anyway."""

        def after_trial(self, study, trial, state, values):
            pass

    return Grid


def create_pruner(name: str, config):
    module = trials.optuna()
    if name == "none":
        return module.pruners.NopPruner()
    if config.eval_every_steps <= 0:
        raise errors.UserError(f"--pruner {name} stops trials at their evaluations, and this "
                               f"config evaluates only at the end: set "
                               f"--config.eval_every_steps (or --pruner none)")
    first = config.eval_every_steps
    if name == "asha":
        return module.pruners.SuccessiveHalvingPruner(min_resource=first,
                                                      reduction_factor=REDUCTION_FACTOR)
    if name == "hyperband":
        return module.pruners.HyperbandPruner(min_resource=first,
                                              reduction_factor=REDUCTION_FACTOR)
    return module.pruners.MedianPruner(n_startup_trials=2)


def check_study(study, specs: dict, objective: str) -> None:
    """Records the study's space and objective when it is new; refuses another on a rerun."""
    recorded = study.user_attrs
    if "space" not in recorded:
        study.set_user_attr("space", specs)
        study.set_user_attr("objective", objective)
        return
    if recorded["space"] != specs:
        raise errors.UserError(f"this study searches {recorded['space']}, not {specs}: keep "
                               f"its --space or use another --workdir/--study")
    if recorded.get("objective") != objective:
        raise errors.UserError(f"this study's objective is {recorded.get('objective')}, not "
                               f"{objective}")


def result_rows(study, search: trials.Search) -> list[dict]:
    """One row per trial: trial, state, value, steps, the searched keys, workdir; best first."""
    from resnet_jax.train import metrics

    rank = {"COMPLETE": 0, "PRUNED": 1, "RUNNING": 2, "FAIL": 3}
    sign = -1 if trials.OBJECTIVES[search.objective][1] == "maximize" else 1
    rows = []
    for trial in study.get_trials(deepcopy=False):
        directory = search.directory(trial.number, trial.params)
        steps = [row["step"] for row in
                 metrics.read_rows(os.path.join(directory, "metrics.jsonl"))]
        rows.append({"trial": trial.number, "state": trial.state.name,
                     "value": trials.best_value(directory, search.objective),
                     "steps": max(steps, default=0),
                     **{key: trial.params.get(key, "") for key in search.space},
                     "workdir": directory})
    rows.sort(key=lambda r: (rank.get(r["state"], 4),
                             sign * r["value"] if r["value"] == r["value"] else math.inf))
    return rows


def write_results(study, search: trials.Search) -> list[dict]:
    from resnet_jax.experiments.sweep import write_tables

    rows = result_rows(study, search)
    if rows:
        columns = list(rows[0])
        write_tables(os.path.join(search.workdir, "results"), rows, columns,
                     [[trials.shown(r[c]) for c in columns] for r in rows])
    return rows


def plot(study, search: trials.Search) -> list[str]:
    """The figures in W; returns the notes on any that could not be drawn yet."""
    import warnings

    from resnet_jax.train import metrics, plots

    module, plt = trials.optuna(), plots.pyplot()
    notes = []
    drawings = {"optimization_history.png": module.visualization.matplotlib.
                plot_optimization_history,
                "param_importances.png": module.visualization.matplotlib.plot_param_importances}
    for name, draw in drawings.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna's "experimental" notices
                axes = draw(study)
        except (ValueError, RuntimeError) as error:  # e.g. importances need 2 finished trials
            notes.append(f"{name} not drawn: {str(error).splitlines()[0]}")
            continue
        plots.save(axes.get_figure(), os.path.join(search.workdir, name))
        plt.close(axes.get_figure())
    metric = trials.OBJECTIVES[search.objective][0]
    figure, axis = plt.subplots(figsize=(8, 5))
    for index, trial in enumerate(study.get_trials(deepcopy=False)):
        directory = search.directory(trial.number, trial.params)
        evals = [r for r in metrics.read_rows(os.path.join(directory, "metrics.jsonl"))
                 if r["split"] == "eval"]
        axis.plot([r["step"] for r in evals], [r[metric] for r in evals], marker="o",
                  linestyle="--" if trial.state.name == "PRUNED" else "-",
                  color=plt.get_cmap("tab20")(index % 20),
                  label=f"{trial.number} ({trial.state.name.lower()})")
    axis.set_xlabel("step")
    axis.set_ylabel(f"eval {metric}")
    axis.set_title("every trial's evaluations (dashed: pruned)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, ncol=2)
    plots.save(figure, os.path.join(search.workdir, "eval_curves.png"))
    plt.close(figure)
    return notes


def define_flags() -> None:
    from absl import flags
    from ml_collections import config_flags

    from resnet_jax.cli import flags as cli

    flags.DEFINE_string("workdir", None, "The search's directory: trials/, the study's "
                        "journal, results, figures.")
    flags.mark_flag_as_required("workdir")
    config_flags.DEFINE_config_file("config", None, "The config every trial starts from "
                                    "(a file or a shipped config's name).", lock_config=True)
    flags.mark_flag_as_required("config")
    flags.DEFINE_multi_string("space", [], "KEY=SPEC: a searched config key; SPEC is "
                              "loguniform:LOW:HIGH, uniform:LOW:HIGH, int:LOW:HIGH or a comma "
                              "list of choices.")
    flags.DEFINE_integer("trials", None, "The study's trials in all, every worker together.")
    flags.mark_flag_as_required("trials")
    flags.DEFINE_enum("sampler", "tpe", SAMPLERS, "How the next trial's values are chosen.")
    flags.DEFINE_enum("pruner", "asha", PRUNERS, "What stops a poor trial at an evaluation.")
    flags.DEFINE_enum("objective", "eval_top1", list(trials.OBJECTIVES), "What the search "
                      "optimises: the best eval top-1 or the lowest eval loss of a trial.")
    flags.DEFINE_string("storage", "", "An Optuna storage URL shared by every worker "
                        "(postgresql://..., mysql://..., sqlite:///...); default: the journal "
                        "file W/study.journal.")
    flags.DEFINE_string("study", "", "The study's name in the storage (default: the workdir's "
                        "name).")
    flags.DEFINE_integer("seed", None, "The sampler's seed (default: a fresh one per worker).")
    cli.define_launch_flags()


def main(argv) -> None:
    import jax
    from absl import flags

    from resnet_jax.cli import flags as cli

    FLAGS = flags.FLAGS
    if FLAGS.trials < 1:
        raise errors.UserError(f"--trials must be >= 1, got {FLAGS.trials}")
    config = FLAGS.config
    space = space_lib.parse_space(FLAGS.space, config)
    objective = FLAGS.objective
    sampler = create_sampler(FLAGS.sampler, space, FLAGS.trials, FLAGS.seed)
    pruner = create_pruner(FLAGS.pruner, config)
    cli.launch()
    workdir = FLAGS.workdir
    name = FLAGS.study or os.path.basename(os.path.abspath(workdir))
    study = trials.open_study(workdir, FLAGS.storage, name, trials.OBJECTIVES[objective][1],
                              sampler, pruner)
    specs = dict(spec.split("=", 1) for spec in (s.replace(" ", "") for s in FLAGS.space))
    if jax.process_index() == 0:
        from resnet_jax.train import records

        with trials.held(os.path.join(workdir, trials.CHOOSE_LOCK)):
            check_study(study, specs, objective)
            # the config every trial starts from, W/trials/config.json: a rerun that would mix
            # trials of another config into the study is refused with the keys named
            os.makedirs(os.path.join(workdir, trials.TRIALS_DIR), exist_ok=True)
            records.record_config(os.path.join(workdir, trials.TRIALS_DIR), config)
    search = trials.Search(study, workdir, FLAGS.trials, space, config, objective)
    ran = trials.work(search, say=lambda line: print(f"search: {line}", flush=True))
    if jax.process_index() != 0:
        return
    with trials.held(os.path.join(workdir, trials.CHOOSE_LOCK)):  # the last writer saw all
        rows = write_results(study, search)
        notes = plot(study, search)
    finished = sum(row["state"] != "RUNNING" for row in rows)
    print(open(os.path.join(workdir, "results.md")).read() if rows else "", *notes,
          f"search: this worker ran {ran} trial(s); the study holds {finished} finished of "
          f"{FLAGS.trials}; results: {workdir}/results.csv, results.md; figures: "
          f"{', '.join(FIGURES)} in {workdir}", sep="\n", flush=True)


def run() -> None:
    from resnet_jax.cli import flags as cli

    define_flags()
    cli.run(main, "a hyper-parameter search")


if __name__ == "__main__":
    run()
