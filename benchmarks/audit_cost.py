"""What auditing every read costs (issue 6): server CPU per read, with and without auditing.

    .venv/bin/python benchmarks/audit_cost.py [--rounds 2] [--duration 10]

The read benchmark of ``run.py`` compares throughput, which on a 2-core machine that also runs
wrk moves by 10-20 % from run to run. This measures the cost directly: it starts a one-worker
server on one data directory with ``FHIR_SERVER_AUDIT=true`` and ``false`` in turn (``--rounds``
times each, alternating), warms it up, drives the same random reads with wrk, and reads the
worker's user and system CPU time from ``/proc/<pid>/stat`` around the measured run. The
ratio of CPU per read without and with auditing is the throughput ratio a CPU-bound server
would show. Minor page faults per read are reported too: SQLite drops its memory map of the
database when another connection has committed, so audit batches make readers fault pages in
again (docs/performance.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import WrkLoad, run_wrk
from processes import LOOPBACK, free_port, running_server
from scenarios import LUA_DIR, seed_patients

_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> tuple[float, float, int]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / _TICK, int(fields[12]) / _TICK, int(fields[7])  # utime, stime, minflt


def _token(data_dir: Path, base: str) -> str:
    from fhir_server.security.keys import load_server_key
    from fhir_server.security.tokens import mint_access_token

    return mint_access_token(load_server_key(data_dir), issuer=base, audience=base,
                             subject="benchmark", scope="system/*.cruds", ttl=7200)


def _measure(data_dir: Path, ids: Path | None, audit: bool, duration: int) -> tuple[float, ...]:
    port = free_port()
    command = [sys.executable, "-P", "-m", "fhir_server.cli", "serve", "--host", LOOPBACK, "--port",
               str(port), "--data-dir", str(data_dir), "--workers", "1"]
    env = {**os.environ, "FHIR_SERVER_AUDIT": "true" if audit else "false"}
    with running_server("fhir", command, port=port, ready_path="/readyz", env=env,
                        log_path=data_dir.parent / f"audit-{audit}.log") as server:
        base = server.base_url + "/fhir"
        token = _token(data_dir, base)
        if ids is None or not ids.exists():
            ids = data_dir.parent / "ids.txt"
            ids.write_text("\n".join(seed_patients(server.base_url, 1000, token)) + "\n")
        headers = [f"Authorization: Bearer {token}"]
        script = LUA_DIR / "read_patient.lua"
        run_wrk(server.base_url, script, [str(ids)], WrkLoad(8, 2, 3), headers)  # warm-up
        user0, system0, faults0 = _cpu_s(server.pid)
        result = run_wrk(server.base_url, script, [str(ids)], WrkLoad(8, 2, duration), headers)
        user1, system1, faults1 = _cpu_s(server.pid)
    reads = max(result.requests, 1)
    return (result.requests_per_s, (user1 - user0) / reads * 1e6,
            (system1 - system0) / reads * 1e6, (faults1 - faults0) / reads)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=int, default=10)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fhir-audit-cost-"))
    data_dir, ids = work / "data", work / "ids.txt"
    figures: dict[bool, list[tuple[float, ...]]] = {True: [], False: []}
    for _ in range(args.rounds):
        for audit in (True, False):
            figures[audit].append(_measure(data_dir, ids, audit, args.duration))
    print("audit   reads/s   user us/read   sys us/read   cpu us/read   minor faults/read")
    cpu: dict[bool, float] = {}
    for audit in (True, False):
        rows = figures[audit]
        rate = statistics.median(r[0] for r in rows)
        user = statistics.median(r[1] for r in rows)
        system = statistics.median(r[2] for r in rows)
        faults = statistics.median(r[3] for r in rows)
        cpu[audit] = user + system
        print(f"{'on ' if audit else 'off'}   {rate:9.0f}   {user:12.0f}   {system:11.0f}   "
              f"{cpu[audit]:11.0f}   {faults:17.2f}")
    print(f"auditing adds {100 * (cpu[True] / cpu[False] - 1):.0f} % CPU per read; a CPU-bound "
          f"server reads {100 * (1 - cpu[False] / cpu[True]):.0f} % fewer per second")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
