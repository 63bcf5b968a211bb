"""SIGTERM, SIGINT and SIGHUP as a request to stop after a step, at the same step in every
process.

SIGTERM is what SLURM, Kubernetes and Cloud TPU maintenance send before they kill a job; SIGINT
is Ctrl-C; SIGHUP is the terminal closing under a run (which otherwise dies without a word).
Each one asks the loop to finish its current step, save a checkpoint there and
exit with `errors.Interrupted`'s status; a second SIGINT exits at once, without saving.

One process: a Python handler sets a flag, which the loop reads after each step (no sync).
Several processes: a notice may reach one host only, and all must save the same step. JAX's
coordination service does exactly this (`multihost_utils.reached_preemption_sync_point`, which
Orbax uses too): its own SIGTERM handler tells the other processes, they agree on the step
after the furthest one any process has reached, and the call returns True there, everywhere.
So with several processes SIGTERM is left to JAX's handler, and SIGINT and SIGHUP are forwarded
to it.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

import jax

from resnet_jax import errors


class StopSignals:
    """Within `with StopSignals() as stop:`, `stop.requested(step)` says whether to stop after
    `step`. With several processes it must be called after every step, by every process."""

    def __init__(self):
        self.received: str | None = None  # the first signal's name
        self._multiprocess = jax.process_count() > 1
        self._previous = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            return self  # signals reach the main thread only; a run in a thread has no handlers
        handled = [signal.SIGINT, signal.SIGHUP] + ([] if self._multiprocess
                                                    else [signal.SIGTERM])
        for signum in handled:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.received is not None:
            if signum == signal.SIGINT:
                print(f"\n{name} again: exiting now, without saving", file=sys.stderr,
                      flush=True)
                os._exit(errors.INTERRUPTED_TWICE)
            return  # a scheduler's repeated SIGTERM: already stopping
        self.received = name
        if signum == signal.SIGINT:
            print(f"\n{name}: stopping after this step and saving a checkpoint (Ctrl-C again "
                  f"to exit at once, without saving)", file=sys.stderr, flush=True)
        if self._multiprocess:
            os.kill(os.getpid(), signal.SIGTERM)  # to JAX's handler: every process stops

    def requested(self, step: int) -> bool:
        if self._multiprocess:
            from jax.experimental import multihost_utils
            stop = multihost_utils.reached_preemption_sync_point(step)
            if stop and self.received is None:
                self.received = "SIGTERM"  # reached this process through JAX's service
            return stop
        return self.received is not None
