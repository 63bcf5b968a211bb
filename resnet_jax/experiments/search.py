"""Hyper-parameter search on Optuna, the library: samplers, pruners, the study's checks, its
results and figures (trials run through `resnet_jax.experiments.trials`). The command, with its
usage, is `resnet_jax.cli.search` (`resnet-jax-search`, or `python -m
resnet_jax.experiments.search`)."""

from __future__ import annotations

import math
import os

from resnet_jax import errors
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
    from resnet_jax.runs import history

    rank = {"COMPLETE": 0, "PRUNED": 1, "RUNNING": 2, "FAIL": 3}
    sign = -1 if trials.OBJECTIVES[search.objective][1] == "maximize" else 1
    rows = []
    for trial in study.get_trials(deepcopy=False):
        directory = search.directory(trial.number, trial.params)
        steps = [row["step"] for row in
                 history.read_rows(os.path.join(directory, "metrics.jsonl"))]
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

    from resnet_jax.runs import history, plots

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
        evals = [r for r in history.read_rows(os.path.join(directory, "metrics.jsonl"))
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


def search(config, workdir: str, space_specs: list[str], space: dict, objective: str,
           trial_count: int, sampler, pruner, storage: str, name: str) -> None:
    """This worker's part of the study `name`: the study opened (or continued) and checked,
    trials run until the study holds `trial_count`, then (process 0) the results and figures."""
    import jax

    study = trials.open_study(workdir, storage, name, trials.OBJECTIVES[objective][1], sampler,
                              pruner)
    specs = dict(spec.split("=", 1) for spec in (s.replace(" ", "") for s in space_specs))
    if jax.process_index() == 0:
        from resnet_jax.runs import records

        with trials.held(os.path.join(workdir, trials.CHOOSE_LOCK)):
            check_study(study, specs, objective)
            # the config every trial starts from, W/trials/config.json: a rerun that would mix
            # trials of another config into the study is refused with the keys named
            os.makedirs(os.path.join(workdir, trials.TRIALS_DIR), exist_ok=True)
            records.record_config(os.path.join(workdir, trials.TRIALS_DIR), config)
    search = trials.Search(study, workdir, trial_count, space, config, objective)
    ran = trials.work(search, say=lambda line: print(f"search: {line}", flush=True))
    if jax.process_index() != 0:
        return
    with trials.held(os.path.join(workdir, trials.CHOOSE_LOCK)):  # the last writer saw all
        rows = write_results(study, search)
        notes = plot(study, search)
    finished = sum(row["state"] != "RUNNING" for row in rows)
    print(open(os.path.join(workdir, "results.md")).read() if rows else "", *notes,
          f"search: this worker ran {ran} trial(s); the study holds {finished} finished of "
          f"{trial_count}; results: {workdir}/results.csv, results.md; figures: "
          f"{', '.join(FIGURES)} in {workdir}", sep="\n", flush=True)


# The form the docs have given; the command itself is resnet_jax.cli.search.
if __name__ == "__main__":
    from resnet_jax.cli import search as command

    command.run()
