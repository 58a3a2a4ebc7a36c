"""The C load generator: run ``wrk`` with a Lua script and parse its report into a value.

``wrk --latency`` prints the latency distribution (50/75/90/99 %) measured with HdrHistogram,
requests per second over the whole run, and counts of socket errors and non-2xx/3xx answers,
which are kept so that a fast run full of errors is not mistaken for a good one.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from machine_use import snapshot, use_between

__all__ = ["INSTALL_HINT", "WrkLoad", "WrkResult", "parse_wrk", "run_wrk", "wrk_version"]

INSTALL_HINT = "apt-get install -y wrk"

_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_PERCENTILE = re.compile(r"^\s*(50|75|90|99)(?:\.\d+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.M)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_TOTAL = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", re.M)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


@dataclass(frozen=True)
class WrkLoad:
    """How hard and how long to push: connections, threads and seconds."""

    connections: int
    threads: int
    duration_s: int
    timeout_s: int = 5


@dataclass(frozen=True)
class WrkResult:
    """What one wrk run measured; latencies in milliseconds."""

    requests: int
    requests_per_s: float
    percentiles_ms: dict[int, float]
    non_2xx: int
    socket_errors: int
    #: What the run used of the machine (``machine_use.use_between``), when a server was watched.
    use: Mapping[str, float] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        """Answers that were not 2xx/3xx plus connect, read, write and timeout errors."""
        return self.non_2xx + self.socket_errors


def wrk_version() -> str | None:
    """Return wrk's version line, or None when ``wrk`` is not on the PATH."""
    path = shutil.which("wrk")
    if path is None:
        return None
    # wrk has no --version; it prints its banner with the usage text and exits non-zero.
    out = subprocess.run([path, "-v"], capture_output=True, text=True, timeout=10, check=False)
    return (out.stdout or out.stderr).splitlines()[0].strip()


def run_wrk(
    url: str,
    script: Path,
    script_args: list[str],
    load: WrkLoad,
    headers: Sequence[str] = (),
    watch: int | None = None,
) -> WrkResult:
    """Run wrk against ``url`` with ``script`` (and extra ``Name: value`` headers).

    With ``watch`` (the server's process group), the result's ``use`` says what the run used
    of the machine: the server's CPU per request and cores, wrk's, and the other processes'.
    """
    command = [
        "wrk",
        *[part for header in headers for part in ("-H", header)],
        f"-t{min(load.threads, load.connections)}",
        f"-c{load.connections}",
        f"-d{load.duration_s}s",
        f"--timeout={load.timeout_s}s",
        "--latency",
        "-s",
        str(script),
        url,
        "--",
        *script_args,
    ]
    before = snapshot(watch) if watch is not None else None
    # wrk stops itself after duration_s; the extra margin only guards against a hang.
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=False,
        timeout=load.duration_s + load.timeout_s + 30,
    )
    if done.returncode != 0 or not _RPS.search(done.stdout):
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    result = parse_wrk(done.stdout)
    if before is None or watch is None:
        return result
    return replace(result, use=use_between(before, snapshot(watch), result.requests))


def parse_wrk(report: str) -> WrkResult:
    """Parse the text wrk prints with ``--latency`` into a ``WrkResult``."""
    rps = _RPS.search(report)
    if rps is None:
        raise ValueError("no 'Requests/sec' line in wrk output")
    percentiles = {int(p): float(v) * _UNIT_MS[u] for p, v, u in _PERCENTILE.findall(report)}
    total = _TOTAL.search(report)
    non_2xx = _NON_2XX.search(report)
    sockets = _SOCKET.search(report)
    return WrkResult(
        requests=int(total.group(1)) if total else 0,
        requests_per_s=float(rps.group(1)),
        percentiles_ms=percentiles,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in sockets.groups()) if sockets else 0,
    )
