"""What base structural validation costs per resource: the R4B models (before) against the R4
element tables (now), measured in the same run on the resources of ``examples/visit-bundle.json``.

    .venv/bin/python benchmarks/structure_cost.py [--repeat 500]

Needs the ``test`` extra (``fhir.resources``, no longer a run-time dependency). For each resource
it prints the p50 in microseconds of:

- ``before``: what ``validate_structure`` ran until the element tables replaced the models: the
  JSON rules walk, ``model_validate`` of the ``fhir.resources`` R4B class, the narrative walk
  (``xhtml.check_narrative``); its separate required-binding walk (about 10 us a resource) is
  left out, so the baseline is slightly understated;
- ``after``: ``elements.check_structure``, the one walk that now does all of that and the
  required bindings;
- ``invariants``: ``base_invariants.check_invariants``, unchanged, which both run after;
- ``total before`` (before + invariants) and ``total after`` (``validate_structure`` itself).

Samples of the two sides are taken alternately, so machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parent.parent
Json = dict[str, Any]


def json_rule_problems(value: object) -> int:
    """The old JSON rules walk (no null in objects, no "", [] or {}), with its path strings."""
    return _json_rules(value, "R")


def _json_rules(value: object, path: str) -> int:
    found = 0
    if isinstance(value, dict):
        found += not value
        for key, item in value.items():
            found += 1 if item is None else _json_rules(item, f"{path}.{key}")
    elif isinstance(value, list):
        found += not value
        for index, item in enumerate(value):
            if item is not None:
                found += _json_rules(item, f"{path}[{index}]")
    elif isinstance(value, str) and not value.strip():
        found += 1
    return found


def before(resource: Json) -> None:
    """The structural part of the old ``validate_structure``."""
    from fhir.resources.R4B import get_fhir_model_class

    from fhir_server.conformance import xhtml

    if not json_rule_problems(resource):
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
        xhtml.check_narrative(resource)


def _p50_pair(first: Callable[[], object], second: Callable[[], object], repeat: int
              ) -> tuple[float, float]:
    a: list[float] = []
    b: list[float] = []
    for _ in range(repeat):
        started = time.perf_counter()
        first()
        a.append(time.perf_counter() - started)
        started = time.perf_counter()
        second()
        b.append(time.perf_counter() - started)
    return statistics.median(a) * 1e6, statistics.median(b) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=500)
    args = parser.parse_args()
    from fhir_server.conformance import base_invariants, elements
    from fhir_server.resources import validate_structure

    bundle = orjson.loads((REPO / "examples" / "visit-bundle.json").read_bytes())
    resources = [entry["resource"] for entry in bundle["entry"]]
    for resource in resources:  # load the models, tables and compiled expressions once
        before(resource)
        validate_structure(resource)
    header = ("resource", "bytes", "before", "after", "x", "invariants", "total before",
              "total after", "x")
    print("{:<18} {:>5} {:>7} {:>6} {:>5} {:>10} {:>12} {:>11} {:>5}".format(*header))
    sums = [0.0, 0.0, 0.0, 0.0, 0.0]
    for resource in resources:
        old, new = _p50_pair(lambda r=resource: before(r),
                             lambda r=resource: elements.check_structure(r), args.repeat)
        invariants = statistics.median(
            _timed(lambda r=resource: base_invariants.check_invariants(r))
            for _ in range(args.repeat)
        )
        old_total, new_total = _p50_pair(
            lambda r=resource: (before(r), base_invariants.check_invariants(r)),
            lambda r=resource: validate_structure(r),
            args.repeat,
        )
        for index, value in enumerate((old, new, invariants, old_total, new_total)):
            sums[index] += value
        size = len(orjson.dumps(resource))
        print(f"{resource['resourceType']:<18} {size:>5} {old:>7.0f} {new:>6.0f} "
              f"{old / new:>5.1f} {invariants:>10.0f} {old_total:>12.0f} {new_total:>11.0f} "
              f"{old_total / new_total:>5.1f}")
    old, new, invariants, old_total, new_total = (s / len(resources) for s in sums)
    print(f"{'mean':<18} {'':>5} {old:>7.0f} {new:>6.0f} {old / new:>5.1f} {invariants:>10.0f} "
          f"{old_total:>12.0f} {new_total:>11.0f} {old_total / new_total:>5.1f}")
    return 0


def _timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1e6


if __name__ == "__main__":
    sys.exit(main())
