"""The search study's journal file: Optuna's append-only log of operations, one JSON record a
line, made to survive its own writer's crash.

A record is cut short when its writer dies mid-write (kill -9, a power cut) or the disk fills
during the write. Optuna's reader skips a last line without its newline, but the next append
would extend it into one unreadable line, and the study could no longer be opened. Here:

- at open, the file is checked under the journal's lock: a torn *last* record (no newline, or
  not a JSON record) is set aside: its bytes are appended to `<journal>.torn`, the journal is
  cut back to its last whole record, and a warning says so; the study goes on from there (the
  torn write never completed, so nothing else refers to it);
- every append first looks at the file's last byte and sets a torn tail aside the same way, so
  an append never extends a torn line (another worker may have died mid-write meanwhile);
- an append that fails (a full disk) cuts the file back to where it was before raising, so
  the same command continues once space is freed;
- other damage (a bad record that is not the last, an unknown operation, a directory in the
  file's place) is one line, and the file is left as it is for its owner to look at.
"""

from __future__ import annotations

import json
import os

from resnet_jax import errors

TORN_SUFFIX = ".torn"
_TAIL_CHUNK = 1 << 16


def backend(path: str, say=print):
    """Optuna's journal file backend for `path`, checked (and a torn tail set aside) first."""
    from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

    if os.path.isdir(path):
        raise errors.UserError(f"{path} is a directory, not a study journal: move it away or "
                               f"give another --workdir")

    class TornTolerantBackend(JournalFileBackend):
        def append_logs(self, logs):
            lock.acquire()
            try:
                _set_aside_torn_tail(path, say)
                size = os.path.getsize(path)
                text = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs)
                try:
                    with open(path, "ab") as f:
                        f.write(text.encode("utf-8"))
                        f.flush()
                        os.fsync(f.fileno())
                except OSError:
                    _cut(path, size)  # no torn record left behind (a full disk)
                    raise
            finally:
                lock.release()

    lock = JournalFileSymlinkLock(path)
    if os.path.exists(path):
        lock.acquire()
        try:
            check(path, say)
        finally:
            lock.release()
    return TornTolerantBackend(path, lock_obj=lock)


def check(path: str, say=print) -> None:
    """Reads every record of the journal at `path`: sets a torn last record aside; any other
    damage is a UserError naming the line, with the file untouched."""
    from optuna.storages.journal._storage import JournalOperation

    operations = {int(op) for op in JournalOperation}
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as error:
        raise errors.StorageError(f"cannot read the study journal {path}: {error.strerror}") \
            from None
    offset = 0
    lines = data.split(b"\n")
    for number, line in enumerate(lines[:-1], start=1):  # the last piece has no newline
        problem = _problem(line, operations)
        if problem is not None:
            if number == len(lines) - 1 and lines[-1] == b"":  # the last line: a torn write
                break
            raise errors.UserError(
                f"{path}, line {number}: {problem}; this is not damage a crash leaves, so the "
                f"file is left as it is: move it away to start a new study, or restore it")
        offset += len(line) + 1
    if offset < len(data):
        _set_aside(path, offset, data[offset:], say)


def records(path: str) -> list[dict]:
    """The journal's whole JSON records as they are now, read without its lock: a line being
    written (or torn, or damaged) is left out, for `check` to deal with under the lock."""
    found = []
    with open(path, "rb") as f:
        for line in f.read().split(b"\n")[:-1]:
            try:
                record = json.loads(line)
            except (UnicodeDecodeError, json.JSONDecodeError):
                continue
            if isinstance(record, dict):
                found.append(record)
    return found


def _problem(line: bytes, operations: set) -> str | None:
    try:
        record = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return "not a JSON record"
    if not isinstance(record, dict) or "op_code" not in record or "worker_id" not in record:
        return "not an Optuna journal record"
    if record["op_code"] not in operations:
        return f"an unknown operation ({record['op_code']!r}) for this Optuna"
    return None


def _set_aside_torn_tail(path: str, say) -> None:
    """Sets aside the bytes after the last newline, if any (the file's only possible torn
    record, since every append goes through here)."""
    size = os.path.getsize(path)
    if size == 0:
        return
    with open(path, "rb") as f:
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        end = size
        while True:
            start = max(0, end - _TAIL_CHUNK)
            f.seek(start)
            chunk = f.read(end - start)
            cut = chunk.rfind(b"\n")
            if cut >= 0 or start == 0:
                offset = start + cut + 1  # 0 when the file holds no newline at all
                break
            end = start
        f.seek(offset)
        tail = f.read()
    _set_aside(path, offset, tail, say)


def _set_aside(path: str, offset: int, tail: bytes, say) -> None:
    with open(path + TORN_SUFFIX, "ab") as f:
        f.write(tail + b"\n")
        f.flush()
        os.fsync(f.fileno())
    _cut(path, offset)
    say(f"warning: the last record of {path} was cut short (a crash or a full disk while it "
        f"was written): its {len(tail)} bytes were moved to {path}{TORN_SUFFIX}; the study goes "
        f"on from the record before")


def _cut(path: str, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)
        f.flush()
        os.fsync(f.fileno())
