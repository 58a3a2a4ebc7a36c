"""Bulk export benchmark (issue 28): a whole-store ``$export`` of a running server.

    .venv/bin/python benchmarks/bulk_export.py --data-dir DIR [--push-s 20] [--json OUT]

DIR is a data directory prepared beforehand (the 1M-resource store: ``fhir-server generate
--patients 50000`` + ``fhir-server load``); with ``--patients N`` an empty DIR is filled first.
The script starts ``fhir-server serve`` (2 workers) on a copy-free DIR and measures, in one run:

1. ``raw-read``: the baseline, the same resources' stored JSON read from the SQLite file in
   this process in row order and written to an NDJSON file (no server, no checks);
2. ``export``: a system ``$export`` of every type, kick-off to manifest, alone: resources per
   second (and its ratio to ``raw-read``), and the peak growth of the worker processes' own
   resident memory (``RssAnon``, sampled every 0.2 s; with the mapped store pages too, as
   ``peak_growth_with_mapped_mb``) over what they held before; twice, the
   first (``export_first``, on a fresh server) reported apart;
3. ``push``: visit transaction Bundles of new patients from ``--connections`` connections for
   ``--push-s`` seconds: the push's p50/p99 without an export;
4. ``push+export``: the same push while another export runs: the p99 beside (3)'s, and its
   ratio (the issue: it must not double).

Every export's files are removed (DELETE of its status) once it is measured. The machine
should be otherwise idle (``uptime``); the report is a report, not a test.
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

PYTHON = sys.executable
HOST = "127.0.0.1"


def _cli(*args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([PYTHON, "-P", "-m", "fhir_server.cli", *args], check=True,
                          capture_output=True, text=True, timeout=7200,
                          env={**os.environ, **(env or {})})
    return done.stdout


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


class Server:
    """``fhir-server serve`` on DIR in its own process group, stopped at the end."""

    def __init__(self, data_dir: Path, log: Path) -> None:
        self.port = _free_port()
        self.token = _cli(  # its issuer is the server's base URL
            "token", "--scope", "system/*.cruds", "--data-dir", str(data_dir),
            env={"FHIR_SERVER_HOST": HOST, "FHIR_SERVER_PORT": str(self.port)},
        ).strip().splitlines()[-1]
        env = {**os.environ, "FHIR_SERVER_LOG_LEVEL": "warning"}
        self.process = subprocess.Popen(
            [PYTHON, "-P", "-m", "fhir_server.cli", "serve", "--host", HOST, "--port",
             str(self.port), "--data-dir", str(data_dir), "--workers", "2"],
            env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 300
        while self.request("GET", "/readyz")[0] != 200:
            assert time.monotonic() < deadline and self.process.poll() is None, "not ready"
            time.sleep(0.5)

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=600)
        try:
            conn.request(method, path, body=body, headers={
                "Authorization": f"Bearer {self.token}", **(headers or {})})
            answer = conn.getresponse()
            return answer.status, answer.read(), {k.lower(): v for k, v in answer.getheaders()}
        except OSError:
            return 0, b"", {}
        finally:
            conn.close()

    def workers(self) -> list[int]:
        """The process ids of the server's worker processes (children of its parent)."""
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(stat[1]) == self.process.pid:
                    found.append(int(entry.name))
        return found

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)


def _rss_mb(pid: int, field: str = "RssAnon") -> float:
    """A process's resident memory: ``RssAnon`` (its own: heap, stacks) by default, or
    ``VmRSS`` (also the pages of files it maps: SQLite maps up to ``mmap_size``, 256 MB, of
    the store, pages the kernel shares and reclaims)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def raw_read(data_dir: Path, out: Path) -> dict[str, Any]:
    """The baseline: every current resource's JSON read in row order and written out."""
    started = time.perf_counter()
    db = sqlite3.connect(f"file:{data_dir / 'fhir.sqlite3'}?mode=ro", uri=True)
    count = 0
    with out.open("wb") as lines:
        for (content,) in db.execute(
                "SELECT v.content FROM resources r JOIN versions v ON v.rid = r.rid "
                "AND v.version = r.version WHERE r.deleted = 0 AND r.type != 'AuditEvent' "
                "ORDER BY r.rid"):
            lines.write(content + b"\n")
            count += 1
    db.close()
    out.unlink()
    seconds = time.perf_counter() - started
    return {"resources": count, "seconds": round(seconds, 2), "per_s": round(count / seconds)}


def export(server: Server, memory: bool = True) -> dict[str, Any]:
    """A system export to its end: resources/s and the workers' peak RSS growth."""
    workers = server.workers()
    before = {(pid, f): _rss_mb(pid, f) for pid in workers for f in ("RssAnon", "VmRSS")}
    peak = dict(before)
    started = time.perf_counter()
    status, body, headers = server.request("GET", "/fhir/$export",
                                           headers={"Prefer": "respond-async"})
    assert status == 202, body[:300]
    location = "/fhir/" + headers["content-location"].split("/fhir/", 1)[1]
    while True:
        status, body, _ = server.request("GET", location)
        if status != 202:
            break
        for pid, field in peak:
            peak[pid, field] = max(peak[pid, field], _rss_mb(pid, field))
        time.sleep(0.2)
    seconds = time.perf_counter() - started
    assert status == 200, body[:300]
    count = sum(item["count"] for item in orjson.loads(body)["output"])
    server.request("DELETE", location)  # its files
    if not memory:
        return {"resources": count, "seconds": round(seconds, 2),
                "per_s": round(count / seconds)}

    def growth(field: str) -> float:
        return round(max(peak[pid, field] - before[pid, field] for pid in workers), 1)

    return {"resources": count, "seconds": round(seconds, 2), "per_s": round(count / seconds),
            "anon_before_mb": [round(before[pid, "RssAnon"]) for pid in workers],
            "peak_growth_mb": growth("RssAnon"), "peak_growth_with_mapped_mb": growth("VmRSS")}


def _bundles(folder: Path) -> Iterator[bytes]:
    for path in sorted(folder.glob("visits-*.ndjson")):
        yield from (line for line in path.read_bytes().splitlines() if line)


def push(server: Server, bundles: Iterator[bytes], seconds: float, connections: int,
         during: threading.Event | None = None) -> dict[str, Any]:
    """Push Bundles from ``connections`` threads for ``seconds`` (or while ``during`` is not
    set); return the latencies' p50/p99 in ms."""
    lock, latencies, errors = threading.Lock(), [], [0]
    deadline = time.monotonic() + seconds

    def worker() -> None:
        while time.monotonic() < deadline and not (during is not None and during.is_set()):
            with lock:
                body = next(bundles, None)
            if body is None:
                return
            started = time.perf_counter()
            status, _, _ = server.request("POST", "/fhir", body,
                                          {"Content-Type": "application/fhir+json"})
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed) if status == 200 else errors.__setitem__(
                    0, errors[0] + 1)

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return {"bundles": len(latencies), "errors": errors[0],
            "p50_ms": round(cuts[49] * 1000, 1), "p99_ms": round(cuts[98] * 1000, 1)}


def push_during_export(server: Server, bundles: Iterator[bytes], seconds: float,
                       connections: int) -> dict[str, Any]:
    """The push while an export runs (it stops when the export ends)."""
    ended = threading.Event()
    result: dict[str, Any] = {}

    def exporting() -> None:
        result["export"] = export(server, memory=False)
        ended.set()

    runner = threading.Thread(target=exporting)
    runner.start()
    result["push"] = push(server, bundles, seconds, connections, during=ended)
    runner.join()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--patients", type=int, default=0,
                        help="fill an empty data directory with this many synthetic patients")
    parser.add_argument("--push-s", type=float, default=20.0)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fhir-bulk-export-"))
    if args.patients and not (args.data_dir / "fhir.sqlite3").exists():
        _cli("generate", "--patients", str(args.patients), "--seed", "1", "--out",
             str(work / "store"))
        _cli("load", str(work / "store"), "--data-dir", str(args.data_dir), "--processes", "2")
    # New patients' visits for both pushes (at most ~200 Bundles/s for 2 x push_s).
    _cli("generate", "--patients", str(max(500, int(args.push_s * 250))), "--seed",
         str(int(time.time()) % 1_000_000), "--out", str(work / "push"))
    bundles = _bundles(work / "push")
    report: dict[str, Any] = {"load_before": os.getloadavg()[0],
                              "raw_read": raw_read(args.data_dir, work / "raw.ndjson")}
    server = Server(args.data_dir, work / "server.log")
    try:
        # The first export of a fresh server also loads what any first request loads (code,
        # caches): reported apart; the second is the measured one.
        report["export_first"] = export(server)
        report["export"] = export(server)
        report["push"] = push(server, bundles, args.push_s, args.connections)
        report["push_with_export"] = push_during_export(server, bundles, args.push_s,
                                                        args.connections)
    finally:
        server.stop()
    report["export_ratio_to_raw_read"] = round(
        report["export"]["per_s"] / report["raw_read"]["per_s"], 3)
    report["push_p99_ratio"] = round(
        report["push_with_export"]["push"]["p99_ms"] / max(report["push"]["p99_ms"], 1e-9), 2)
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    if args.json is not None:
        args.json.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
