"""The training loop, `train_and_evaluate`: data, model, init or resume, steps, evals, checkpoints.

The loop reads top to bottom: check the config, build data and model, init or restore, then
`for step in range(start, total)` with periodic log / eval / checkpoint. One jitted, pure
`train_step` with explicit shardings over the device mesh; metrics stay on the device and are
fetched only every `log_every_steps`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import time

import jax
from absl import logging

from resnet_jax import environment, errors
from resnet_jax.data import batching, datasets
from resnet_jax.launch import sharding
from resnet_jax.train import (
    batch_augment,
    checkpoint,
    ema,
    evaluation,
    metrics,
    optim,
    preemption,
    progress,
    records,
    steps,
    trainable,
    warm_start,
)
from resnet_jax.train import workdir as workdir_lib
from resnet_jax.train.config import model_from_config, validate_config


def _setup_compilation_cache(path: str) -> None:
    if path:
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser(path))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


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
        validate_config(config)
        source = datasets.create_source(config)  # DataError if not prepared
        if stop.received:
            raise errors.Interrupted(f"{stop.received} before the run started: nothing was "
                                     f"written; run the same command to start it")
        with workdir_lib.claim(workdir):
            # A workdir without checkpoints holds nothing to continue: its config.json (from a
            # start that failed, e.g. out of memory) is replaced, not defended.
            if checkpoint.has_checkpoints(workdir):
                records.check_config(workdir, config)
            if jax.process_index() == 0:
                checkpoint.remove_unfinished(workdir)
            with _out_of_memory_explained(config):
                return _train_and_evaluate(config, workdir, source, stop, wall_start,
                                           on_evaluation)


@contextlib.contextmanager
def _out_of_memory_explained(config):
    """XLA's out-of-memory error (a page of allocator detail) as one line that says what to
    change: a user's batch or image size, not a bug."""
    try:
        yield
    except jax.errors.JaxRuntimeError as error:
        message = str(error)
        if "RESOURCE_EXHAUSTED" not in message and "Out of memory" not in message:
            raise
        device = jax.devices()[0]
        per_device = config.batch_size // max(jax.device_count(), 1)
        first = message.strip().splitlines()[0][:160]
        raise errors.UserError(
            f"out of memory on {device.device_kind} ({device.platform}): {config.model}, "
            f"batch_size={config.batch_size} ({per_device} per device, "
            f"{config.grad_accumulation_steps} micro-batch(es)), image_size="
            f"{config.image_size}, dtype {config.dtype}; lower batch_size, or raise "
            f"grad_accumulation_steps to keep the global batch in smaller pieces (XLA: "
            f"{first})") from None


def _train_and_evaluate(config, workdir, source, stop, wall_start, on_evaluation) -> dict:
    run = _Run.plan(config, workdir, source)
    run.on_evaluation = on_evaluation
    finished = _already_finished(run)
    if finished is not None:
        return finished
    _init_or_restore(run)
    _compile_steps(run)
    stopped_at = _train(run, stop)
    run.shown.close()
    run.manager.wait_until_finished()
    if stopped_at is not None:
        raise errors.Interrupted(
            f"{stop.received}: stopped at step {stopped_at} of {run.total_steps}, checkpoint "
            f"saved in {os.path.join(workdir, 'checkpoints', str(stopped_at))}; run the same "
            f"command to continue")
    if run.pruned_at is not None:
        if run.is_main:
            print(f"stopped at step {run.pruned_at} of {run.total_steps}: pruned at this "
                  f"evaluation (checkpoint saved)", flush=True)
        return {"step": run.pruned_at, "pruned": True}
    if run.end_step < run.total_steps:
        if run.is_main:
            print(f"stopped at step {run.end_step} of {run.total_steps} (stop_after_steps); "
                  f"run the same command again to continue", flush=True)
        return {"step": run.end_step}
    return _finish(run, wall_start)


@dataclasses.dataclass
class _Run:
    """What one training run holds while it runs: its plan, its compiled steps, its state."""

    config: object
    workdir: str
    source: object
    is_main: bool
    total_steps: int
    mesh: object
    manager: object
    description: dict
    schedule: object
    ema_config: object
    init: object  # rng -> a fresh TrainState, replicated
    start_step: int = 0
    end_step: int = 0
    state: object = None
    sums: object = None  # metric sums on the device since the last log
    saved_rows: object = None
    writer: object = None
    shown: object = None
    train_fn: object = None
    eval_fn: object = None
    compile_s: float = 0.0
    on_evaluation: object = None  # (step, values) -> stop here?
    trains: object = None  # which parameters train (trainable.mask), None: all
    pruned_at: int | None = None

    @property
    def info(self):
        return self.source.info

    @property
    def title(self) -> str:
        return f"{self.config.model} on {self.info.name}"

    @classmethod
    def plan(cls, config, workdir, source) -> _Run:
        """The run's length, mesh, model, optimiser and checkpoint manager; nothing computed."""
        info = source.info
        epoch_length = batching.epoch_length(info.num_train, config.ra_reps)
        steps_per_epoch = epoch_length / config.batch_size
        total_steps = (config.num_train_steps if config.num_train_steps > 0
                       else math.ceil(config.num_epochs * steps_per_epoch))
        manager = checkpoint.create_manager(workdir, config.keep_checkpoints)
        _setup_compilation_cache(config.compilation_cache_dir)
        if config.dtype == "float64":
            jax.config.update("jax_enable_x64", True)
        mesh = sharding.create_mesh()
        environment.announce(config.kernels, config.dtype)
        model = model_from_config(config, info.num_classes, info.image_shape[-1])
        schedule = optim.create_schedule(config, steps_per_epoch, total_steps)
        tx = optim.create_optimizer(config, schedule)
        ema_config = ema.EmaConfig.from_config(config, epoch_length,
                                               total_steps / steps_per_epoch)
        init = jax.jit(functools.partial(steps.create_train_state, model, tx, info.image_shape,
                                         with_ema=ema_config is not None),
                       out_shardings=sharding.replicated(mesh))
        return cls(config, workdir, source, jax.process_index() == 0, total_steps, mesh,
                   manager, checkpoint.describe(config, info.num_classes), schedule, ema_config,
                   init)


def _already_finished(run: _Run) -> dict | None:
    """Restores the latest checkpoint into `run`; the final eval's values if the run is over
    (evaluating again is the evaluate command's job)."""
    run.manager, run.start_step, run.state, run.sums, run.saved_rows = (
        checkpoint.restore_latest(run.workdir, run.manager, run.config.keep_checkpoints,
                                  jax.eval_shape(run.init, jax.random.PRNGKey(0)),
                                  run.description))
    if run.start_step != run.total_steps:
        return None
    finished = metrics.final_eval(run.workdir, run.total_steps)
    if finished is not None and run.is_main:
        print(f"{run.workdir} finished at step {run.total_steps} (top-1 "
              f"{finished['top1']:.4f} on {finished['count']} held-out examples): nothing to "
              f"do", flush=True)
    return None if finished is None else {**finished, "step": run.total_steps}


def _init_or_restore(run: _Run) -> None:
    """A fresh state (with init_from's weights) unless a checkpoint was restored; then the
    run's record (every refusal has happened by now) and its metrics writer."""
    config = run.config
    if run.state is None:
        run.start_step, run.state = 0, run.init(jax.random.PRNGKey(config.seed))
        if config.init_from:
            run.state, loaded = warm_start.apply(run.state, config.init_from, config.model,
                                                 sharding.replicated(run.mesh))
            if run.is_main:
                print(loaded, flush=True)
    else:
        logging.info("resumed from step %d", run.start_step)
    if run.is_main:
        records.write_config(run.workdir, config)
        records.write_class_names(run.workdir, run.info.class_names)
    run.writer = metrics.MetricWriter(run.workdir, enabled=run.is_main)
    run.writer.resume_at(run.start_step, run.saved_rows)
    end_step = run.total_steps if config.stop_after_steps <= 0 else min(
        run.total_steps, config.stop_after_steps)
    run.end_step = max(end_step, run.start_step)


def _compile_steps(run: _Run) -> None:
    """The jitted train and eval steps, compiled once; the run's opening lines."""
    config, info = run.config, run.info
    parts = trainable.from_config(config)
    run.trains = None if parts is None else trainable.mask(run.state.params, parts)
    run.train_fn, run.compile_s = steps.compile_train_step(
        run.state, run.mesh, (config.batch_size // jax.process_count(), *info.image_shape),
        config.label_smoothing, config.grad_accumulation_steps, info.pixel_normalization,
        run.trains, run.ema_config, batch_augment.BatchAugment.from_config(config),
        dropout_seed=config.seed if config.drop_path_rate > 0 or config.head_dropout > 0
        else None,
        multilabel_classes=evaluation.multilabel_classes(info))
    run.eval_fn, _ = steps.compile_eval_step(
        run.state.apply_fn, steps.variables_of(run.state), run.mesh,
        (config.eval_batch_size // jax.process_count(), *info.eval_shape),
        info.pixel_normalization, evaluation.multilabel_classes(info))
    if run.is_main:
        _announce(run)
    # after the opening lines: a bar on a terminal stays below them
    run.shown = progress.Progress(run.total_steps, run.start_step, enabled=run.is_main,
                                  bar=bool(config.progress_bar),
                                  interval_s=config.progress_interval_s)


def _announce(run: _Run) -> None:
    config, info = run.config, run.info
    where = f"{jax.device_count()} device(s)"
    if jax.process_count() > 1:
        where += f" in {jax.process_count()} processes"
    if config.grad_accumulation_steps > 1:
        where += f", {config.grad_accumulation_steps} micro-batches per step"
    print(f"{run.title}: {info.num_train} train / {info.num_eval} eval examples, batch "
          f"{config.batch_size} over {where}, steps {run.start_step}..{run.total_steps}, train "
          f"step compiled in {run.compile_s:.1f} s", flush=True)
    print(trainable.describe(run.state.params, run.trains, config.trainable if not
                             config.freeze_backbone else "head (freeze_backbone)"), flush=True)
    if info.name in ("folder", "multilabel"):
        print(f"classes: {', '.join(info.class_names[:20])}"
              f"{' ...' if len(info.class_names) > 20 else ''}; evaluating on "
              f"{info.eval_from}", flush=True)


def _train(run: _Run, stop) -> int | None:
    """Steps start_step..end_step with periodic log, eval and checkpoint; the step at which a
    signal stopped the run (saved), or None."""
    config = run.config
    batches = sharding.prefetch_to_mesh(batching.train_batches(
        run.source, config.batch_size, run.start_step, run.end_step - run.start_step,
        config.seed, jax.process_index(), jax.process_count(), config.ra_reps), run.mesh)
    state_is_finite = jax.jit(steps.all_finite)
    interval = _Interval()
    for step in range(run.start_step, run.end_step):
        wait_start = time.perf_counter()
        batch = next(batches)  # steps are dispatched asynchronously: time here is input-bound
        interval.input_wait += time.perf_counter() - wait_start
        run.state, step_sums = run.train_fn(run.state, batch)
        run.sums = metrics.accumulate(run.sums, step_sums)
        interval.steps += 1
        done = step + 1
        run.shown.update(done)
        if done % config.log_every_steps == 0 or done == run.total_steps:
            _log(run, step, interval)
            interval = _Interval()
        if (config.eval_every_steps > 0 and done % config.eval_every_steps == 0
                and done < run.total_steps):
            _evaluate_and_record(run, done)
        pruned = run.pruned_at == done
        stopping = stop.requested(done)  # every step: processes agree on where to stop
        if (done % config.checkpoint_every_steps == 0 or done == run.end_step or stopping
                or pruned):
            _save(run, done, bool(state_is_finite(run.state)))
        if pruned:
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


def _log(run: _Run, step: int, interval: _Interval) -> None:
    """The interval's metrics fetched (the loop's only host sync), checked, written, shown."""
    done = step + 1
    sums = jax.device_get(run.sums)
    _raise_if_diverged(sums, done, run.manager)
    values = metrics.means(sums)
    elapsed = time.perf_counter() - interval.start
    values["learning_rate"] = float(run.schedule(step))
    values["images_per_sec"] = interval.steps * run.config.batch_size / elapsed
    values["input_wait_fraction"] = min(interval.input_wait / elapsed, 1.0)
    run.writer.write(done, "train", values)
    run.shown.note(loss=values["loss"], lr=values["learning_rate"],
                   img_s=values["images_per_sec"])
    run.sums = None


def _save(run: _Run, step: int, state_finite: bool) -> None:
    """Checkpoints `step` if every step so far had a finite loss and gradients, and the state
    is finite (a finite update can still overflow)."""
    interval = None if run.sums is None else jax.device_get(run.sums)
    _raise_if_diverged(interval, step, run.manager, state_finite)
    checkpoint.save(run.manager, step, run.state, run.description, interval,
                    list(run.writer.rows) if run.is_main else None)


def _evaluate_and_record(run: _Run, done: int) -> tuple[dict, str | None]:
    """Every eval example once (and the EMA's, as torchvision's reference does); process 0
    writes the metrics, the report and the figures. Returns (values, report path)."""
    config, info = run.config, run.info
    values, labels, predictions = evaluation.evaluate(
        run.eval_fn, steps.variables_of(run.state), run.source, config.eval_batch_size,
        run.mesh, run.shown.is_bar)
    if run.ema_config is not None:
        averaged, _, _ = evaluation.evaluate(
            run.eval_fn, ema.averaged_variables(run.state), run.source, config.eval_batch_size,
            run.mesh, run.shown.is_bar)
        if run.is_main:
            run.writer.write(done, "eval_ema", averaged)
            run.shown.write(f"step {done}: eval (EMA) {evaluation.summary(averaged)}")
    if run.on_evaluation is not None and run.on_evaluation(done, values):
        run.pruned_at = done if done < run.total_steps else None
    if not run.is_main:
        return values, None
    run.writer.write(done, "eval", values)
    header = (f"{run.title}, step {done} of {run.total_steps}, evaluated on "
              f"{info.eval_from or 'the held-out split'}")
    report = evaluation.record(run.workdir, "", labels, predictions, values, info.class_names,
                               header, evaluation.threshold_of(config, info))
    evaluation.plot_curves(run.workdir, run.title)
    run.shown.write(f"step {done}: eval {evaluation.summary(values)}")
    return values, report


def _finish(run: _Run, wall_start: float) -> dict:
    """The final evaluation, and the run's last line."""
    result, report = _evaluate_and_record(run, run.total_steps)
    wall_s = time.perf_counter() - wall_start
    if run.is_main:
        print(f"done: wall time {wall_s:.1f} s (train-step compile {run.compile_s:.1f} s); "
              f"report: {report}, figures: {os.path.join(run.workdir, 'plots')}", flush=True)
    result.update(step=run.total_steps, wall_s=wall_s, compile_s=run.compile_s)
    return result


def _raise_if_diverged(interval: dict | None, step: int, manager,
                       state_finite: bool = True) -> None:
    """Diverged, once the pending checkpoint is written, if a step up to `step` had a loss or
    gradients that were not finite, or if the state is not (`state_finite`)."""
    nonfinite_steps = 0 if interval is None else int(interval[metrics.NONFINITE_STEPS])
    if state_finite and not nonfinite_steps:
        return
    manager.wait_until_finished()
    last_good = manager.latest_step()
    kept = (f"the last checkpoint, step {last_good}, is finite and kept" if last_good is not None
            else "no checkpoint was saved")
    loss = ("" if interval is None else
            f"; mean loss {float(interval['loss']) / float(interval['count']):.4g} since the "
            f"last log")
    if nonfinite_steps:
        first = int(interval[metrics.FIRST_NONFINITE_STEP]) + 1
        what = (f"at step {first}: the loss or gradients are not finite ({nonfinite_steps} "
                f"such step(s) up to step {step}{loss})")
    else:  # a finite update that overflowed
        what = (f"at step {step}: the parameters or statistics are not finite"
                + (f" ({loss[2:]})" if loss else ""))
    raise errors.Diverged(f"training diverged {what}; stopped without saving them, {kept}. "
                          f"Try a lower learning_rate or a warm-up")
