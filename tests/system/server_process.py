"""Start and stop real ``fhir-server serve`` processes for system tests (loopback only)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

__all__ = ["ServerProcess", "free_port"]


def free_port() -> int:
    """Return a free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """A server subprocess on a loopback port with its own data directory."""

    def __init__(self, data_dir: Path, workers: int = 1, port: int | None = None,
                 log_path: Path | None = None, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.workers = workers
        self.port = port or free_port()
        #: Where stderr goes, at log level info; without it, stderr is dropped (level warning).
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        #: Extra environment of the server (FHIR_SERVER_* settings).
        self.env = env or {}

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def headers(self, scope: str = "system/*.cruds") -> dict[str, str]:
        """Authorization (and content type) headers with a token of this server's key."""
        from fhir_server.security.keys import load_server_key
        from fhir_server.security.tokens import mint_access_token

        audience = f"{self.base}/fhir"
        token = mint_access_token(
            load_server_key(self.data_dir),
            issuer=audience,
            audience=audience,
            subject="system-test",
            scope=scope,
        )
        return {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}

    def start(self, timeout: float = 30.0) -> None:
        level = "info" if self.log_path is not None else "warning"
        env = {**os.environ, "FHIR_SERVER_LOG_LEVEL": level, **self.env}
        stderr = self.log_path.open("ab") if self.log_path is not None else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fhir_server.cli",
                "serve",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
                "--workers",
                str(self.workers),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
        if self.log_path is not None:
            stderr.close()  # type: ignore[union-attr]  # the child has its own descriptor
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None:
                raise RuntimeError("server exited during start-up")
            time.sleep(0.1)
        self.kill()
        raise RuntimeError("server did not become ready")

    def kill(self) -> None:
        """SIGKILL the whole process group (the master and its workers)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        """SIGTERM and wait (graceful shutdown)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None
