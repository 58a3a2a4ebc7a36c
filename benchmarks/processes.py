"""Servers under test as child processes: a free loopback port, readiness, and a sure stop.

Each server runs in its own session (process group) so that stopping it also stops the worker
processes uvicorn spawns; only groups started here are ever signalled. Output goes to a log file
(never a pipe nobody reads, which would block the server once the pipe buffer fills).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LOOPBACK", "RunningServer", "free_port", "running_server"]

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class RunningServer:
    """A started server: where it listens and where its log goes."""

    name: str
    base_url: str
    pid: int
    log_path: Path


def free_port() -> int:
    """Return a TCP port on the loopback interface that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def running_server(
    name: str,
    command: Sequence[str],
    *,
    port: int,
    ready_path: str,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    ready_timeout_s: float = 60.0,
) -> Iterator[RunningServer]:
    """Start ``command``, wait until ``ready_path`` answers 200, yield, then stop it.

    Raises RuntimeError (with the tail of the log) when the server exits or is not ready in time.
    """
    base_url = f"http://{LOOPBACK}:{port}"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            list(command),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env or os.environ),
            cwd=cwd,
            start_new_session=True,
        )
    try:
        _wait_ready(process, base_url + ready_path, ready_timeout_s, log_path)
        yield RunningServer(name, base_url, process.pid, log_path)
    finally:
        _stop(process)


def _wait_ready(
    process: subprocess.Popen[bytes], url: str, timeout_s: float, log_path: Path
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{_tail(log_path)}")
        with (
            contextlib.suppress(urllib.error.URLError, OSError),
            urllib.request.urlopen(url, timeout=2) as answer,
        ):
            if answer.status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout_s:.0f} s:\n{_tail(log_path)}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group, then SIGKILL whatever of it lingers."""
    for sig, grace_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            continue
        if _group_gone(process.pid, grace_s):
            return


def _group_gone(pgid: int, timeout_s: float) -> bool:
    """Wait for the workers of a group whose leader has exited; True once none is left."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def _tail(log_path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
