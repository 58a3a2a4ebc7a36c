"""The access policy matrix: every route of ``fhir_server.api.routes.ROUTES`` and every
operation of ``fhir_server.operations.OPERATIONS``, asked by every kind of token about the
caller's own record, another patient's and an unknown id, over HTTP and as the entries of
transaction and batch Bundles.

Each cell of ``EXPECTED`` is the status the server must answer. Besides the status, every request
is checked for what it must not do: a token bound to citizen A shows nothing of citizen B and
changes nothing of B; a refused request (4xx) changes nothing at all; an allowed read shows the
resource it was aimed at. A route or operation that has no row here fails
``test_every_route_and_operation_has_expectations``: a new way in cannot escape the table.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from httpx_ws import WebSocketDisconnect, aconnect_ws
from httpx_ws.transport import ASGIWebSocketTransport

from fhir_server.api.routes import ROUTES, WEBSOCKET_ROUTES
from fhir_server.operations import OPERATIONS
from tests.api.conftest import Door
from tests.api.policy_cases import CASES, Case
from tests.api.two_patients import (
    FHIR,
    GOVERNED,
    SEES,
    TOKENS,
    Call,
    Person,
    World,
    as_entry,
    leaked,
    send,
)
from tests.conftest import API_STORAGE

#: The tests that send requests run on the module's app (``door``). The policy sits above the
#: storage port, and the in-process MongoDB stand-in scans every document per query: its 440
#: worlds took over twenty minutes here, so on it the matrix runs a fixed sample
#: (:func:`_sampled`: every case once, the tokens taking turns) and the rest skips. The holes
#: themselves (test_cross_patient_access) and the property test run on it whole; a real
#: MongoDB (FHIR_SERVER_TEST_API_STORAGE=mongodb://...) runs the whole matrix.
on_the_door = pytest.mark.asyncio(loop_scope="module")
not_on_the_stand_in = pytest.mark.skipif(API_STORAGE == "mongo-fake",
                                         reason="too slow on the MongoDB stand-in")


def _sampled(name: str, token: str, kind: str = "") -> None:
    """On the MongoDB stand-in, skip all but one token per case (each token in turn)."""
    if API_STORAGE != "mongo-fake":
        return
    turn = sorted(CASES).index(name) + (kind == "batch")
    if list(TOKENS).index(token) != turn % len(TOKENS):
        pytest.skip("sampled on the MongoDB stand-in: one token per case")

# The statuses, by request (a case of ``CASES``), target and token (``two_patients.TOKENS``:
# A's patient tokens ``p.*``, the doctors of facilities X (``dr.X``, whom A's Consent permits)
# and Y (``dr.Y``, no Consent), facility X's system (``fac.X``), a national operator's
# ``system/*.cruds`` (``op``) and the granular ``system/Observation.rs?category=laboratory``).
# Targets: ``own`` is A's resource, ``other`` B's, ``unknown`` an id (or identifier) never
# stored; ``-`` a request aimed at no one record. Instance requests aim at A's or B's
# laboratory Observation unless the case names another type. The records were stored by an
# operator: no facility wrote them.
#
# Where the specifications leave the status open, the table chooses:
# - A scope that does not grant the interaction on the type answers 403, decided from the
#   request alone, before any record is looked at (so it says nothing about the target).
#   A granular scope names one type: whole-system search and history need a ``*`` scope (403).
# - Another patient's resource answers exactly like an unknown id: 404 on read, vread, history,
#   patch, delete, instance operations; ``$summary?identifier=`` with B's CCCD answers like an
#   unknown CCCD. A resource outside a v2 query restriction is likewise not there (404).
# - What no Consent shares with a clinician or facility is, to it, not there either: 404 (B's
#   record for X, whose Consent expired; both records for Y). The Patient itself they all
#   read (docs/consent.md): ``$everything`` and ``$summary`` answer 200 with what is shared.
# - A clinician or facility changes only what it wrote: a record it reads through a Consent
#   (A's, for X) or a Patient answers 403 to a change; one it cannot see, 404. A
#   conditional write matches only what it sees (Y creates where X is refused).
# - Update of B's id answers 404 where an unknown id is created (201): a taken id cannot be
#   created, and the caller learns no more than a read of it tells (404).
# - Conditional create, update and delete only match what the caller may see: B's identifier
#   matches nothing for A, so conditional create and update create A's own resource (201) and
#   conditional delete deletes nothing (204), exactly as with an unknown identifier.
# - A patient's token writes only into its own compartment: a create about B (or about a
#   Patient that does not exist) is refused with 403.
# - $validate of a resource given in the body is a dry run of its content: 200 whoever the
#   resource is about (nothing is read or stored); it needs the ``c`` permission.
# - A patient's token may create with an id of its choosing (update as create, 201) only an id
#   no one has; ``$validate instance`` (POST with empty Parameters) checks the stored resource,
#   so it is an instance read.
# - A privacy Consent is written only by its patient (a read-write patient token, for their
#   own record) or an operator: a clinician or facility gets 403 even for the Consent that
#   shares A's record with it, so none grants itself access; one it cannot read is 404.
#   ``revoke Consent`` writes A's Consent as inactive under the target's id.
# - ``$break-glass`` is for clinicians and facilities (201: the emergency Consent); the citizen
#   and operators, who need none, get 403. ``$access-log`` is the citizen's and operators'; a
#   clinician or facility gets 403, decided before any record is looked at.
# - An operation the server does not have answers 404 whatever the token.
# - $export starts a job (202) for whoever may search what it names (a citizen exports their
#   own record; a Group must be one the caller may read: the Groups here are the operator's,
#   which Consent does not share with a facility). A job's status, files and cancellation
#   answer only the principal that started it (here the world's ``system/`` client, whose
#   principal ``op`` shares): anyone else finds no such job (404), whatever its scopes; the
#   starter whose scopes no longer grant the export gets 403. What an export holds follows
#   Consent as every search does (tests/api/test_bulk_export_access.py).
# - XML 130 import and conversion are a facility's or an operator's: a system/ scope with c on
#   every type (an empty call then answers 400: no envelope); export is a read of the visit.
# - $verify-signature is a read of the resource it is asked about (r on its type); it answers
#   200 with what it found (nothing, for an unsigned record).
# - Search always answers 200 with what the caller may see (possibly nothing).
# - Referential integrity is on (the default): a Patient its records refer to is not deleted
#   (409) by whoever may delete it; to anyone else it is unknown (404) or unmatched (204); a
#   record about a Patient that does not exist is refused (400) once the caller may write it.
# The entries of transaction and batch Bundles answer exactly what the same request answers
# over HTTP (a failed transaction answers the failed entry's status). A cell ``a|b`` says the
# two differ for a reason other than access: ``a`` over HTTP, ``b`` in a Bundle (a Bundle's
# references must resolve: docs/hospital-push.md, referential integrity).
EXPECTED = """
case                         target   p.rs    p.cruds p.lab   dr.X    dr.Y    fac.X   op      s.lab
read                         own      200     200     200     200     404     200     200     200
read                         other    404     404     404     404     404     404     200     200
read                         unknown  404     404     404     404     404     404     404     404
read Patient                 own      200     200     403     200     200     200     200     403
read Patient                 other    404     404     403     200     200     200     200     403
read Patient                 unknown  404     404     403     404     404     404     404     403
read Binary                  own      200     200     403     200     404     200     200     403
read Binary                  other    404     404     403     404     404     404     200     403
read Binary                  unknown  404     404     403     404     404     404     404     403
vread                        own      200     200     200     200     404     200     200     200
vread                        other    404     404     404     404     404     404     200     200
vread                        unknown  404     404     404     404     404     404     404     404
history instance             own      200     200     200     200     404     200     200     200
history instance             other    404     404     404     404     404     404     200     200
history instance             unknown  404     404     404     404     404     404     404     404
history type                 -        200     200     200     200     200     200     200     200
history system               -        200     200     403     200     200     200     200     403
search                       own      200     200     200     200     200     200     200     200
search                       other    200     200     200     200     200     200     200     200
search                       unknown  200     200     200     200     200     200     200     200
search by POST               own      200     200     200     200     200     200     200     200
search by POST               other    200     200     200     200     200     200     200     200
search by POST               unknown  200     200     200     200     200     200     200     200
search system                own      200     200     403     200     200     200     200     403
search system                other    200     200     403     200     200     200     200     403
search system                unknown  200     200     403     200     200     200     200     403
search system by POST        own      200     200     403     200     200     200     200     403
search system by POST        other    200     200     403     200     200     200     200     403
search system by POST        unknown  200     200     403     200     200     200     200     403
search compartment           own      200     200     200     200     200     200     200     200
search compartment           other    200     200     200     200     200     200     200     200
search compartment           unknown  200     200     200     200     200     200     200     200
create                       own      403     201     403     201     201     201     201     403
create                       other    403     403     403     201     201     201     201     403
create                       unknown  403     403     403     400     400     400     400     403
conditional create           own      403     200     403     200     201     200     200     403
conditional create           other    403     201     403     201     201     201     200     403
conditional create           unknown  403     201     403     201     201     201     201     403
update                       own      403     200     403     403     404     403     200     403
update                       other    403     404     403     404     404     404     200     403
update                       unknown  403     201     403     201     201     201     201     403
conditional update           own      403     200     403     403     201     403     200     403
conditional update           other    403     201     403     201     201     201     200     403
conditional update           unknown  403     201     403     201     201     201     201     403
patch                        own      403     200     403     403     404     403     200     403
patch                        other    403     404     403     404     404     404     200     403
patch                        unknown  403     404     403     404     404     404     404     403
conditional patch            own      403     200     403     403     404     403     200     403
conditional patch            other    403     404     403     404     404     404     200     403
conditional patch            unknown  403     404     403     404     404     404     404     403
delete                       own      403     204     403     403     404     403     204     403
delete                       other    403     404     403     404     404     404     204     403
delete                       unknown  403     404     403     404     404     404     404     403
delete Patient               own      403     409     403     403     403     403     409     403
delete Patient               other    403     404     403     403     403     403     409     403
delete Patient               unknown  403     404     403     404     404     404     404     403
conditional delete           own      403     204     403     403     204     403     204     403
conditional delete           other    403     204     403     204     204     204     204     403
conditional delete           unknown  403     204     403     204     204     204     204     403
conditional delete by _id    own      403     204     403     403     204     403     204     403
conditional delete by _id    other    403     204     403     204     204     204     204     403
conditional delete by _id    unknown  403     204     403     204     204     204     204     403
conditional delete Patient   own      403     409     403     403     403     403     409     403
conditional delete Patient   other    403     204     403     403     403     403     409     403
conditional delete Patient   unknown  403     204     403     204     204     204     204     403
read Consent                 own      200     200     403     200     404     200     200     403
read Consent                 other    404     404     403     404     404     404     200     403
read Consent                 unknown  404     404     403     404     404     404     404     403
create Consent               own      403     201     403     403     403     403     201     403
create Consent               other    403     403     403     403     403     403     201     403
create Consent               unknown  403     403     403     403     403     403     400     403
revoke Consent               own      403     200     403     403     404     403     200     403
revoke Consent               other    403     404     403     404     404     404     200     403
revoke Consent               unknown  403     201     403     403     403     403     201     403
$validate type               own      403     200     403     200     200     200     200     403
$validate type               other    403     200     403     200     200     200     200     403
$validate type               unknown  403     200     403     200     200     200     200     403
$validate instance           own      403     200     403     200     404     200     200     403
$validate instance           other    403     404     403     404     404     404     200     403
$validate instance           unknown  403     404     403     404     404     404     404     403
$json-schema type            -        200     200     403     200     200     200     200     403
$json-schema instance        -        200     200     403     200     200     200     200     403
$expand type                 -        200     200     403     200     200     200     200     403
$expand instance             -        200     200     403     200     200     200     200     403
$validate-code type          -        200     200     403     200     200     200     200     403
$validate-code instance      -        200     200     403     200     200     200     200     403
$lookup type                 -        200     200     403     200     200     200     200     403
$lookup instance             -        200     200     403     200     200     200     200     403
$everything                  own      200     200     403     200     200     200     200     403
$everything                  other    404     404     403     200     200     200     200     403
$everything                  unknown  404     404     403     404     404     404     404     403
$summary instance            own      200     200     403     200     200     200     200     403
$summary instance            other    404     404     403     200     200     200     200     403
$summary instance            unknown  404     404     403     404     404     404     404     403
$summary type                own      200     200     403     200     200     200     200     403
$summary type                other    404     404     403     200     200     200     200     403
$summary type                unknown  404     404     403     404     404     404     404     403
$document                    own      200     200     403     200     404     200     200     403
$document                    other    404     404     403     404     404     404     200     403
$document                    unknown  404     404     403     404     404     404     404     403
$status type                 -        200     200     403     200     200     200     200     403
$status instance             own      200     200     403     200     404     200     200     403
$status instance             other    404     404     403     404     404     404     200     403
$status instance             unknown  404     404     403     404     404     404     404     403
$events                      own      200     200     403     200     404     200     200     403
$events                      other    404     404     403     404     404     404     200     403
$events                      unknown  404     404     403     404     404     404     404     403
$get-ws-binding-token type   -        200     200     403     200     400     200     200     403
$get-ws-binding-token instance own     200     200     403     200     404     200     200     403
$get-ws-binding-token instance other   404     404     403     404     404     404     200     403
$get-ws-binding-token instance unknown 404     404     403     404     404     404     404     403
$export system               -        202     202     403     202     202     202     202     403
$export Patient              -        202     202     403     202     202     202     202     403
$export Group                own      202     202     403     404     404     404     202     403
$export Group                other    404     404     403     404     404     404     202     403
$export Group                unknown  404     404     403     404     404     404     404     403
export status                -        404     404     404     404     404     404     200     403
export cancel                -        404     404     404     404     404     404     202     403
export file                  -        404     404     404     404     404     404     200     403
$break-glass                 own      403     403     403     201     201     201     403     403
$break-glass                 other    404     404     403     201     201     201     403     403
$break-glass                 unknown  404     404     403     404     404     404     403     403
$access-log                  own      200     200     403     403     403     403     200     403
$access-log                  other    404     404     403     403     403     403     200     403
$access-log                  unknown  404     404     403     403     403     403     404     403
$import-xml130               -        403     403     403     403     403     400     400     403
$convert-xml130              -        403     403     403     403     403     400     400     403
$export-xml130               own      200     200     403     200     404     200     200     403
$export-xml130               other    404     404     403     404     404     404     200     403
$export-xml130               unknown  404     404     403     404     404     404     404     403
$verify-signature            own      200     200     200     200     404     200     200     200
$verify-signature            other    404     404     404     404     404     404     200     200
$verify-signature            unknown  404     404     404     404     404     404     404     404
system operation             -        404     404     404     404     404     404     404     404
system operation by POST     -        404     404     404     404     404     404     404     404
"""

#: Routes that answer without a token, and what they answer to a bare request.
PUBLIC: dict[tuple[str, str], int] = {
    ("GET", "/healthz"): 200,
    ("GET", "/readyz"): 200,
    ("GET", "/metrics"): 200,  # open on the loopback by default (FHIR_SERVER_METRICS)
    ("GET", "/fhir/metadata"): 200,
    ("GET", "/fhir/.well-known/smart-configuration"): 200,
    ("GET", "/fhir/.well-known/jwks.json"): 200,
    ("POST", "/fhir/auth/token"): 400,  # an empty form: the OAuth error invalid_request
    # The App Launch endpoints exist only when an identity provider is configured (the test
    # app has none), the development identity provider only when switched on.
    ("GET", "/fhir/auth/authorize"): 404,
    ("POST", "/fhir/auth/authorize"): 404,
    ("GET", "/fhir/auth/callback"): 404,
    ("GET", "/fhir/auth/consent"): 404,
    ("POST", "/fhir/auth/consent"): 404,
    ("GET", "/fhir/auth/apps"): 404,
    ("POST", "/fhir/auth/apps"): 404,
    ("POST", "/fhir/auth/revoke"): 404,
    ("POST", "/fhir/auth/introspect"): 404,
    ("POST", "/fhir/auth/register"): 404,
    ("GET", "/dev-idp/.well-known/openid-configuration"): 404,
    ("GET", "/dev-idp/jwks"): 404,
    ("GET", "/dev-idp/authorize"): 404,
    ("POST", "/dev-idp/authorize"): 404,
    ("POST", "/dev-idp/token"): 404,
}

#: Websocket endpoints (outside the HTTP route table): a client that binds with anything but a
#: binding token of ``$get-ws-binding-token`` (an access token of any kind, or nothing) has its
#: connection closed with this code (1008, policy violation).
WEBSOCKETS: dict[str, int] = {"/fhir/$subscription-websocket": 1008}


def _statuses(cell: str) -> dict[str, int]:
    over_http, _, in_bundle = cell.partition("|")
    return {"http": int(over_http), "bundle": int(in_bundle or over_http)}


def _parse_expected(table: str) -> dict[tuple[str, str], dict[str, dict[str, int]]]:
    """``EXPECTED`` as {(case, target): {token: {"http": status, "bundle": status}}}."""
    lines = [line for line in table.strip().splitlines() if line.strip()]
    tokens = lines[0].split()[2:]
    rows: dict[tuple[str, str], dict[str, dict[str, int]]] = {}
    for line in lines[1:]:
        words = line.split()
        cells, target = words[-len(tokens):], words[-len(tokens) - 1]
        case = " ".join(words[: -len(tokens) - 1])
        assert (case, target) not in rows, f"two rows for {case} {target}"
        rows[case, target] = {t: _statuses(c) for t, c in zip(tokens, cells, strict=True)}
    return rows


EXPECTATIONS = _parse_expected(EXPECTED)
BUNDLE_ROUTE = ("POST", "/fhir")


def _targets(case: str) -> list[str]:
    return [target for name, target in EXPECTATIONS if name == case]


# -- the table covers the server -----------------------------------------------------------------


def test_every_route_and_operation_has_expectations() -> None:
    routes = {(method, path) for method, path, _ in ROUTES}
    covered = {case.route for case in CASES.values()} | {BUNDLE_ROUTE}
    assert not covered & PUBLIC.keys()
    assert routes - covered - PUBLIC.keys() == set(), "routes without expectations"
    assert (covered | PUBLIC.keys()) - routes == set(), "expectations of routes that are gone"
    operations = {case.operation for case in CASES.values() if case.operation}
    assert set(OPERATIONS) == operations
    assert any(case.in_bundle for case in CASES.values())


def test_every_websocket_endpoint_has_expectations() -> None:
    assert set(WEBSOCKET_ROUTES) == set(WEBSOCKETS)


@on_the_door
@not_on_the_stand_in
@pytest.mark.parametrize("path", sorted(WEBSOCKETS))
async def test_a_websocket_endpoint_refuses_access_tokens_as_binding_tokens(
    door: Door, path: str
) -> None:
    world = await door.reading_world()
    transport = ASGIWebSocketTransport(app=door.app)
    for message in ["bind-with-token", *(f"bind-with-token {world.token(kind)}"
                                         for kind in TOKENS)]:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client, \
                aconnect_ws(f"http://test{path}", client) as ws:
            await ws.send_text(message)
            with pytest.raises(WebSocketDisconnect) as closed:
                await ws.receive_text(timeout=10)
            assert closed.value.code == WEBSOCKETS[path], message


def test_every_case_has_a_row_for_its_targets_and_every_token() -> None:
    assert {name for name, _ in EXPECTATIONS} == set(CASES)
    for name in CASES:
        targets = set(_targets(name))
        assert targets in ({"own", "other", "unknown"}, {"-"}), name
    assert all(set(row) == set(TOKENS) for row in EXPECTATIONS.values())


@on_the_door
@pytest.mark.parametrize("route", sorted(PUBLIC), ids=" ".join)
async def test_public_endpoints_answer_without_a_token_and_ignore_one(
    door: Door, route: tuple[str, str]
) -> None:
    world = await door.reading_world()
    method, path = route
    for headers in [{"Authorization": ""}, *(world.headers(kind) for kind in TOKENS)]:
        response = await door.http.request(method, path, headers=headers,
                                           data={} if method == "POST" else None)
        assert response.status_code == PUBLIC[route], (headers, response.text)


@on_the_door
@pytest.mark.parametrize("name", sorted(CASES))
async def test_requests_without_a_token_are_refused_with_401(door: Door, name: str) -> None:
    world = await door.reading_world()
    call = CASES[name].build(world, world.a)
    response = await send(door.http, call, {"Authorization": ""})
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")


# -- the matrix ------------------------------------------------------------------------------


def _target(world: World, target: str) -> Person:
    return {"own": world.a, "other": world.b, "unknown": world.ghost, "-": world.a}[target]


async def _writes_since(world: World, since: str) -> list[dict[str, Any]]:
    """The history entries of every version written since ``since`` (any record), read with
    a ``system/`` token: a request's writes, since requests run one at a time."""
    response = await world.http.get("/fhir/_history", params={"_since": since, "_count": "500"})
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json().get("entry", [])
    return entries


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class Answer:
    """What one request of the matrix got, and what it wrote."""

    target: str
    status: int
    body: str
    leaked: set[str]
    writes: list[str]
    writes_of_b: list[str]


def _hidden(world: World, token: str) -> list[Person]:
    """Whose records the token must show nothing of (beyond, for a clinician or facility,
    the Patient every one of them reads)."""
    if TOKENS[token][1]:
        return [world.b]
    if token in GOVERNED:
        return [p for p, name in ((world.a, "A"), (world.b, "B")) if name not in SEES[token]]
    return []


async def _ask(world: World, token: str, target: str, call: Call,
               way: Callable[[Call, dict[str, str]], Any], may_write: bool) -> Answer:
    since = _now()
    response, status = await way(call, world.headers(token))
    writes = await _writes_since(world, since) if may_write else []
    asked, governed = call.text(), token in GOVERNED
    secrets = {s for person in _hidden(world, token)
               for s in leaked(response, person, asked, records_only=governed)}
    changed = [world.b] if TOKENS[token][1] else _hidden(world, token)
    of_b = [e["fullUrl"] for e in writes for person in changed
            if _touches(e, person, asked, only_existing=governed)]
    return Answer(target, status, response.text, secrets, [e["fullUrl"] for e in writes], of_b)


def _touches(entry: dict[str, Any], person: Person, asked: str,
             only_existing: bool = False) -> bool:
    """Whether a written version is one of the person's resources or carries their data
    (beyond what the request itself named); ``only_existing``: one of the person's stored
    resources (a facility writes new records about anyone it treats)."""
    if entry["fullUrl"].rsplit("/", 1)[-1] in person.ids.values():
        return True
    text = json.dumps(entry, ensure_ascii=False)
    return not only_existing and any(secret in text and secret not in asked
                                     for secret in person.secrets())


def _faults(case: Case, name: str, token: str, answer: Answer, world: World,
            via: str) -> list[str]:
    """What is wrong with one answer (empty if nothing)."""
    expected = EXPECTATIONS[name, answer.target][token][via]
    faults = []
    if answer.status != expected:
        faults.append(f"{answer.target}: {answer.status}, expected {expected}: "
                      f"{answer.body[:300]}")
    if answer.leaked:
        faults.append(f"{answer.target}: shows B's {sorted(answer.leaked)}")
    if answer.status >= 400 and answer.writes:
        faults.append(f"{answer.target}: refused ({answer.status}) yet wrote {answer.writes}")
    if answer.writes_of_b:
        faults.append(f"{answer.target}: changed B's record: {answer.writes_of_b}")
    if case.shows and answer.status == expected == 200:
        faults += [f"{answer.target}: does not show {p.ref(case.shows)}"
                   for p in _must_show(world, token, answer.target)
                   if p.ids[case.shows] not in answer.body]
    return faults


def _must_show(world: World, token: str, target: str) -> list[Person]:
    """Whose resource an allowed read aimed at ``target`` shows."""
    sees = [p for p, name in ((world.a, "A"), (world.b, "B")) if name in SEES[token]]
    return {"own": [world.a] if world.a in sees else [],
            "other": [world.b] if world.b in sees else [], "unknown": [], "-": sees}[target]


async def _check_case(world: World, name: str, token: str,
                      way: Callable[[Call, dict[str, str]], Any], via: str = "http") -> None:
    case = CASES[name]
    faults: list[str] = []
    if case.prepare is not None:
        await case.prepare(world)
    since = _now()
    for target in _targets(name):
        call = case.build(world, _target(world, target))
        answer = await _ask(world, token, target, call, way, case.may_write)
        faults += _faults(case, name, token, answer, world, via)
    if not case.may_write and (writes := await _writes_since(world, since)):
        faults.append(f"reads wrote {[e['fullUrl'] for e in writes]}")
    assert not faults, "\n".join(faults)


@on_the_door
@pytest.mark.parametrize("token", list(TOKENS))
@pytest.mark.parametrize("name", list(CASES))
async def test_http_request_answers_as_the_policy_table_says(
    door: Door, name: str, token: str
) -> None:
    _sampled(name, token)
    world = await door.world() if CASES[name].may_write else await door.reading_world()

    async def over_http(call: Call, auth: dict[str, str]) -> tuple[httpx.Response, int]:
        response = await send(door.http, call, auth)
        return response, response.status_code

    await _check_case(world, name, token, over_http)


# -- the same requests as Bundle entries ---------------------------------------------------------


def _entry_status(response: httpx.Response, kind: str) -> int:
    """The status the single entry got (a failed transaction answers with it)."""
    if kind == "transaction" and response.status_code != 200:
        return response.status_code
    assert response.status_code == 200, response.text
    entry = response.json()["entry"][0]
    return int(entry["response"]["status"].split()[0])


BUNDLE_CASES = [name for name, case in CASES.items() if case.in_bundle]


@on_the_door
@pytest.mark.parametrize("token", list(TOKENS))
@pytest.mark.parametrize("name", BUNDLE_CASES)
@pytest.mark.parametrize("kind", ["transaction", "batch"])
async def test_bundle_entry_answers_as_the_same_request_over_http(
    door: Door, kind: str, name: str, token: str
) -> None:
    _sampled(name, token, kind)
    world = await door.world() if CASES[name].may_write else await door.reading_world()

    async def in_bundle(call: Call, auth: dict[str, str]) -> tuple[httpx.Response, int]:
        bundle = {"resourceType": "Bundle", "type": kind, "entry": [as_entry(call)]}
        response = await door.http.post("/fhir", json=bundle, headers={**FHIR, **auth})
        return response, _entry_status(response, kind)

    await _check_case(world, name, token, in_bundle, "bundle")
