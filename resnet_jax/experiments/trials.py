"""Training runs as the trials of an Optuna study: the one runner behind `search` and `sweep`.

A worker takes the next trial, trains it through the normal training path in its own workdir,
reports every evaluation to the study (whose pruner may stop it there) and records how it
ended; it stops when the study holds `total` trials. Any number of workers, in one process
each, on one machine or many, share a study through its storage.

Who runs which trial is decided under a lock in the search directory (`W/choose.lock`, one
worker at a time, for a moment): the worker counts the study's trials, adopts an orphan or asks
for a new one, and takes that trial's own lock (`trial.lock` in its workdir), which it holds
until the trial ends. An orphan is a trial the study still calls RUNNING whose lock is free: its
worker was killed (kill -9, preemption) or stopped by a signal. Its workdir holds the
checkpoints, so the adopter resumes it where it stopped, under the same trial number: no trial
is started twice and none is counted twice. (Optuna's own heartbeat would mark such a trial
FAIL and start a copy of it from step 0.) The locks are files, like the workdir's own lock:
the search directory must be on a disk every worker sees, which resuming a trial needs anyway.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time

from resnet_jax import errors

TRIALS_DIR = "trials"
JOURNAL_FILE = "study.journal"  # the default storage, in the search directory
CHOOSE_LOCK = "choose.lock"
TRIAL_LOCK = "trial.lock"
DIVERGED_FILE = "DIVERGED"  # in a trial's workdir: why it failed
OBJECTIVES = {"eval_top1": ("top1", "maximize"), "eval_loss": ("loss", "minimize"),
              "eval_map": ("map", "maximize")}  # eval_map: multi-label runs
_FAILED = -2  # process 0's word to the others that choosing failed


def optuna():
    """Optuna, or a UserError that names the extra it comes with."""
    from resnet_jax import extras

    extras.require_extra("tune", "a hyper-parameter search")
    import optuna as module

    module.logging.set_verbosity(module.logging.WARNING)
    return module


def open_study(workdir: str, storage: str, name: str, direction: str, sampler=None,
               pruner=None):
    """The study `name` in `storage` (default: Optuna's journal file in `workdir`, checked and
    kept whole by `journal`), created or continued. A study created for the other direction is
    refused in one line."""
    from resnet_jax.experiments import journal

    module = optuna()
    os.makedirs(workdir, exist_ok=True)
    where = storage or os.path.join(workdir, JOURNAL_FILE)
    if not storage:
        storage = module.storages.JournalStorage(journal.backend(where, _warn))
    try:
        # One worker at a time: workers that create a new database's tables at once collide
        # (SQLite and PostgreSQL alike: a unique-key error from Optuna's schema migration).
        with held(os.path.join(workdir, CHOOSE_LOCK)):
            study = module.create_study(storage=storage, study_name=name, direction=direction,
                                        sampler=sampler, pruner=pruner, load_if_exists=True)
    except ImportError as error:  # a database URL whose driver is not installed
        raise errors.UserError(f"--storage {without_password(where)}: {error}") from None
    except (ValueError, module.exceptions.OptunaError, _database_errors()) as error:
        # e.g. an unknown scheme, a server that refuses the connection, a wrong password
        first = without_password(str(error).splitlines()[0])
        raise errors.UserError(f"--storage {without_password(where)}: {first}") from None
    if study.direction.name.lower() != direction:
        raise errors.UserError(
            f"the study {name!r} in {without_password(where)} was created to "
            f"{study.direction.name.lower()} its objective, not to {direction}: keep its "
            f"--objective or use another --workdir/--storage")
    return study


def without_password(text: str) -> str:
    """`text` with the password of any URL in it (scheme://user:PASSWORD@host) as ***."""
    import re

    return re.sub(r"(\w[\w+.-]*://[^/:@\s]*:)[^@\s]*@", r"\1***@", text)


def _warn(line: str) -> None:
    import sys

    print(f"search: {line}", file=sys.stderr, flush=True)


def _database_errors() -> type:
    import sqlalchemy.exc  # Optuna's database layer, one of its dependencies

    return sqlalchemy.exc.SQLAlchemyError


@dataclasses.dataclass
class Search:
    """What every worker of one study shares."""

    study: object
    workdir: str
    total: int                  # the study's trials, all workers together
    space: dict                 # config key -> optuna distribution
    config: object              # the config every trial starts from
    objective: str = "eval_top1"
    trial_workdir: object = None  # (trial number, params) -> its workdir; default W/trials/NNNN
    train: object = None        # the training function (the loop's train_and_evaluate)

    def directory(self, number: int, params: dict) -> str:
        if self.trial_workdir is not None:
            return self.trial_workdir(number, params)
        return os.path.join(self.workdir, TRIALS_DIR, f"{number:04d}")


def work(search: Search, say=print) -> int:
    """Runs trials until the study holds `search.total` finished or running ones; returns how
    many this worker ran. A signal stops the worker with its trial left resumable.

    A worker of several processes (jax.distributed: one trial over every host's devices):
    process 0 chooses, reports and tells; the others read the trial's parameters from the
    storage and train with it."""
    import jax

    from resnet_jax.runs.workdir import agree

    ran = 0
    while True:
        try:
            chosen = _choose(search, say) if jax.process_index() == 0 else None
        except BaseException:
            agree(_FAILED)  # the other processes stop too, rather than wait for a trial
            raise
        number = agree(-1 if chosen is None else chosen[0].number)
        if number == _FAILED:
            raise errors.UserError("process 0 could not choose a trial: see its error")
        if number < 0:
            return ran
        trial, lock = chosen if chosen is not None else (_follow(search, number), None)
        try:
            _run(search, trial, say)
        finally:
            if lock is not None:
                lock.release()
        ran += 1


def _choose(search: Search, say):
    """(trial, its held lock): an orphan to resume, else a new trial if the study is not full;
    None when there is nothing left to start."""
    from resnet_jax.runs import workdir as workdir_lib

    module = optuna()
    with held(os.path.join(search.workdir, CHOOSE_LOCK)):
        trials = search.study.get_trials(deepcopy=False)
        for frozen in trials:
            if frozen.state != module.trial.TrialState.RUNNING:
                continue
            # (a worker killed between asking and suggesting left only an enqueued trial's
            # fixed values)
            params = frozen.params or frozen.system_attrs.get("fixed_params", {})
            directory = search.directory(frozen.number, params)
            lock = _try_lock(directory)
            if lock is None:
                continue
            # Its worker may have told the study and released the lock since the list was
            # read: a worker releases a trial's lock only after telling how it ended.
            if search.study._storage.get_trial(frozen._trial_id).state != frozen.state:
                lock.release()
                continue
            say(f"trial {frozen.number}: its worker is gone; resuming it in {directory}")
            return module.trial.Trial(search.study, frozen._trial_id), lock
        waiting = module.trial.TrialState.WAITING  # enqueued (a sweep's runs), not started
        if sum(frozen.state != waiting for frozen in trials) >= search.total:
            return None
        trial = search.study.ask()
        params = _suggest_all(trial, search.space)
        directory = search.directory(trial.number, params)
        lock = _try_lock(directory)
        if lock is None:
            raise workdir_lib.WorkdirInUse(f"{directory} is held by another worker, yet trial "
                                           f"{trial.number} is new: is another study using "
                                           f"this directory?")
        return trial, lock


def _suggest_all(trial, space: dict) -> dict:
    """The trial's value of every searched key (sampled once, then read back)."""
    return {key: _suggest(trial, key, distribution) for key, distribution in space.items()}


def _suggest(trial, key: str, distribution):
    module = optuna()
    if isinstance(distribution, module.distributions.CategoricalDistribution):
        return trial.suggest_categorical(key, distribution.choices)
    if isinstance(distribution, module.distributions.IntDistribution):
        return trial.suggest_int(key, distribution.low, distribution.high, log=distribution.log)
    return trial.suggest_float(key, distribution.low, distribution.high, log=distribution.log)


def _try_lock(directory: str):
    """The trial's lock, taken; None if a live worker holds it."""
    from resnet_jax.runs import workdir as workdir_lib

    workdir_lib.create(directory)
    lock = workdir_lib.Lock(directory, TRIAL_LOCK)
    try:
        lock.acquire()
    except workdir_lib.WorkdirInUse:
        return None
    return lock


class held:
    """A lock file held for a moment: waits (polling) while another worker holds it."""

    def __init__(self, path: str, timeout_s: float = 600.0):
        self.path, self.timeout_s = path, timeout_s

    def __enter__(self):
        from resnet_jax.runs import workdir as workdir_lib

        directory, name = os.path.split(self.path)
        deadline = time.monotonic() + self.timeout_s
        while True:
            self.lock = workdir_lib.Lock(directory, name)
            try:
                self.lock.acquire()
                return self
            except workdir_lib.WorkdirInUse:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def __exit__(self, *exc):
        self.lock.release()


@dataclasses.dataclass
class _Following:
    """A trial as the processes other than 0 of a multi-process worker see it."""
    number: int
    params: dict


def _follow(search: Search, number: int) -> _Following:
    storage = search.study._storage
    trial_id = storage.get_trial_id_from_study_id_trial_number(search.study._study_id, number)
    return _Following(number, storage.get_trial(trial_id).params)


def _run(search: Search, trial, say) -> None:
    """Trains one trial (or resumes it) and tells the study how it ended."""
    from resnet_jax.runs.workdir import agree

    module = optuna()
    leading = not isinstance(trial, _Following)
    params = _suggest_all(trial, search.space) if leading else trial.params
    directory = search.directory(trial.number, params)
    config = search.config.copy_and_resolve_references()
    config.update(params)
    metric, _ = OBJECTIVES[search.objective]
    reported = (set(search.study._storage.get_trial(trial._trial_id).intermediate_values)
                if leading else set())

    def on_evaluation(step: int, values: dict) -> bool:
        prune = False
        if leading:
            if step not in reported:
                trial.report(float(values[metric]), step)
                reported.add(step)
            prune = trial.should_prune()
        return bool(agree(int(prune)))

    described = ", ".join(f"{k}={shown(v)}" for k, v in params.items())
    if leading:
        say(f"trial {trial.number} (the study's total: {search.total}): {described} in "
            f"{directory}")
    train = search.train
    if train is None:
        from resnet_jax.train.loop import train_and_evaluate as train
    try:
        result = train(config, directory, on_evaluation=on_evaluation)
    except errors.Diverged as error:
        if not leading:
            return
        with open(os.path.join(directory, DIVERGED_FILE), "w") as f:
            f.write(f"{error}\n")
        search.study.tell(trial, state=module.trial.TrialState.FAIL)
        say(f"trial {trial.number}: failed: {error}; going on with the next trial")
        return
    if not leading:
        return
    value = best_value(directory, search.objective)
    if result.get("pruned"):
        search.study.tell(trial, state=module.trial.TrialState.PRUNED)
        say(f"trial {trial.number}: pruned at step {result['step']} ({search.objective} "
            f"{shown(value)})")
    else:
        search.study.tell(trial, value)
        say(f"trial {trial.number}: finished, {search.objective} {shown(value)}")


def best_value(directory: str, objective: str) -> float:
    """The best of a trial's evaluations (highest top-1 or lowest loss); nan if none."""
    return best_of(metric_rows(directory), objective)


def metric_rows(directory: str) -> list[dict]:
    """A trial's metrics.jsonl rows (none where the file or the folder is gone)."""
    from resnet_jax.runs import history

    return history.read_rows(os.path.join(directory, "metrics.jsonl"))


def best_of(rows: list[dict], objective: str) -> float:
    """The best of the eval rows' `objective` (highest top-1 or lowest loss); nan if none."""
    metric, direction = OBJECTIVES[objective]
    values = [row[metric] for row in rows if row["split"] == "eval"]
    if not values:
        return math.nan
    return max(values) if direction == "maximize" else min(values)


def shown(value) -> str:
    """A value as the search's lines and tables show it."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)
