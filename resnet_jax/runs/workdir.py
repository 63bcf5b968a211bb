"""A run's directory: created (or refused) before anything is written, and one writer at a time.

`claim(workdir)` creates the directory and takes WORKDIR/lock, a small JSON file naming the
holder (host, pid, start time), created with O_EXCL (atomic on local disks and NFS, so safe on
the shared filesystem of a multi-host run, where process 0 holds it for all). A second run is
refused with one line naming the holder. A lock whose holder is gone is taken over with a
warning: on the same host when its pid no longer runs, from any host when its heartbeat (the
holder touches the file every `HEARTBEAT_S`) is older than `STALE_AFTER_S`. (Two runs that
take over the same dead lock within milliseconds of each other could both succeed: taking over
is unlink + O_EXCL create, not one atomic step.)
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import sys
import threading
import time

import jax

from resnet_jax import errors

LOCK_NAME = "lock"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 600.0



class WorkdirInUse(errors.UserError):
    """Another run holds the workdir's lock."""


# What a run keeps in its workdir, by kind. One of the wrong kind (a file where the checkpoints
# go, a directory named config.json) is refused before anything is written: left alone, Orbax's
# writer threads fail on it at the first save and the process never exits.
OWNED_DIRECTORIES = ("checkpoints", "best", "plots", "damaged_checkpoints")
OWNED_FILES = ("config.json", "classes.txt", "metrics.jsonl", "report.txt", "weights.json",
               "early_stopping.json", "skipped_images.txt", LOCK_NAME)


def check_layout(workdir: str) -> None:
    """UserError naming the first path the run owns that exists with the wrong kind."""
    for name in OWNED_DIRECTORIES:
        path = os.path.join(workdir, name)
        if os.path.lexists(path) and not os.path.isdir(path):
            raise errors.UserError(f"{path} is not a directory, but this run keeps its {name} "
                                   f"there; move it away (it was left as it is) or use another "
                                   f"--workdir")
    for name in OWNED_FILES:
        path = os.path.join(workdir, name)
        if os.path.isdir(path):
            raise errors.UserError(f"{path} is a directory, but this run writes its {name} "
                                   f"file there; move it away (it was left as it is) or use "
                                   f"another --workdir")


def create(workdir: str) -> None:
    """Creates `workdir` (and its parents); StorageError in one line if it cannot be."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise errors.StorageError(f"--workdir {workdir} exists and is not a directory")
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as error:
        raise errors.StorageError(f"cannot create --workdir {workdir}: "
                                  f"{errors.describe_os_error(error)}") from None


class Lock:
    """WORKDIR/lock (or WORKDIR/`name`), held from `acquire` to `release`, kept fresh by a
    heartbeat thread."""

    def __init__(self, workdir: str, name: str = LOCK_NAME):
        self.path = os.path.join(workdir, name)
        self.workdir = workdir
        self._stop = threading.Event()
        self._thread = None
        self._record = {"host": socket.gethostname(), "pid": os.getpid(),
                        "started": datetime.datetime.now(datetime.UTC).isoformat(
                            timespec="seconds")}

    def acquire(self) -> None:
        while not self._create():
            holder, age = self._holder()
            if holder is None and age == float("inf"):
                continue  # released between the two looks: try again, nothing to take over
            if not self._is_stale(holder, age):
                raise WorkdirInUse(
                    f"{self.workdir} is in use by another run ({_describe(holder, age)}); "
                    f"wait for it to end or use another --workdir")
            print(f"warning: taking over {self.path} from a run that is gone "
                  f"({_describe(holder, age)})", file=sys.stderr, flush=True)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            if not self._create():  # another run took it over first
                holder, age = self._holder()
                raise WorkdirInUse(f"{self.workdir} is in use by another run "
                                   f"({_describe(holder, age)})")
            break
        self._thread = threading.Thread(target=self._heartbeat, daemon=True,
                                        name="workdir-lock-heartbeat")
        self._thread.start()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        holder, _ = self._holder()
        if holder == self._record:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def _create(self) -> bool:
        """Creates the lock file with this holder's record; False if it exists."""
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        except OSError as error:
            raise errors.StorageError(f"cannot write to --workdir {self.workdir}: "
                                      f"{errors.describe_os_error(error)}") from None
        with os.fdopen(fd, "w") as f:
            json.dump(self._record, f)
        return True

    def _holder(self) -> tuple[dict | None, float]:
        """The holder's record (None if unreadable, e.g. torn by a crash) and its heartbeat age."""
        try:
            age = time.time() - os.stat(self.path).st_mtime
            with open(self.path) as f:
                return json.load(f), age
        except FileNotFoundError:
            return None, float("inf")
        except (OSError, ValueError):
            return None, age

    def _is_stale(self, holder: dict | None, age: float) -> bool:
        if age > STALE_AFTER_S:
            return True
        if holder is None:  # unreadable: a crash while writing it, or someone else's file
            return age > 2 * HEARTBEAT_S
        return holder.get("host") == socket.gethostname() and not _running(holder.get("pid"))

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):
                os.utime(self.path)


def _running(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError):
        return True  # another user's process, or a record we cannot read: assume it runs
    return True


def _describe(holder: dict | None, age: float) -> str:
    if holder is None:
        return "holder unknown: the lock file is unreadable"
    return (f"pid {holder.get('pid')} on host {holder.get('host')}, started "
            f"{holder.get('started')}, alive {age:.0f} s ago")


@contextlib.contextmanager
def claim(workdir: str):
    """Creates `workdir` and holds its lock for the duration (process 0 of a multi-process run
    holds it for all). Every process raises the same kind of error if process 0 could not."""
    lock, failure = None, None
    try:
        create(workdir)
        check_layout(workdir)
        if jax.process_index() == 0:
            lock = Lock(workdir)
            lock.acquire()
    except errors.ReportedError as error:
        failure = error
    status = agree(failure.exit_status if failure else 0)
    if failure is not None:
        raise failure
    if status:
        raise _ERRORS[status](f"process 0 could not start the run in {workdir}: see its error")
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


_ERRORS = {errors.UserError.exit_status: WorkdirInUse,
           errors.StorageError.exit_status: errors.StorageError}


def agree(status: int) -> int:
    """Process 0's integer (a status, a choice), on every process (no-op with one process)."""
    if jax.process_count() == 1:
        return status
    import numpy as np
    from jax.experimental import multihost_utils
    return int(multihost_utils.broadcast_one_to_all(np.int32(status)))
