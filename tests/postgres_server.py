"""A throwaway PostgreSQL server on 127.0.0.1 for the tests of a study shared through it.

    python tests/postgres_server.py start   # prints the URL and the cluster's directory
    python tests/postgres_server.py stop DIR

Debian's postgresql package provides the binaries (.ci/run installs them). The cluster lives in
a new directory under the system's temporary directory; as root, the server runs as the
`postgres` user (PostgreSQL refuses to run as root), which must be able to reach it.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile

URL_VARIABLE = "RESNET_JAX_TEST_POSTGRES"


def binaries() -> str | None:
    """The directory of initdb and pg_ctl, or None where PostgreSQL is not installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


def _as_server_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start() -> tuple[str, str]:
    """Creates a cluster, starts it; returns its URL (trust authentication) and directory."""
    bin_dir = binaries()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    directory = tempfile.mkdtemp(prefix="resnet-jax-postgres-", dir="/tmp")
    data = os.path.join(directory, "data")
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres")
    port = _free_port()
    subprocess.run(_as_server_user([os.path.join(bin_dir, "initdb"), "-D", data, "-A", "trust",
                                    "-U", "postgres", "--no-sync"]),
                   check=True, capture_output=True)
    subprocess.run(_as_server_user([
        os.path.join(bin_dir, "pg_ctl"), "-D", data, "-l", os.path.join(directory, "log"),
        "-w", "-o", f"-h 127.0.0.1 -p {port} -k {directory} -c fsync=off", "start"]),
        check=True, capture_output=True)
    return f"postgresql://postgres@127.0.0.1:{port}/postgres", directory


def stop(directory: str) -> None:
    """Stops the server and removes its cluster."""
    subprocess.run(_as_server_user([os.path.join(binaries(), "pg_ctl"), "-D",
                                    os.path.join(directory, "data"), "-m", "fast", "stop"]),
                   check=False, capture_output=True)
    shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1] == "start":
        print(*start())
    else:
        stop(sys.argv[2])
