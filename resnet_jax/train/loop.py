"""The training loop, `train_and_evaluate`: data, model, init or resume, steps, evals, checkpoints.

The loop reads top to bottom: check the config, build data and model, init or restore, then
`for step in range(start, total)` with periodic log / eval / checkpoint. One jitted, pure
`train_step` with explicit shardings over the device mesh; metrics stay on the device and are
fetched only every `log_every_steps`.
"""

from __future__ import annotations

import contextlib
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
    warm_start,
)
from resnet_jax.train import workdir as workdir_lib
from resnet_jax.train.config import model_from_config, validate_config


def _setup_compilation_cache(path: str) -> None:
    if path:
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser(path))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def train_and_evaluate(config, workdir: str) -> dict:
    """Trains `config` in `workdir`, resuming from its latest checkpoint; returns eval metrics.

    Stops early, with a checkpoint, on SIGTERM/SIGINT/SIGHUP (`errors.Interrupted`) and,
    without saving anything non-finite, when the loss or gradients stop being finite
    (`errors.Diverged`). A signal while the data is listed stops before the workdir is touched.
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
                return _train_and_evaluate(config, workdir, source, stop, wall_start)


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


def _train_and_evaluate(config, workdir, source, stop, wall_start) -> dict:
    is_main = jax.process_index() == 0
    info = source.info
    epoch_length = batching.epoch_length(info.num_train, config.ra_reps)
    steps_per_epoch = epoch_length / config.batch_size
    total_steps = (config.num_train_steps if config.num_train_steps > 0
                   else math.ceil(config.num_epochs * steps_per_epoch))

    manager = checkpoint.create_manager(workdir, config.keep_checkpoints)
    description = checkpoint.describe(config, info.num_classes)
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
    rng = jax.random.PRNGKey(config.seed)
    manager, start_step, state, sums, saved_rows = checkpoint.restore_latest(
        workdir, manager, config.keep_checkpoints, jax.eval_shape(init, rng), description)
    if start_step == total_steps:
        finished = metrics.final_eval(workdir, total_steps)
        if finished is not None:  # evaluating again is the evaluate command's job
            if is_main:
                print(f"{workdir} finished at step {total_steps} (top-1 {finished['top1']:.4f} "
                      f"on {finished['count']} held-out examples): nothing to do", flush=True)
            return {**finished, "step": total_steps}
    if state is None:
        start_step, state = 0, init(rng)
        if config.init_from:
            state, loaded = warm_start.apply(state, config.init_from, config.model,
                                             sharding.replicated(mesh))
            if is_main:
                print(loaded, flush=True)
    else:
        logging.info("resumed from step %d", start_step)
    # Every refusal (config, data, init_from, checkpoints of another run) has happened: the run
    # starts, and its record is written.
    if is_main:
        records.write_config(workdir, config)
        records.write_class_names(workdir, info.class_names)

    writer = metrics.MetricWriter(workdir, enabled=is_main)
    writer.resume_at(start_step, saved_rows)
    local_batch = config.batch_size // jax.process_count()
    train_fn, compile_s = steps.compile_train_step(
        state, mesh, (local_batch, *info.image_shape), config.label_smoothing,
        config.grad_accumulation_steps, info.pixel_normalization, config.freeze_backbone,
        ema_config, batch_augment.BatchAugment.from_config(config),
        dropout_seed=config.seed if config.drop_path_rate > 0 else None)
    eval_fn, _ = steps.compile_eval_step(
        state.apply_fn, steps.variables_of(state), mesh,
        (config.eval_batch_size // jax.process_count(), *info.eval_shape),
        info.pixel_normalization)
    if is_main:
        where = f"{jax.device_count()} device(s)"
        if jax.process_count() > 1:
            where += f" in {jax.process_count()} processes"
        if config.grad_accumulation_steps > 1:
            where += f", {config.grad_accumulation_steps} micro-batches per step"
        print(f"{config.model} on {info.name}: {info.num_train} train / {info.num_eval} eval "
              f"examples, batch {config.batch_size} over {where}, steps {start_step}.."
              f"{total_steps}, train step compiled in {compile_s:.1f} s", flush=True)
        if info.name == "folder":
            print(f"classes: {', '.join(info.class_names[:20])}"
                  f"{' ...' if len(info.class_names) > 20 else ''}; evaluating on "
                  f"{info.eval_from}", flush=True)

    end_step = total_steps if config.stop_after_steps <= 0 else min(total_steps,
                                                                     config.stop_after_steps)
    end_step = max(end_step, start_step)
    batches = batching.train_batches(source, config.batch_size, start_step,
                                     end_step - start_step, config.seed, jax.process_index(),
                                     jax.process_count(), config.ra_reps)
    batches = sharding.prefetch_to_mesh(batches, mesh)
    shown = progress.Progress(total_steps, start_step, enabled=is_main,
                              bar=bool(config.progress_bar), interval_s=config.progress_interval_s)
    title = f"{config.model} on {info.name}"

    def evaluate_and_record(done):
        values, labels, predictions = evaluation.evaluate(
            eval_fn, steps.variables_of(state), source, config.eval_batch_size, mesh, shown.is_bar)
        if ema_config is not None:  # the averaged model too, as torchvision's reference does
            averaged, _, _ = evaluation.evaluate(eval_fn, ema.averaged_variables(state), source,
                                                 config.eval_batch_size, mesh, shown.is_bar)
            if is_main:
                writer.write(done, "eval_ema", averaged)
                shown.write(f"step {done}: eval (EMA) {evaluation.summary(averaged)}")
        if is_main:
            writer.write(done, "eval", values)
            header = (f"{title}, step {done} of {total_steps}, evaluated on "
                      f"{info.eval_from or 'the held-out split'}")
            report = evaluation.record(workdir, "", labels, predictions, values,
                                       info.class_names, header)
            evaluation.plot_curves(workdir, title)
            shown.write(f"step {done}: eval {evaluation.summary(values)}")
            return values, report
        return values, None

    state_is_finite = jax.jit(steps.all_finite)

    def save(step):
        """Checkpoints `step` if every step so far had a finite loss and gradients, and the
        state is finite (a finite update can still overflow)."""
        interval = None if sums is None else jax.device_get(sums)
        _raise_if_diverged(interval, step, manager, bool(state_is_finite(state)))
        checkpoint.save(manager, step, state, description, interval,
                        list(writer.rows) if is_main else None)

    interval_start, interval_steps, input_wait = time.perf_counter(), 0, 0.0
    stopping = False
    for step in range(start_step, end_step):
        wait_start = time.perf_counter()
        batch = next(batches)  # steps are dispatched asynchronously: time here is input-bound
        input_wait += time.perf_counter() - wait_start
        state, step_sums = train_fn(state, batch)
        sums = metrics.accumulate(sums, step_sums)
        interval_steps += 1
        done = step + 1
        shown.update(done)
        if done % config.log_every_steps == 0 or done == total_steps:
            interval = jax.device_get(sums)  # the only host sync in the loop
            _raise_if_diverged(interval, done, manager)
            values = metrics.means(interval)
            elapsed = time.perf_counter() - interval_start
            values["learning_rate"] = float(schedule(step))
            values["images_per_sec"] = interval_steps * config.batch_size / elapsed
            values["input_wait_fraction"] = min(input_wait / elapsed, 1.0)
            writer.write(done, "train", values)
            shown.note(loss=values["loss"], lr=values["learning_rate"],
                       img_s=values["images_per_sec"])
            sums, interval_start, interval_steps, input_wait = (None, time.perf_counter(),
                                                                0, 0.0)
        if (config.eval_every_steps > 0 and done % config.eval_every_steps == 0
                and done < total_steps):
            evaluate_and_record(done)
        stopping = stop.requested(done)  # every step: processes agree on where to stop
        if done % config.checkpoint_every_steps == 0 or done == end_step or stopping:
            save(done)
        if stopping:
            break
    shown.close()
    manager.wait_until_finished()
    if stopping:
        raise errors.Interrupted(
            f"{stop.received}: stopped at step {done} of {total_steps}, checkpoint saved in "
            f"{os.path.join(workdir, 'checkpoints', str(done))}; run the same command to "
            f"continue")

    if end_step < total_steps:
        if is_main:
            print(f"stopped at step {end_step} of {total_steps} (stop_after_steps); run the "
                  f"same command again to continue", flush=True)
        return {"step": end_step}

    eval_result, report = evaluate_and_record(total_steps)
    wall_s = time.perf_counter() - wall_start
    if is_main:
        print(f"done: wall time {wall_s:.1f} s (train-step compile {compile_s:.1f} s); "
              f"report: {report}, figures: {os.path.join(workdir, 'plots')}", flush=True)
    eval_result.update(step=total_steps, wall_s=wall_s, compile_s=compile_s)
    return eval_result


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
