"""What judging a change for its subscriptions' owners costs under Consent, in process.

    .venv/bin/python benchmarks/subscription_owner_cost.py [--changes 500] [--owners 20]
                                                           [--rounds 3]

Each change (an Observation of patient A written by facility Y) fires ``--owners``
subscriptions; each owner is judged as the write path does (``subscriptions.owners``:
``OwnerReads`` over one ``BatchGrants`` per change, owners kept named). The owners are
clinicians of facility X (``user/*.cruds``, governed by Consent; A's Consent permits X) or,
as the baseline measured in the same run (alternating), operators (``system/*.cruds``, not
governed). The store answers the grant query from memory, so what is measured is the
policy's work, and the number of grant queries (one per change, whatever the owners).
Reported: microseconds per owner and change of each, the ratio clinician/operator.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Collection, Sequence
from typing import Any

from fhir_server.search.model import Grant
from fhir_server.search.registry import SearchParameterRegistry
from fhir_server.security.caller import Caller
from fhir_server.security.scopes import parse_scopes
from fhir_server.security.sharing import SharingRules
from fhir_server.subscriptions.owners import BatchGrants, OwnerReads

RESULT: dict[str, Any] = {
    "resourceType": "Observation", "id": "o1", "status": "final",
    "meta": {"source": "Organization/y"}, "subject": {"reference": "Patient/a"},
    "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]}}


class Grants:
    """A store of one Consent of A's permitting X, counting the grant queries."""

    def __init__(self) -> None:
        self.queries = 0

    async def consent_grants(self, patients: Sequence[str],
                             actors: Collection[str] | None = None) -> list[Grant]:
        self.queries += 1
        return [Grant("c1", "a", "Organization/x", True, "patient-privacy", 0, 2**62)]


async def judge(owners: list[Caller], changes: int, registry: SearchParameterRegistry,
                sharing: SharingRules) -> tuple[float, int, int]:
    """Seconds per owner and change, grant queries, resources shown."""
    store, shown = Grants(), 0
    started = time.perf_counter()
    for _ in range(changes):
        batch = BatchGrants(store, {"a"})
        for owner in owners:
            reads = OwnerReads(owner, registry, sharing, batch)
            await reads.load([(RESULT, ())])
            shown += reads.readable(RESULT, ())
    return (time.perf_counter() - started) / (changes * len(owners)), store.queries, shown


def owners_of(kind: str, count: int) -> list[Caller]:
    if kind == "clinician":
        return [Caller(subject=f"Practitioner/{n}", scopes=parse_scopes(["user/*.cruds"]),
                       organization="Organization/x", fhir_user=f"Practitioner/{n}",
                       verified=True) for n in range(count)]
    return [Caller(subject=f"operator-{n}", scopes=parse_scopes(["system/*.cruds"]),
                   verified=True) for n in range(count)]


async def main(args: argparse.Namespace) -> None:
    registry, sharing = SearchParameterRegistry.load(), SharingRules.configured()
    runs: dict[str, list[float]] = {"clinician": [], "operator": []}
    for round in range(args.rounds):
        order = ["clinician", "operator"] if round % 2 == 0 else ["operator", "clinician"]
        for kind in order:
            cost, queries, shown = await judge(owners_of(kind, args.owners), args.changes,
                                               registry, sharing)
            runs[kind].append(cost)
            print(f"round {round + 1} {kind}: {cost * 1e6:.1f} us per owner and change, "
                  f"{queries} grant queries for {args.changes} changes, shown {shown}")
    clinician, operator = (statistics.median(runs[k]) for k in ("clinician", "operator"))
    print(f"median clinician {clinician * 1e6:.1f} us, operator {operator * 1e6:.1f} us, "
          f"ratio {clinician / operator:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=500)
    parser.add_argument("--owners", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
