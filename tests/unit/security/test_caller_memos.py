"""What is derived once per caller stays that caller's and no longer than it may: the caller of
a verified token (``security.caller.KnownCallers``), its names (``security.actors.ActorNames``),
the focus of a patient's grants (``storage.sqlite.consent_sql``) and the Consents an
AuditEvent names (``security.consent_access``)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from fhir_server.search.model import OPEN_END, OPEN_START, ConsentRule, Grant, Visibility
from fhir_server.security.actors import ActorNames
from fhir_server.security.audit import AuditNote
from fhir_server.security.caller import Caller, KnownCallers
from fhir_server.security.consent_access import ConsentBook
from fhir_server.security.scopes import parse_scopes
from fhir_server.security.tokens import AccessContext
from fhir_server.storage.sqlite import consent_sql

ORG = "Organization/x"
RULE = ConsentRule(own=ORG, actors=frozenset({ORG}), scope="patient-privacy",
                   purpose="TREAT", sensitive=frozenset(), open_types=frozenset())


def _context(subject: str = "dr", organization: str | None = ORG) -> AccessContext:
    return AccessContext(subject=subject, issuer="https://issuer", scopes=parse_scopes(
        "user/*.rs"), expires_at=int(time.time()) + 60, organization=organization)


def test_one_caller_per_verified_token_and_address() -> None:
    known = KnownCallers()
    mine, theirs = _context(), _context("other", "Organization/y")
    first = known.caller(mine, "10.0.0.1")
    assert known.caller(mine, "10.0.0.1") is first
    assert known.caller(mine, "10.0.0.2") is not first  # another address: its own
    other = known.caller(theirs, "10.0.0.1")
    assert other is not first and other.organization == "Organization/y"
    again = _context()  # verified anew (the verifier forgot it): a new caller
    assert known.caller(again, "10.0.0.1") is not first


def test_expired_tokens_leave_the_full_memo() -> None:
    known = KnownCallers(limit=4)
    for n in range(3):
        known.caller(AccessContext(subject=f"old{n}", issuer="i", scopes=(), expires_at=0))
    live = _context()
    kept = known.caller(live)
    known.caller(_context("dr9"))  # full: the expired ones go, the live one stays
    assert known.caller(live) is kept
    assert len(known._known) == 2


class _Store:
    def __init__(self) -> None:
        self.reads = 0
        self.identifier = "01929"

    async def read(self, kind: str, id: str) -> Any:
        self.reads += 1
        resource = {"resourceType": kind, "id": id, "identifier": [
            {"system": "urn:code", "value": self.identifier}]}
        return type("Found", (), {"resource": lambda _self: resource})()


@pytest.mark.asyncio
async def test_a_callers_names_are_kept_with_it_for_the_ttl() -> None:
    store = _Store()
    names = ActorNames(store, ttl=60)  # type: ignore[arg-type]
    caller = Caller.from_token(_context())
    named = await names.named(caller)
    assert named.identities == ("identifier|urn:code|01929",)
    assert await names.named(caller) is named and store.reads == 1
    other = Caller.from_token(_context("dr2", "Organization/y"))
    assert (await names.named(other)).organization == "Organization/y"  # not the first's
    expiring = ActorNames(store, ttl=0)  # type: ignore[arg-type]
    store.identifier = "79010"
    first = await expiring.named(caller)
    assert (await expiring.named(caller)) is not first  # read again once the ttl ran out
    assert first.identities == ("identifier|urn:code|79010",)


def _grant(consent: str, start: int = OPEN_START, end: int = OPEN_END,
           permit: bool = True) -> Grant:
    return Grant(consent, "p1", ORG, permit, "patient-privacy", start, end)


def test_a_focus_is_worked_out_again_when_a_period_ends_or_the_grants_change(
        monkeypatch: pytest.MonkeyPatch) -> None:
    foci = consent_sql._Focused()
    seen = Visibility(consent=RULE)
    now = 1_000_000
    monkeypatch.setattr(time, "time_ns", lambda: now * 1000)
    grants = [_grant("c1", end=now + 10)]
    judged = foci.judged(seen, RULE, "p1", grants)
    assert judged is not None and judged.consent is not None
    assert judged.consent.focus is not None and judged.consent.focus.everything
    assert foci.judged(seen, RULE, "p1", grants) is judged  # remembered
    now += 10  # the permit's period ended
    ended = foci.judged(seen, RULE, "p1", grants)
    assert ended is not None and ended.consent is not None
    assert ended.consent.focus is not None and not ended.consent.focus.everything
    denied = [_grant("c1"), _grant("c2", permit=False)]  # the grants changed: a new list
    assert foci.judged(seen, RULE, "p1", denied) is None  # judged row by row
    other = Visibility(consent=ConsentRule(
        own="Organization/y", actors=frozenset({"Organization/y"}), scope="patient-privacy",
        purpose="TREAT", sensitive=frozenset(), open_types=frozenset()))
    assert other.consent is not None
    nothing = foci.judged(other, other.consent, "p1", [])  # another caller: its own answer
    assert nothing is not None and nothing.consent is not None
    assert nothing.consent.focus is not None and not nothing.consent.focus.everything


class _Grants:
    def __init__(self, grants: list[Grant]) -> None:
        self.grants = grants

    async def consent_grants(self, patients: Any, actors: Any = None) -> list[Grant]:
        return self.grants


@pytest.mark.asyncio
async def test_the_audit_names_the_consents_in_force_at_each_request() -> None:
    now = time.time_ns() // 1000
    store = _Grants([_grant("c1"), _grant("c2", end=now + 2_000_000)])
    note = AuditNote("read", touched=[("Observation/o1", frozenset({"p1"}))])
    await ConsentBook().explain(note, RULE, store)
    assert note.policies["p1"] == ("Consent/c1", "Consent/c2")
    store.grants = [_grant("c1", end=now)]  # c2 revoked, c1 ended: a new list of grants
    later = AuditNote("read", touched=[("Observation/o1", frozenset({"p1"}))])
    await ConsentBook().explain(later, RULE, store)
    assert later.policies["p1"] == ()
