"""The training loop, `train_and_evaluate`: plan, data, model, init or resume, steps, evals,
checkpoints.

The loop reads top to bottom: resolve the config into its plan, build data and model, init or
restore, then `for step in range(start, total)` with periodic log / eval / checkpoint. One
jitted, pure `train_step` with explicit shardings over the device mesh; metrics stay on the
device and are fetched only every `log_every_steps`. What the run is (`_Setup`) is fixed once
planned; what changes as it runs (`_Live`) is small and named.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import optax
import orbax.checkpoint as ocp
from absl import logging
from jax.sharding import Mesh

from resnet_jax import environment, errors
from resnet_jax import plan as plans
from resnet_jax.data import batching, datasets
from resnet_jax.launch import sharding
from resnet_jax.runs import checkpoint, history, inference, progress, records, warm_start
from resnet_jax.runs import workdir as workdir_lib
from resnet_jax.train import best as best_lib
from resnet_jax.train import (
    ema,
    evaluation,
    memory,
    metrics,
    optim,
    preemption,
    steps,
    trainable,
)


def train_and_evaluate(config, workdir: str, *, on_evaluation=None) -> dict:
    """Trains `config` in `workdir`, resuming from its latest checkpoint; returns eval metrics.

    Stops early, with a checkpoint, on SIGTERM/SIGINT/SIGHUP (`errors.Interrupted`) and,
    without saving anything non-finite, when the loss or gradients stop being finite
    (`errors.Diverged`). A signal while the data is listed stops before the workdir is touched.
    `on_evaluation(step, values) -> bool`, called on every process after each evaluation (a
    hyper-parameter search reports to its trial there): True stops the run at that evaluation
    with a checkpoint (a pruned trial); the result then holds `"pruned": True`. Every process
    must get the same answer.
    """
    wall_start = time.perf_counter()
    with preemption.StopSignals() as stop:  # heard from the start, not only once training runs
        plan = plans.resolve(config)
        source = datasets.create_source(plan.data)  # DataError if not prepared
        if stop.received:
            raise errors.Interrupted(f"{stop.received} before the run started: nothing was "
                                     f"written; run the same command to start it")
        with workdir_lib.claim(workdir):
            # A workdir without checkpoints holds nothing to continue: its config.json (from a
            # start that failed, e.g. out of memory) is replaced, not defended.
            if checkpoint.has_checkpoints(workdir):
                records.check_config(workdir, plan.config)
            if jax.process_index() == 0:
                checkpoint.remove_unfinished(workdir)
            with memory.out_of_memory_explained(plan):
                return _train_and_evaluate(_Setup.of(plan, workdir, source, on_evaluation),
                                           stop, wall_start)


def _train_and_evaluate(setup: _Setup, stop, wall_start: float) -> dict:
    live = _Live(checkpoint.create_manager(setup.workdir, setup.plan.loop.keep_checkpoints))
    finished = _already_finished(setup, live)
    if finished is not None:
        return finished
    _init_or_restore(setup, live)
    compiled = _compile_steps(setup, live)
    stopped_at = _train(setup, compiled, live, stop)
    live.shown.close()
    live.manager.wait_until_finished()
    live.best.wait()
    total = setup.lengths.total_steps
    if stopped_at is not None:
        raise errors.Interrupted(
            f"{stop.received}: stopped at step {stopped_at} of {total}, checkpoint saved in "
            f"{os.path.join(setup.workdir, 'checkpoints', str(stopped_at))}; run the same "
            f"command to continue")
    if live.halt is not None:
        return best_lib.halted(setup.workdir, live.halt, total, setup.is_main)
    if live.end_step < total:
        if setup.is_main:
            print(f"stopped at step {live.end_step} of {total} (stop_after_steps); run the "
                  f"same command again to continue", flush=True)
        return {"step": live.end_step}
    return _finish(setup, compiled, live, wall_start)


@dataclasses.dataclass(frozen=True)
class _Setup:
    """What the run is, fixed once planned: its plan, data, length, mesh and the functions
    that make its state."""

    plan: plans.Plan
    workdir: str
    source: datasets.Source
    lengths: plans.Lengths
    mesh: Mesh
    description: dict  # what a checkpoint must match to be resumed (`checkpoint.describe`)
    schedule: optax.Schedule
    ema_config: ema.EmaConfig | None
    init: Callable[[jax.Array], steps.TrainState]  # rng -> a fresh state, replicated
    on_evaluation: Callable[[int, dict], bool] | None  # (step, values) -> stop here?
    is_main: bool

    @property
    def info(self) -> datasets.DatasetInfo:
        return self.source.info

    @property
    def title(self) -> str:
        return f"{self.plan.model.name} on {self.info.name}"

    @classmethod
    def of(cls, plan: plans.Plan, workdir: str, source: datasets.Source,
           on_evaluation) -> _Setup:
        """The run's length, mesh, model and optimiser; nothing computed yet."""
        info = source.info
        plan = plan.for_data(info.class_counts)
        lengths = plan.loop.lengths(info.num_train)
        inference.use_compilation_cache(plan.loop.compilation_cache_dir)
        if plan.model.dtype == "float64":
            jax.config.update("jax_enable_x64", True)
        mesh = sharding.create_mesh()
        environment.announce(plan.model.kernels, plan.model.dtype)
        model = plan.model.create(info.num_classes, info.image_shape[-1])
        schedule = optim.create_schedule(plan.schedule, lengths.steps_per_epoch,
                                         lengths.total_steps)
        tx = optim.create_optimizer(plan.optimizer, schedule)
        ema_config = ema.EmaConfig.adjusted(plan.ema, plan.loop.batch_size,
                                            lengths.epoch_length, lengths.num_epochs)
        init = jax.jit(functools.partial(steps.create_train_state, model, tx, info.image_shape,
                                         with_ema=ema_config is not None),
                       out_shardings=sharding.replicated(mesh))
        return cls(plan, workdir, source, lengths, mesh,
                   checkpoint.describe(plan.config, info.class_names), schedule, ema_config,
                   init, on_evaluation, jax.process_index() == 0)


@dataclasses.dataclass
class _Live:
    """What changes as the run goes: its state, where it is, what it has not logged yet."""

    manager: ocp.CheckpointManager  # replaced when a damaged checkpoint is set aside
    state: steps.TrainState | None = None
    start_step: int = 0
    end_step: int = 0
    sums: dict | None = None  # metric sums on the device since the last log
    saved_rows: list[dict] | None = None  # the restored checkpoint's copy of metrics.jsonl
    writer: history.MetricWriter | None = None
    shown: progress.Progress | None = None
    best: best_lib.BestKeeper | None = None
    halt: best_lib.Halt | None = None  # set by the evaluation that ends the run


@dataclasses.dataclass(frozen=True)
class _Compiled:
    """The jitted steps, compiled once."""

    train_fn: Callable[[steps.TrainState, dict], tuple[steps.TrainState, dict]]
    eval_fn: Callable[[dict, dict], tuple[dict, jax.Array]]
    seconds: float  # the training step's compilation
    trains: Any | None  # which parameters train (`trainable.mask`); None: all


def _already_finished(setup: _Setup, live: _Live) -> dict | None:
    """Restores the latest checkpoint into `live`; the final eval's values if the run is over
    (evaluating again is the evaluate command's job)."""
    live.manager, live.start_step, live.state, live.sums, live.saved_rows = (
        checkpoint.restore_latest(setup.workdir, live.manager, setup.plan.loop.keep_checkpoints,
                                  jax.eval_shape(setup.init, jax.random.PRNGKey(0)),
                                  setup.description))
    total = setup.lengths.total_steps
    stopped = best_lib.stopped_early(setup.workdir, live.start_step, setup.is_main)
    if stopped is not None:
        return stopped
    if live.start_step != total:
        return None
    finished = history.final_eval(setup.workdir, total)
    if finished is not None and setup.is_main:
        print(f"{setup.workdir} finished at step {total} (top-1 {finished['top1']:.4f} on "
              f"{finished['count']} held-out examples): nothing to do", flush=True)
    return None if finished is None else {**finished, "step": total}


def _init_or_restore(setup: _Setup, live: _Live) -> None:
    """A fresh state (with init_from's weights) unless a checkpoint was restored; then the
    run's record (every refusal has happened by now) and its metrics writer."""
    plan = setup.plan
    if live.state is None:
        live.start_step, live.state = 0, setup.init(jax.random.PRNGKey(plan.loop.seed))
        if plan.loop.init_from:
            live.state, loaded, record = warm_start.apply(
                live.state, plan.loop.init_from, plan.model.name, sharding.replicated(setup.mesh))
            if setup.is_main:
                print(loaded, flush=True)
                if record is not None:  # weights by name: the repo and revision loaded
                    records.write_record(setup.workdir, records.WEIGHTS_FILE, record)
    else:
        logging.info("resumed from step %d", live.start_step)
    if setup.is_main:
        records.write_config(setup.workdir, plan.config)
        records.write_class_names(setup.workdir, setup.info.class_names)
        records.write_skipped_images(setup.workdir, setup.info.skipped)
    live.best = best_lib.BestKeeper.resume(setup.workdir, plan.loop, live.saved_rows)
    live.writer = history.MetricWriter(setup.workdir, enabled=setup.is_main)
    live.writer.resume_at(live.start_step, live.saved_rows)
    live.end_step = plan.loop.end_step(live.start_step, setup.lengths.total_steps)


def _compile_steps(setup: _Setup, live: _Live) -> _Compiled:
    """The jitted train and eval steps, compiled once; the run's opening lines."""
    plan, info = setup.plan, setup.info
    trains = (None if plan.trainable is None
              else trainable.mask(live.state.params, plan.trainable))
    train_fn, seconds = steps.compile_train_step(
        live.state, setup.mesh,
        (plan.loop.batch_size // jax.process_count(), *info.image_shape), plan.step,
        info.pixel_normalization, trains, setup.ema_config)
    eval_fn, _ = steps.compile_eval_step(
        live.state.apply_fn, steps.variables_of(live.state), setup.mesh,
        (plan.loop.eval_batch_size // jax.process_count(), *info.eval_shape), plan.task,
        info.pixel_normalization)
    memory.check_host_memory(plan, train_fn)  # before a step could exhaust the machine
    compiled = _Compiled(train_fn, eval_fn, seconds, trains)
    if setup.is_main:
        _announce(setup, compiled, live)
    # after the opening lines: a bar on a terminal stays below them
    live.shown = progress.Progress(setup.lengths.total_steps, live.start_step,
                                   enabled=setup.is_main, bar=plan.loop.progress_bar,
                                   interval_s=plan.loop.progress_interval_s)
    return compiled


def _announce(setup: _Setup, compiled: _Compiled, live: _Live) -> None:
    plan, info = setup.plan, setup.info
    where = f"{jax.device_count()} device(s)"
    if jax.process_count() > 1:
        where += f" in {jax.process_count()} processes"
    if plan.step.accumulation_steps > 1:
        where += f", {plan.step.accumulation_steps} micro-batches per step"
    print(f"{setup.title}: {info.num_train} train / {info.num_eval} eval examples, batch "
          f"{plan.loop.batch_size} over {where}, steps {live.start_step}.."
          f"{setup.lengths.total_steps}, train step compiled in {compiled.seconds:.1f} s",
          flush=True)
    print(_plan_line(setup), flush=True)
    print(trainable.describe(live.state.params, compiled.trains, plan.trainable_text),
          flush=True)
    if info.name in datasets.OWN_DATASETS:  # the classes as the user's files name them
        print(f"classes: {', '.join(info.class_names[:20])}"
              f"{' ...' if len(info.class_names) > 20 else ''}; evaluating on "
              f"{info.eval_from}", flush=True)


def _plan_line(setup: _Setup) -> str:
    """The run's length in epochs and its evaluations, said before the first step."""
    loop, lengths = setup.plan.loop, setup.lengths
    every = loop.eval_interval(lengths)
    evals = (f"evaluating every {every} steps ({every / lengths.steps_per_epoch:.3g} epoch(s)) "
             f"and at the end, the best by {loop.best_metric} kept in best/" if every > 0
             else "evaluating at the end")
    stops = (f", stopping after {loop.early_stopping_patience} evaluations without improvement"
             if loop.early_stopping_patience else "")
    return (f"plan: {lengths.total_steps} steps = {lengths.num_epochs:.3g} epochs of "
            f"{lengths.steps_per_epoch:.3g} steps, {loop.batch_size} images a step; {evals}"
            f"{stops}")


def _train(setup: _Setup, compiled: _Compiled, live: _Live, stop) -> int | None:
    """Steps start_step..end_step with periodic log, eval and checkpoint; the step at which a
    signal stopped the run (saved), or None."""
    loop, total = setup.plan.loop, setup.lengths.total_steps
    eval_every = loop.eval_interval(setup.lengths)
    batches = sharding.prefetch_to_mesh(batching.train_batches(
        setup.source, loop.batch_size, live.start_step, live.end_step - live.start_step,
        loop.seed, jax.process_index(), jax.process_count(), loop.ra_reps), setup.mesh)
    state_is_finite = jax.jit(steps.all_finite)
    interval = _Interval()
    for step in range(live.start_step, live.end_step):
        wait_start = time.perf_counter()
        batch = next(batches)  # steps are dispatched asynchronously: time here is input-bound
        interval.input_wait += time.perf_counter() - wait_start
        live.state, step_sums = compiled.train_fn(live.state, batch)
        live.sums = metrics.accumulate(live.sums, step_sums)
        interval.steps += 1
        done = step + 1
        live.shown.update(done)
        if done % loop.log_every_steps == 0 or done == total:
            _log(setup, live, step, interval)
            interval = _Interval()
        if eval_every > 0 and done % eval_every == 0 and done < total:
            _evaluate_and_record(setup, compiled, live, done)
        halted = live.halt is not None and live.halt.step == done
        stopping = stop.requested(done)  # every step: processes agree on where to stop
        if (done % loop.checkpoint_every_steps == 0 or done == live.end_step or stopping
                or halted):
            _save(setup, live, done, bool(state_is_finite(live.state)))
        if halted:
            return None
        if stopping:
            return done
    return None


@dataclasses.dataclass
class _Interval:
    """Since the last log: steps, and seconds spent waiting for input."""
    steps: int = 0
    input_wait: float = 0.0
    start: float = dataclasses.field(default_factory=time.perf_counter)


def _log(setup: _Setup, live: _Live, step: int, interval: _Interval) -> None:
    """The interval's metrics fetched (the loop's only host sync), checked, written, shown."""
    done = step + 1
    sums = jax.device_get(live.sums)
    metrics.raise_if_diverged(sums, done, live.manager)
    values = metrics.means(sums)
    elapsed = time.perf_counter() - interval.start
    values["learning_rate"] = float(setup.schedule(step))
    values["images_per_sec"] = interval.steps * setup.plan.loop.batch_size / elapsed
    values["input_wait_fraction"] = min(interval.input_wait / elapsed, 1.0)
    live.writer.write(done, "train", values)
    live.shown.note(loss=values["loss"], lr=values["learning_rate"],
                    img_s=values["images_per_sec"])
    live.sums = None


def _save(setup: _Setup, live: _Live, step: int, state_finite: bool) -> None:
    """Checkpoints `step` if every step so far had a finite loss and gradients, and the state
    is finite (a finite update can still overflow)."""
    interval = None if live.sums is None else jax.device_get(live.sums)
    metrics.raise_if_diverged(interval, step, live.manager, state_finite)
    checkpoint.save(live.manager, step, live.state, setup.description, interval,
                    list(live.writer.rows) if setup.is_main else None)


def _evaluate_and_record(setup: _Setup, compiled: _Compiled, live: _Live,
                         done: int) -> tuple[dict, str | None]:
    """Every eval example once (and the EMA's, as torchvision's reference does); process 0
    writes the metrics, the report and the figures. Returns (values, report path)."""
    plan, info, task = setup.plan, setup.info, setup.plan.task
    evaluate = functools.partial(evaluation.evaluate, compiled.eval_fn, source=setup.source,
                                 eval_batch_size=plan.loop.eval_batch_size, mesh=setup.mesh,
                                 show_progress=live.shown.is_bar, task=task)
    values, labels, outputs = evaluate(steps.variables_of(live.state))
    if setup.ema_config is not None:
        averaged, _, _ = evaluate(ema.averaged_variables(live.state))
        if setup.is_main:
            live.writer.write(done, "eval_ema", averaged)
            live.shown.write(f"step {done}: eval (EMA) {task.summary(averaged)}")
    total = setup.lengths.total_steps
    early = live.best.observe(done, values, live.state, setup.description)
    if setup.on_evaluation is not None and setup.on_evaluation(done, values) and done < total:
        live.halt = best_lib.Halt(done, "pruned at this evaluation", values, pruned=True)
    elif early is not None and done < total:
        live.halt = best_lib.Halt(done, early, values)
    if not setup.is_main:
        return values, None
    live.writer.write(done, "eval", values)
    header = (f"{setup.title}, step {done} of {total}, evaluated on "
              f"{info.eval_from or 'the held-out split'}")
    report = evaluation.record(setup.workdir, "", task, labels, outputs, values,
                               info.class_names, header)
    evaluation.plot_curves(setup.workdir, setup.title)
    live.shown.write(f"step {done}: eval {task.summary(values)}")
    return values, report


def _finish(setup: _Setup, compiled: _Compiled, live: _Live, wall_start: float) -> dict:
    """The final evaluation, and the run's last line."""
    result, report = _evaluate_and_record(setup, compiled, live, setup.lengths.total_steps)
    live.best.wait()
    wall_s = time.perf_counter() - wall_start
    if setup.is_main:
        print(f"done: wall time {wall_s:.1f} s (train-step compile {compiled.seconds:.1f} s); "
              f"{live.best.summary()}; report: {report}, figures: "
              f"{os.path.join(setup.workdir, 'plots')}", flush=True)
    result.update(step=setup.lengths.total_steps, wall_s=wall_s, compile_s=compiled.seconds)
    return result
