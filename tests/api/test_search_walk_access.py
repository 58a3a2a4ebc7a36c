"""The random access tests again, with every search that may walk walking in page order
(``search_sql._page``'s plan for many matches, which the small worlds of these tests never
reach on their own): what a citizen (read-only, read-write, granular) and an attacker with
another citizen's token get, and what a clinician or facility gets (whose searches list
their matches whatever their number), must not depend on the threshold."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_server.storage.sqlite import search_sql
from tests.api.test_access_property import (
    test_nothing_a_consent_does_not_share_is_returned_or_changed,
    test_nothing_of_another_patient_is_returned_or_changed,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")  # the module's app (``door``)

__all__ = [
    "test_nothing_a_consent_does_not_share_is_returned_or_changed",
    "test_nothing_of_another_patient_is_returned_or_changed",
]


@pytest.fixture(autouse=True)
def _always_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any search with a match walks (one match is already "many")."""

    def one(conn: Any, query: Any) -> int:
        return 1

    monkeypatch.setattr(search_sql, "candidates", one)
