"""Joining JAX's multi-controller runtime: one process per host (or per GPU), all alike.

Three ways a run becomes multi-process:
- explicit flags (`--coordinator_address HOST:PORT --num_processes N --process_id I`), e.g. several
  processes on one machine or a cluster without a scheduler JAX knows;
- a cluster JAX detects itself (SLURM, Open MPI, Cloud TPU pod slices): `jax.distributed.
  initialize()` with no arguments;
- neither: a single process, nothing to join.

With explicit flags every process first meets the others in a small TCP rendezvous at the
coordinator's address. JAX's own handshake aborts the interpreter on a timeout (a C++ fatal error
and a stack trace); the rendezvous turns the usual mistakes (coordinator not running, a process
missing, two processes with the same id, different process counts) into one-line errors within
`timeout_s`, before JAX binds the port.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time

import jax

from resnet_jax.errors import UserError

_HELLO = b"resnet-jax rendezvous v1"


class LaunchError(RuntimeError):
    """The processes could not be brought together; the message says which and why."""


def parse_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--coordinator_address must be HOST:PORT (e.g. 10.0.0.1:1234), "
                         f"got {address!r}")
    return host.strip("[]"), int(port)


def check_process_flags(coordinator_address, num_processes, process_id) -> bool:
    """Whether the flags ask for an explicit multi-process run; UserError if they are
    incomplete or out of range."""
    given = {"--coordinator_address": coordinator_address, "--num_processes": num_processes,
             "--process_id": process_id}
    missing = [name for name, value in given.items() if value is None]
    if len(missing) == len(given):
        return False
    if missing:
        raise UserError(f"{', '.join(missing)} missing: --coordinator_address, --num_processes "
                         f"and --process_id go together")
    parse_address(coordinator_address)
    if num_processes < 1:
        raise UserError(f"--num_processes must be >= 1, got {num_processes}")
    if not 0 <= process_id < num_processes:
        raise UserError(f"--process_id must be in [0, {num_processes - 1}] for "
                         f"--num_processes={num_processes}, got {process_id}")
    return True


def detected_cluster(environ=os.environ) -> str | None:
    """The multi-process cluster JAX can configure itself from this environment, if any.

    Only launches of more than one process count: a shell inside a SLURM allocation, or a
    one-task `srun`, is a single process (SLURM_STEP_NUM_TASKS is set by `srun` for its tasks).
    """
    if int(environ.get("SLURM_STEP_NUM_TASKS", "1")) > 1:
        return "SLURM"
    if int(environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
        return "Open MPI"
    if len([h for h in environ.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1:
        return "Cloud TPU pod slice"
    return None


def _recv_line(conn: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(256)
        if not chunk:
            break
        data += chunk
    return data.strip()


def _coordinate(port: int, num_processes: int, timeout_s: float) -> None:
    """Process 0: wait for processes 1..N-1 to say hello, check them, release them together."""
    deadline = time.monotonic() + timeout_s
    try:
        server = socket.create_server(("", port))
    except OSError as error:
        raise LaunchError(f"process 0 cannot listen on port {port} ({error.strerror}); is "
                          f"another run using it? pick another --coordinator_address port") \
            from None
    peers = {}

    def release(message: str, *others: socket.socket) -> None:
        conns = (*peers.values(), *others)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.sendall(message.encode() + b"\n")
        for conn in conns:  # the peers hang up first, so the port is free again for JAX
            with contextlib.suppress(OSError):
                conn.settimeout(5)
                conn.recv(1)
            conn.close()

    with server:
        while len(peers) < num_processes - 1:
            server.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                conn, _ = server.accept()
            except TimeoutError:
                missing = sorted(set(range(1, num_processes)) - set(peers))
                problem = (f"only {len(peers) + 1} of {num_processes} processes joined within "
                           f"{timeout_s:g} s; missing process id(s) {missing}")
                release(f"error {problem}")
                raise LaunchError(problem) from None
            conn.settimeout(10)
            try:
                hello, _, fields = _recv_line(conn).rpartition(b" ")
                their_id, their_count = (int(v) for v in fields.split(b"/"))
            except (OSError, ValueError):
                hello = None
            if hello != _HELLO:
                conn.close()  # not one of ours (a port scanner, another program): ignore it
                continue
            problem = None
            if their_count != num_processes:
                problem = (f"process {their_id} was started with --num_processes={their_count}, "
                           f"process 0 with {num_processes}")
            elif their_id in peers or their_id == 0:
                problem = f"two processes were started with --process_id={their_id}"
            if problem:
                release(f"error {problem}", conn)
                raise LaunchError(problem)
            peers[their_id] = conn
        release("go")


def _join(host: str, port: int, process_id: int, num_processes: int, timeout_s: float) -> None:
    """Processes 1..N-1: reach the coordinator (retrying until `timeout_s`), wait for 'go'."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            conn = socket.create_connection((host, port), timeout=1.0)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise LaunchError(
                    f"process {process_id} could not reach the coordinator at {host}:{port} "
                    f"within {timeout_s:g} s; is process 0 running there, and the port "
                    f"open?") from None
            time.sleep(0.25)
    with conn:
        conn.sendall(_HELLO + f" {process_id}/{num_processes}\n".encode())
        conn.settimeout(max(deadline - time.monotonic(), 1.0) + 5.0)
        try:
            reply = _recv_line(conn)
        except TimeoutError:
            reply = b"error the coordinator did not release the processes in time"
    if reply != b"go":
        reason = reply.removeprefix(b"error ").decode() or "the coordinator went away"
        raise LaunchError(f"process {process_id}: {reason}")


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, timeout_s: float = 60.0) -> str:
    """Joins the multi-process runtime if this run is one; returns how ("single process",
    "explicit", or the detected cluster's name). Call before any other JAX use."""
    if check_process_flags(coordinator_address, num_processes, process_id):
        if num_processes > 1:
            host, port = parse_address(coordinator_address)
            if process_id == 0:
                _coordinate(port, num_processes, timeout_s)
            else:
                _join(host, port, process_id, num_processes, timeout_s)
        jax.distributed.initialize(coordinator_address, num_processes, process_id,
                                   initialization_timeout=max(int(timeout_s), 1))
        return "explicit"
    cluster = detected_cluster()
    if cluster is None:
        return "single process"
    jax.distributed.initialize(initialization_timeout=max(int(timeout_s), 1))
    return cluster
