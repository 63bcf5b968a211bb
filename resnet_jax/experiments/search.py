"""Hyper-parameter search on Optuna, the library: samplers, pruners, the study's checks, its
results and figures (trials run through `resnet_jax.experiments.trials`). The command, with its
usage, is `resnet_jax.cli.search` (`resnet-jax-search`, or `python -m
resnet_jax.experiments.search`)."""

from __future__ import annotations

import math
import os
import sys

from resnet_jax import errors
from resnet_jax.experiments import trials

SAMPLERS = ("tpe", "random", "grid", "cmaes")
PRUNERS = ("asha", "hyperband", "median", "none")
REDUCTION_FACTOR = 3  # ASHA/Hyperband keep the best third at each rung
STUDY_FILE = "study.json"  # in the search directory: the name of its study
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


def create_pruner(name: str, config, min_resource: int = 0):
    """Optuna's pruner `name`. ASHA's and Hyperband's first rung is at `min_resource` steps
    (at least the first evaluation), so no trial is judged before it has trained that long;
    the median pruner waits as long (its warm-up steps)."""
    module = trials.optuna()
    if name == "none":
        return module.pruners.NopPruner()
    if config.eval_every_steps <= 0:
        raise errors.UserError(f"--pruner {name} stops trials at their evaluations, and this "
                               f"config evaluates only at the end: set "
                               f"--config.eval_every_steps (or --pruner none)")
    first = max(config.eval_every_steps, min_resource)
    if name == "asha":
        return module.pruners.SuccessiveHalvingPruner(min_resource=first,
                                                      reduction_factor=REDUCTION_FACTOR)
    if name == "hyperband":
        return module.pruners.HyperbandPruner(min_resource=first,
                                              reduction_factor=REDUCTION_FACTOR)
    return module.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=first - 1)


def min_resource(config, space: dict, given: int) -> int:
    """The steps every trial trains before a pruner may judge it: `given` (--min_resource),
    else one epoch, and never less than the warm-up (the longest the space allows): a trial
    is not judged by how fast it starts."""
    from resnet_jax import plan as plans
    from resnet_jax.data import datasets

    if given < 0:
        raise errors.UserError(f"--min_resource must be >= 0 (0: one epoch), got {given}")
    plan = plans.resolve(config)
    lengths = plan.loop.lengths(datasets.create_source(plan.data).info.num_train)
    warmup = config.warmup_epochs
    if "warmup_epochs" in space:
        distribution = space["warmup_epochs"]
        warmup = max(getattr(distribution, "choices", None) or [distribution.high])
    warmup_steps = math.ceil(float(warmup) * lengths.steps_per_epoch)
    steps = max(given or math.ceil(lengths.steps_per_epoch), warmup_steps)
    if steps >= lengths.total_steps:
        print(f"search: warning: no trial can be pruned: the pruner judges a trial from step "
              f"{steps} (--min_resource, else an epoch; never within the warm-up) and a trial "
              f"trains {lengths.total_steps} steps", file=sys.stderr, flush=True)
    return steps


def check_objective(objective: str, config) -> None:
    from resnet_jax import tasks

    multilabel = tasks.name_for_dataset(config.dataset) == "multilabel"
    if objective == "eval_map" and not multilabel:
        raise errors.UserError("--objective eval_map is the mean average precision of a "
                               "multi-label run; this config's dataset is single-label: use "
                               "eval_top1 or eval_loss")


def study_name(workdir: str, requested: str, storage: str, recorded: dict | None = None) -> str:
    """The name of the study that belongs to `workdir`, recorded in W/study.json by the first
    worker (with `recorded`: its objective, direction and space, for the reader; the study
    holds them too, and checks them), so that a renamed or copied workdir goes on with its own
    study. Without a record:
    `--study`, else the one study of an existing journal (a workdir of an earlier version),
    else the folder's name for a workdir that already holds trials (the earlier default),
    else the folder's name with a random suffix (unique in a shared database)."""
    import json
    import secrets

    from resnet_jax.files import write_atomically

    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, STUDY_FILE)
    with trials.held(os.path.join(workdir, trials.CHOOSE_LOCK)):
        if os.path.exists(path):
            try:
                with open(path) as f:
                    name = json.load(f)["name"]
            except (ValueError, KeyError, TypeError):
                raise errors.UserError(f"{path} does not name this workdir's study; restore it "
                                       f"or give --study NAME") from None
            if requested and requested != name:
                raise errors.UserError(
                    f"{workdir} holds the study {name!r} (recorded in {path}), not "
                    f"{requested!r}: leave --study out, or use another --workdir")
            return name
        folder = os.path.basename(os.path.abspath(workdir))
        name = requested or _journal_study(workdir, storage)
        if not name:
            held_trials = os.path.isdir(os.path.join(workdir, trials.TRIALS_DIR)) and any(
                entry.isdigit() for entry in os.listdir(os.path.join(workdir,
                                                                     trials.TRIALS_DIR)))
            name = folder if held_trials else f"{folder}-{secrets.token_hex(3)}"
        fields = {"name": name, **(recorded or {}),
                  "storage": trials.without_password(storage) or trials.JOURNAL_FILE}
        write_atomically(path, json.dumps(fields, indent=2) + "\n")
        return name


def _journal_study(workdir: str, storage: str) -> str:
    """The one study in the workdir's journal file; '' if there is none (or another storage).
    (Each opening appends a CREATE_STUDY record; Optuna ignores the repeats, and so does this.)"""
    from resnet_jax.experiments import journal

    path = os.path.join(workdir, trials.JOURNAL_FILE)
    if storage or not os.path.isfile(path):
        return ""
    # Read only: a torn or damaged record is the journal backend's to set aside or refuse,
    # under the journal's lock (a worker may be appending now).
    names = list(dict.fromkeys(record["study_name"] for record in journal.records(path)
                               if record.get("op_code") == 0 and "study_name" in record))
    if len(names) > 1:
        raise errors.UserError(f"{path} holds the studies {', '.join(map(repr, names))}: name "
                               f"this workdir's one with --study NAME")
    return names[0] if names else ""


def check_study(study, specs: dict, objective: str, config=None) -> None:
    """Records the study's space, objective and base config (its defining values) in the study
    itself when it is new; refuses another on a rerun, whatever the workdir's files say."""
    from resnet_jax.runs import records

    recorded = study.user_attrs
    values = records.defining_values(config) if config is not None else None
    if "space" not in recorded:
        study.set_user_attr("space", specs)
        study.set_user_attr("objective", objective)
        if values is not None:
            study.set_user_attr("config", values)
        return
    if recorded["space"] != specs:
        raise errors.UserError(f"this study searches {recorded['space']}, not {specs}: keep "
                               f"its --space or use another --workdir/--study")
    if recorded.get("objective") != objective:
        raise errors.UserError(f"this study's objective is {recorded.get('objective')}, not "
                               f"{objective}")
    if values is None:
        return
    if "config" not in recorded:  # a study of an earlier version: its config from now on
        study.set_user_attr("config", values)
        return
    detail = records.differences(recorded["config"], values)
    if detail:
        raise errors.UserError(f"this study's trials start from another config ({detail}): "
                               f"keep the study's config, or use another --workdir")


def result_rows(study, search: trials.Search) -> list[dict]:
    """One row per trial, best first: trial, state, value and steps as the study recorded
    them (the told value, else the best reported evaluation, and the last reported step; the
    trial's own records where the study has none), the searched keys, the workdir, and a note
    where the trial's folder is gone."""
    rank = {"COMPLETE": 0, "PRUNED": 1, "RUNNING": 2, "FAIL": 3}
    maximize = trials.OBJECTIVES[search.objective][1] == "maximize"
    sign = -1 if maximize else 1
    rows = []
    for trial in study.get_trials(deepcopy=False):
        directory = search.directory(trial.number, trial.params)
        reported = trial.intermediate_values
        value = trial.value
        if value is None:
            value = (max if maximize else min)(reported.values(), default=math.nan)
        written = trials.metric_rows(directory)
        if value != value:  # nothing told or reported (e.g. a failed trial): its evaluations
            value = trials.best_of(written, search.objective)
        steps = [row["step"] for row in written]
        rows.append({"trial": trial.number, "state": trial.state.name, "value": value,
                     "steps": max([*reported, *steps], default=0),
                     **{key: trial.params.get(key, "") for key in search.space},
                     "workdir": directory,
                     "note": "" if os.path.isdir(directory) else "folder missing"})
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

    from resnet_jax.runs import plots

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
        evals = [r for r in trials.metric_rows(directory)
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
           trial_count: int, sampler_name: str, seed: int | None, pruner, storage: str,
           requested_name: str, train=None) -> None:
    """This worker's part of the workdir's study: the study opened (or continued) and checked,
    trials run until the study holds `trial_count`, then (process 0) the results and figures.
    A `seed` is offset by the trials the study holds already, so a continued study never draws
    a trial's values again. `train`: the training function (default: the training loop's)."""
    import jax

    specs = dict(spec.split("=", 1) for spec in (s.replace(" ", "") for s in space_specs))
    name = study_name(workdir, requested_name, storage, {
        "objective": objective, "direction": trials.OBJECTIVES[objective][1], "space": specs})
    study = trials.open_study(workdir, storage, name, trials.OBJECTIVES[objective][1], None,
                              pruner)
    offset = None if seed is None else seed + len(study.get_trials(deepcopy=False))
    study.sampler = create_sampler(sampler_name, space, trial_count, offset)
    if jax.process_index() == 0:
        from resnet_jax.runs import records

        with trials.held(os.path.join(workdir, trials.CHOOSE_LOCK)):
            check_study(study, specs, objective, config)
            # the config every trial starts from, W/trials/config.json: a rerun that would mix
            # trials of another config into the study is refused with the keys named
            os.makedirs(os.path.join(workdir, trials.TRIALS_DIR), exist_ok=True)
            records.record_config(os.path.join(workdir, trials.TRIALS_DIR), config)
    search = trials.Search(study, workdir, trial_count, space, config, objective, train=train)
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
