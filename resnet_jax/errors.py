"""What can stop a run other than a bug, and how the command-line tools report it.

Each kind is one exception class with its own exit status; `reported` turns exactly these into
one line on stderr and that status. Anything else is a bug in this package and surfaces as a
traceback (exit status 1).

| status | class         | what happened                                                     |
|--------|---------------|-------------------------------------------------------------------|
| 0      |               | finished (or already finished: nothing to do)                     |
| 1      |               | a bug: Python's traceback                                         |
| 2      | `UserError`   | a mistake in what the user gave: config, flags, data, weights, a  |
|        |               | workdir of another run or held by another run                     |
| 3      | `Interrupted` | SIGTERM / SIGINT / SIGHUP: a checkpoint was saved; run the same   |
|        |               | command                                                           |
| 4      | `Diverged`    | non-finite loss or gradients: stopped, nothing non-finite saved   |
| 5      | `StorageError`| the workdir cannot be written (disk full, read-only, not a        |
|        |               | directory) or holds no checkpoint that can be read                |
| 130    |               | a second Ctrl-C: exited at once, without saving                   |
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import sys
import threading
import traceback

INTERRUPTED_TWICE = 130  # the shell's status for a process ended by SIGINT


class ReportedError(Exception):
    """An error that is reported as one line and an exit status, without a traceback."""
    exit_status = 1
    prefix = "error: "


class UserError(ReportedError, ValueError):
    """A mistake in what the user gave us; the message says what is wrong and how to fix it."""
    exit_status = 2


class Interrupted(ReportedError):
    """The run was asked to stop (SIGTERM, SIGINT) and saved a checkpoint; not an error."""
    exit_status = 3
    prefix = ""


class Diverged(ReportedError):
    """The loss or the gradients became non-finite; nothing non-finite was saved."""
    exit_status = 4


class StorageError(ReportedError, OSError):
    """The workdir cannot be written, or what is in it cannot be read."""
    exit_status = 5


# OSError numbers that describe the storage, not this program: a full disk, a read-only mount,
# a path that is not a directory, no permission.
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                  errno.ENOTDIR, errno.EFBIG}


def storage_cause(error: BaseException) -> OSError | None:
    """The OSError about the storage in `error`'s chain of causes, or None. Orbax wraps them;
    TensorStore (Orbax's writer) raises ValueError("... local file "PATH" ...
    [os_error_code='28']"), read here as the OSError it stands for."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in STORAGE_ERRNOS:
            return error
        code = re.search(r"\[os_error_code='(\d+)'\]", str(error))
        if code and int(code.group(1)) in STORAGE_ERRNOS:
            path = re.search(r'local file "([^"]+)"', str(error))
            number = int(code.group(1))
            return OSError(number, os.strerror(number), path.group(1) if path else None)
        error = error.__cause__ or error.__context__
    return None


def describe_os_error(error: OSError) -> str:
    """'No space left on device: /path' from an OSError, whichever of its fields are set."""
    reason = error.strerror or str(error)
    return f"{reason}: {error.filename}" if error.filename else reason


# How long a command that stopped on an error may wait for background threads at exit.
EXIT_GRACE_S = 30.0


@contextlib.contextmanager
def reported():
    """One line on stderr and the error's exit status for a `ReportedError`, and for an
    error caused by the storage (`storage_cause`): exit status 5. Nothing else is caught."""
    try:
        yield
    except ReportedError as error:
        print(f"{error.prefix}{error}", file=sys.stderr, flush=True)
        _release_frames(error)
        sys.exit(error.exit_status)
    except Exception as error:  # a full disk, a read-only mount... wherever it surfaced
        cause = storage_cause(error)
        if cause is None:
            raise
        print(f"error: {describe_os_error(cause)}{_STORAGE_HINTS.get(cause.errno, '')}",
              file=sys.stderr, flush=True)
        _release_frames(error)
        sys.exit(StorageError.exit_status)


def _release_frames(error: BaseException) -> None:
    """Drops the locals of the finished frames the error passed through, so that what they held
    (a tf.data iterator over a Python generator, say) is finalised now, while the interpreter
    runs, not at its shutdown (where TensorFlow logs that it could not)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        traceback.clear_frames(error.__traceback__)  # frames still running are skipped
        error = error.__cause__ or error.__context__


def exit_within(seconds: float, status: int) -> None:
    """Ends the process with `status` after `seconds` unless it has exited by then (a daemon
    timer: it runs while shutdown waits on other threads, and dies with a clean exit). For a
    command that stopped on an error: after a failed save, Orbax's writer threads can keep
    interpreter shutdown waiting forever. Only where the process is about to exit."""
    def force():
        print(f"(exiting: background threads were still running {seconds:.0f} s after the "
              f"error above)", file=sys.stderr, flush=True)
        os._exit(status)

    timer = threading.Timer(seconds, force)
    timer.daemon = True
    timer.start()


_STORAGE_HINTS = {
    errno.ENOSPC: "; free some space and run the same command to continue from the last "
                  "checkpoint",
    errno.EDQUOT: "; free some space (disk quota) and run the same command to continue",
    errno.EROFS: "; use a --workdir on a writable filesystem",
}
