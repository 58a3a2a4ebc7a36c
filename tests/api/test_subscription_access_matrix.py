"""What a subscription delivers, by the kind of token that owns it: every caller kind of the
policy matrix subscribes (full-resource, so content would show), A's laboratory result, A's
vital sign and B's laboratory result are written by a clinician of a facility none of the
owners acts for (so none of them sees them as its own writing), and each subscription must
carry exactly what its owner may read, and never a trace of another citizen. A token used for
someone else's record (an attacker holding A's token, aiming at B) cannot subscribe to it at
all.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest_asyncio

from fhir_server.settings import Settings
from tests.api.subscribing import (
    Receiver,
    Subscribed,
    new_lab,
    subscribed_app,
    topic_subscription,
)


@dataclass(frozen=True)
class Owner:
    """A caller kind: its scopes, whether the token is bound to A's record, its filter on
    the ``observation`` topic (``a``, ``b`` or none), other claims."""

    scope: str
    bound: bool
    filter: str | None
    claims: tuple[tuple[str, str], ...] = ()


_SUB = "patient/Subscription.cruds "
OWNERS: dict[str, Owner] = {
    "p.rs": Owner("patient/*.rs", True, "a"),
    "p.cruds": Owner("patient/*.cruds", True, "a"),
    "p.lab": Owner(_SUB + "patient/Observation.rs?category=laboratory", True, "a"),
    "user": Owner("user/*.cruds", False, "a", (("fhir_user", "Practitioner/dr-1"),
                                               ("organization", "{org}"))),
    "user of bm": Owner("user/*.cruds", False, "a", (("fhir_user", "Practitioner/dr-2"),
                                                     ("organization", "Organization/bm"))),
    "facility": Owner("system/*.cruds", False, None,
                      (("organization", "Organization/bm"), ("client_id", "bv-bach-mai"))),
    "sys": Owner("system/*.cruds", False, None),
    "s.lab": Owner("system/Subscription.cruds system/Observation.rs?category=laboratory",
                   False, None),
    "attacker to B": Owner("patient/*.cruds", True, "b"),
    "attacker unfiltered": Owner("patient/*.cruds", True, None),
}

# What each owner's subscription is told of (``-``: the subscription is refused, 403). The
# results are written by a clinician of another facility (``WRITER``), so no owner wrote
# them. ``user`` is a clinician of facility X, which A's Consent permits (B's Consent of X
# expired); the facility ``bm`` and its clinician hold no Consent of A or B
# (docs/consent.md): nothing of the results reaches them.
EXPECTED = """
owner                a.lab  a.vital  b.lab
p.rs                 -      -        -
p.cruds              yes    yes      no
p.lab                yes    no       no
user                 yes    yes      no
user of bm           no     no       no
facility             no     no       no
sys                  yes    yes      yes
s.lab                yes    no       yes
attacker to B        -      -        -
attacker unfiltered  -      -        -
"""


#: Who writes the results: a clinician of a facility that no owner acts for.
WRITER = (("subject", "Practitioner/dr-w"), ("fhir_user", "Practitioner/dr-w"),
          ("organization", "Organization/writer"), ("client_id", "his-writer"))


def _expected() -> dict[str, dict[str, bool] | None]:
    rows: dict[str, dict[str, bool] | None] = {}
    lines = EXPECTED.strip().splitlines()
    columns = lines[0].split()[1:]
    for line in lines[1:]:
        words = line.split()
        cells, owner = words[-len(columns):], " ".join(words[:-len(columns)])
        rows[owner] = None if cells[0] == "-" else {
            column: cell == "yes" for column, cell in zip(columns, cells, strict=True)}
    return rows


@pytest_asyncio.fixture
async def server(settings: Settings) -> AsyncIterator[Subscribed]:
    async for running in subscribed_app(settings, Receiver()):
        yield running


def _headers(server: Subscribed, owner: Owner) -> dict[str, str]:
    claims: dict[str, Any] = {name: value.format(org=f"Organization/{server.world.shared['org']}")
                              for name, value in owner.claims}
    if owner.bound:
        claims["patient_id"] = server.world.a.patient
    return server.headers(owner.scope, **claims)


async def _subscribe(server: Subscribed, owner: Owner) -> tuple[int, str | None]:
    filters = [] if owner.filter is None else [
        f"patient=Patient/{getattr(server.world, owner.filter).patient}"]
    response = await server.http.post(
        "/fhir/Subscription", json=topic_subscription("observation", *filters,
                                                      content="full-resource"),
        headers=_headers(server, owner))
    return response.status_code, response.json().get("id")


def test_the_table_names_every_owner() -> None:
    assert set(_expected()) == set(OWNERS)


async def test_a_subscription_delivers_what_its_owner_may_read_and_nothing_else(
    server: Subscribed,
) -> None:
    expected, world = _expected(), server.world
    ids: dict[str, str] = {}
    for name, owner in OWNERS.items():
        status, id = await _subscribe(server, owner)
        assert status == (403 if expected[name] is None else 201), (name, status)
        if id is not None and status == 201:
            ids[name] = id
            await server.active(id)
    writer = server.headers("user/*.cruds", **dict(WRITER))
    written = {"a.lab": await server.create(new_lab(world), writer),
               "a.vital": await server.create(new_lab(world, "vital-signs"), writer),
               "b.lab": await server.create(new_lab(world, of="b"), writer)}
    await server.settled(ids.values())
    for name, id in ids.items():
        told = {focus for _, focus in server.receiver.events(id) if focus is not None}
        shown = {kind for kind, resource in written.items()
                 if f"Observation/{resource}" in told}
        row = expected[name]
        assert row is not None
        assert shown == {kind for kind, yes in row.items() if yes}, name
        if OWNERS[name].bound:
            assert world.b.patient not in str(server.receiver.bundles(id)), name
