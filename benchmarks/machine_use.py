"""What a measured load used: the machine's cores (the server's, wrk's, everyone else's) and
the server's write lock.

The server, wrk and whatever else runs share the machine's cores, so a server's throughput
follows the cores left to it. A figure says little without them: ``use_between`` of two
``snapshot``s around a load gives the server's CPU per request, the cores it used, the busiest
of its processes, the cores wrk and this harness used, and ``other_cores``, the cores the rest
of the machine took. A run whose ``other_cores`` is above about 0.2 shared the machine.

``lock_use`` of two ``lock_sums`` around a load gives the write lock's hold per commit group
and per request, and the wait per write scope, from the server's ``/metrics`` (all workers).

Linux only: it reads ``/proc/stat`` and each process's ``/proc/PID/stat``.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Snapshot",
    "group_cpu_s",
    "group_processes",
    "lock_sums",
    "lock_sums_of",
    "lock_use",
    "machine_busy_s",
    "snapshot",
    "use_between",
]

_TICK = os.sysconf("SC_CLK_TCK")
# The busy fields of /proc/stat's "cpu" line (user nice system idle iowait irq softirq steal):
# all but idle and iowait. guest and guest_nice are already counted in user and nice.
_BUSY = (0, 1, 2, 5, 6, 7)


@dataclass(frozen=True)
class Snapshot:
    """CPU seconds used so far: the whole machine, each process of the server's group, and
    this harness with its waited-for children (wrk)."""

    monotonic_s: float
    machine_busy_s: float
    server_s: dict[int, float]
    harness_s: float


def machine_busy_s(stat: str | None = None) -> float:
    """Busy CPU seconds of all cores since boot, from ``/proc/stat`` (or the given text)."""
    text = Path("/proc/stat").read_text() if stat is None else stat
    fields = text.split("\n", 1)[0].split()
    if not fields or fields[0] != "cpu":
        raise ValueError("no 'cpu' line first in /proc/stat")
    ticks = [int(v) for v in fields[1:]]
    return sum(ticks[i] for i in _BUSY if i < len(ticks)) / _TICK


def group_processes(group: int) -> Iterator[tuple[Path, list[str]]]:
    """Each live process of process group ``group`` (a server started in its own session:
    its supervisor and workers): its ``/proc/PID`` folder and the fields of its ``stat``
    after the command name (the process group is ``fields[2]``)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != group:
                continue
        except (OSError, IndexError, ValueError):
            continue  # the process ended between the listing and the read
        yield entry, fields


def group_cpu_s(group: int) -> dict[int, float]:
    """User + system CPU seconds of each live process of process group ``group``."""
    # utime and stime are stat's 14th and 15th fields
    return {int(entry.name): (int(fields[11]) + int(fields[12])) / _TICK
            for entry, fields in group_processes(group)}


def _harness_s() -> float:
    used = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        used += usage.ru_utime + usage.ru_stime
    return used


def snapshot(group: int) -> Snapshot:
    """Read the CPU used so far by the machine, the server's group ``group`` and this harness
    (wrk counts once it has been waited for)."""
    return Snapshot(time.monotonic(), machine_busy_s(), group_cpu_s(group), _harness_s())


def use_between(before: Snapshot, after: Snapshot, operations: int) -> dict[str, float]:
    """What the load between two snapshots used: the server's CPU ms per request and cores,
    its busiest process's share of one core, the harness's cores (wrk) and the others'."""
    seconds = max(after.monotonic_s - before.monotonic_s, 1e-9)
    spent = {pid: used - before.server_s.get(pid, 0.0) for pid, used in after.server_s.items()}
    server = sum(spent.values())
    harness = after.harness_s - before.harness_s
    busy = after.machine_busy_s - before.machine_busy_s
    return {"server_cpu_ms_per_request": round(1000 * server / max(operations, 1), 2),
            "server_cores_used": round(server / seconds, 2),
            "busiest_process_core": round(max(spent.values(), default=0.0) / seconds, 2),
            "wrk_cores": round(harness / seconds, 2),
            "other_cores": round(max(busy - server - harness, 0.0) / seconds, 2)}


_LOCK_SERIES = ("fhir_store_write_lock_hold_seconds", "fhir_store_write_lock_wait_seconds")


def lock_sums(base_url: str) -> dict[str, float]:
    """The write lock's histogram sums and counts from the server's ``/metrics`` (all
    workers); empty when it cannot be read."""
    import httpx

    try:
        text = httpx.get(base_url.rstrip("/") + "/metrics", timeout=10).text
    except httpx.HTTPError:
        return {}
    return lock_sums_of(text)


def lock_sums_of(metrics: str) -> dict[str, float]:
    """The write lock's ``_sum`` and ``_count`` series in a ``/metrics`` text, summed over
    its label sets (each worker's)."""
    found: dict[str, float] = {}
    for line in metrics.splitlines():
        name, _, value = line.partition(" ")
        name = name.split("{", 1)[0]
        if name.startswith(_LOCK_SERIES) and name.endswith(("_sum", "_count")):
            found[name] = found.get(name, 0.0) + float(value.split()[0])
    return found


def lock_use(before: dict[str, float], after: dict[str, float],
             operations: int) -> dict[str, float]:
    """Write-lock hold per commit group and per request, groups per request and wait per
    scope (ms); empty when the lock was not taken or not measured."""
    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)
    hold, wait = _LOCK_SERIES
    groups, scopes = delta(hold + "_count"), delta(wait + "_count")
    if not groups or not scopes:
        return {}
    return {"lock_hold_ms_per_group": round(1000 * delta(hold + "_sum") / groups, 2),
            "lock_hold_ms_per_request": round(1000 * delta(hold + "_sum") / max(operations, 1), 2),
            "lock_groups_per_request": round(groups / max(operations, 1), 2),
            "lock_wait_ms_per_scope": round(1000 * delta(wait + "_sum") / scopes, 2)}
