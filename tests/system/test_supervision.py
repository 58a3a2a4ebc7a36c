"""A supervisor killed with ``kill -9`` takes its workers with it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from pathlib import Path

import pytest

from tests.system.server_process import ServerProcess


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.extend(int(child) for child in text)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_workers_end_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", workers=2)
    server.start()
    assert server.process is not None
    supervisor = server.process.pid
    try:
        workers = [child for child in _children(supervisor) if _alive(child)]
        assert len(workers) >= 2  # the spawned workers (and uvicorn's resource tracker)
        os.kill(supervisor, signal.SIGKILL)  # the supervisor only, not its process group
        server.process.wait(timeout=10)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.1)
        assert not any(_alive(w) for w in workers)
        with socket.socket() as sock:  # the port is free for a restart
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", server.port))
    finally:
        with contextlib.suppress(ProcessLookupError):  # anything left of the group
            os.killpg(supervisor, signal.SIGKILL)
        server.process = None
