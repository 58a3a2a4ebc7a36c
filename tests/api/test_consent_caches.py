"""What the server remembers per caller (one ``Caller`` per verified token, its names, the
focus of a patient's grants, the grants themselves) changes nothing of what each caller
sees: two clinicians asking in turn from the same address each see what their own Consents
allow, a Consent naming a facility by its Ministry code names that facility only, and a
change of a Consent applies to the very next request of a caller whose state was
remembered."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.conftest import Door
from tests.api.two_patients import FHIR, PROVIDER_CODE, World, privacy_consent
from tests.conftest import token_for

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def _send(world: World, kind: str | dict[str, str], method: str, path: str,
                body: Any = None) -> httpx.Response:
    auth = world.headers(kind) if isinstance(kind, str) else kind
    return await world.http.request(method, path, json=body, headers={**FHIR, **auth})


async def _seen(world: World, kind: str, patient: str) -> tuple[int, int]:
    """The total of a search of ``patient``'s Observations (the focused query) and the
    status of a read of B's laboratory result."""
    search = await _send(world, kind, "GET", f"/fhir/Observation?patient={patient}"
                         "&_total=accurate")
    assert search.status_code == 200, search.text
    read = await _send(world, kind, "GET", f"/fhir/{world.b.ref('lab')}")
    return search.json()["total"], read.status_code


def _by_code(world: World, code: str) -> dict[str, Any]:
    consent = privacy_consent(world.b.ref("patient"), None)
    consent["provision"]["actor"] = [{"role": {"text": "recipient"}, "reference": {
        "identifier": {"system": PROVIDER_CODE, "value": code}}}]
    return consent


async def test_two_clinicians_in_turn_each_see_their_own_consents(door: Door) -> None:
    world = await door.world()
    b = world.b.patient
    for _ in range(2):  # the second round from what was remembered
        assert await _seen(world, "dr.X", b) == (0, 404)  # B's Consent has expired
        assert await _seen(world, "dr.Y", b) == (0, 404)
    token = token_for(world.settings, "patient/*.cruds", patient_id=world.b.patient)
    headers = {"Authorization": f"Bearer {token}"}  # B, the citizen
    created = await _send(world, headers, "POST", "/fhir/Consent", _by_code(world, "79010"))
    assert created.status_code == 201, created.text
    for _ in range(2):
        y_total, y_read = await _seen(world, "dr.Y", b)  # Y's code: Y reads
        assert y_total > 0 and y_read == 200
        assert await _seen(world, "dr.X", b) == (0, 404)  # X is not Y, whatever it shares
    revoked = {**created.json(), "status": "inactive"}
    changed = await _send(world, headers, "PUT", f"/fhir/Consent/{revoked['id']}", revoked)
    assert changed.status_code == 200, changed.text
    assert await _seen(world, "dr.Y", b) == (0, 404)  # the next request after the change
    assert await _seen(world, "dr.X", b) == (0, 404)

