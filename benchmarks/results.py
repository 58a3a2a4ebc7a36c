"""Benchmark results as values: measurements, targets, the printed table and the JSON report.

A target is a report line (PASS, FAIL or MISSING), never an assertion: the run finishes and
prints every figure even when the server misses a target.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = [
    "TARGETS",
    "Measurement",
    "Target",
    "TargetOutcome",
    "check_targets",
    "format_table",
    "report_json",
]

Metric = Literal["requests_per_s", "p50_ms", "p99_ms"]


@dataclass(frozen=True)
class Measurement:
    """One measured scenario: throughput, latency percentiles (ms) and how it was measured."""

    name: str
    kind: Literal["http", "in-process"]
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    operations: int
    errors: int = 0
    baselines: tuple[str, ...] = ()
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Target:
    """A figure the issue asks for, e.g. fhir-read requests_per_s >= 2500."""

    scenario: str
    metric: Metric
    comparison: Literal[">=", "<="]
    threshold: float

    def describe(self) -> str:
        """Return the target as text, e.g. ``fhir-read p99_ms <= 20``."""
        return f"{self.scenario} {self.metric} {self.comparison} {self.threshold:g}"


@dataclass(frozen=True)
class TargetOutcome:
    """A target, the measured value (None when the scenario did not run) and the verdict."""

    target: Target
    measured: float | None
    verdict: Literal["PASS", "FAIL", "MISSING"]


# Issue 2: on the 2-core machine, at 16 concurrent connections.
TARGETS: tuple[Target, ...] = (
    Target("fhir-read", "requests_per_s", ">=", 2500),
    Target("fhir-create", "requests_per_s", ">=", 1000),
    Target("fhir-read", "p99_ms", "<=", 20),
    # Issue 3, on about 1,000,000 resources (run.py --data-dir DIR --scenario big).
    Target("search-identifier", "p50_ms", "<=", 5),
    Target("search-observation", "p50_ms", "<=", 10),
    Target("search-name", "p50_ms", "<=", 50),
    Target("search-encounter", "p50_ms", "<=", 30),
    Target("index-size", "requests_per_s", "<=", 2.0),
    # Issue 4: visit pushes from 8 connections.
    Target("push", "requests_per_s", ">=", 150),
    Target("push", "p99_ms", "<=", 150),
    # Issue 32: the same push on the store of 1,000,000 resources (run.py --data-dir).
    Target("push", "requests_per_s", ">=", 300),
    Target("push", "p99_ms", "<=", 100),
    # Issue 25: the XML 130 bridge (push-xml130 is also compared with push-xml130-fhir).
    Target("xml130-convert", "requests_per_s", ">=", 200),
    # The two doors in alternating slices of the same minute: XML visits/s over FHIR's.
    Target("push-xml130-slices", "requests_per_s", ">=", 1.0),
    # Issue 7: the health book.
    Target("everything", "p50_ms", "<=", 50),
    Target("summary", "p50_ms", "<=", 100),
)

_COMPARE: dict[str, Callable[[float, float], bool]] = {">=": operator.ge, "<=": operator.le}


def check_targets(
    measurements: Sequence[Measurement], targets: Sequence[Target] = TARGETS
) -> list[TargetOutcome]:
    """Return one outcome per target of the scenarios that ran (others are left out)."""
    by_name = {m.name: m for m in measurements}
    outcomes = []
    for target in targets:
        found = by_name.get(target.scenario)
        if found is None:
            continue
        value = float(getattr(found, target.metric))
        passed = _COMPARE[target.comparison](value, target.threshold) and found.errors == 0
        outcomes.append(TargetOutcome(target, value, "PASS" if passed else "FAIL"))
    return outcomes


def _ratios(measurement: Measurement, by_name: Mapping[str, Measurement]) -> str:
    parts = []
    for name in measurement.baselines:
        base = by_name.get(name)
        if base is not None and base.requests_per_s > 0:
            parts.append(f"{measurement.requests_per_s / base.requests_per_s:.2f}x {name}")
    return ", ".join(parts) or "-"


def _used(measurement: Measurement, key: str, width: int) -> str:
    """A figure of what the run used of the machine (``machine_use``), or ``-``."""
    value = measurement.detail.get(key)
    return f"{value:>{width}.2f}" if isinstance(value, (int, float)) else f"{'-':>{width}}"


def format_table(measurements: Sequence[Measurement], outcomes: Sequence[TargetOutcome]) -> str:
    """Return the plain-text report: one row per measurement (with the server's CPU ms per
    request and the other processes' cores, where measured), then one line per target."""
    by_name = {m.name: m for m in measurements}
    header = (f"{'scenario':<24}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
              f"{'cpu ms':>8}{'other':>7}  ratio")
    lines = [header, "-" * len(header)]
    for m in measurements:
        lines.append(
            f"{m.name:<24}{m.requests_per_s:>10.0f}{m.p50_ms:>9.2f}{m.p99_ms:>9.2f}"
            f"{m.errors:>8}{_used(m, 'server_cpu_ms_per_request', 8)}"
            f"{_used(m, 'other_cores', 7)}  {_ratios(m, by_name)}"
        )
    lines.append("")
    for outcome in outcomes:
        shown = "n/a" if outcome.measured is None else f"{outcome.measured:.2f}"
        lines.append(f"{outcome.verdict:<8}{outcome.target.describe():<36}measured {shown}")
    return "\n".join(lines)


def report_json(
    measurements: Sequence[Measurement], outcomes: Sequence[TargetOutcome], run: Mapping[str, Any]
) -> dict[str, Any]:
    """Return the whole report (run settings, machine, measurements, targets) as JSON data."""
    by_name = {m.name: m for m in measurements}
    return {
        "run": dict(run),
        "measurements": [
            {
                **asdict(m),
                "detail": dict(m.detail),
                "ratios": {
                    name: m.requests_per_s / by_name[name].requests_per_s
                    for name in m.baselines
                    if name in by_name and by_name[name].requests_per_s > 0
                },
            }
            for m in measurements
        ],
        "targets": [
            {"target": o.target.describe(), "measured": o.measured, "verdict": o.verdict}
            for o in outcomes
        ],
    }
