"""The instants a write stamps: fast, and the same text ``instant_text`` writes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from fhir_server.storage.versions import instant_of_micros, instant_text, now_instant

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# From 0001-01-01 to 9999-12-31, in microseconds since 1970.
_MICROS = st.integers(-62_135_596_800_000_000, 253_402_300_799_999_999)


@given(_MICROS, _MICROS)
def test_the_cached_second_gives_the_same_text_as_datetime(first: int, second: int) -> None:
    for micros in (first, second, first):  # a cache hit, a miss, a miss back
        expected = instant_text(_EPOCH + timedelta(microseconds=micros))
        assert instant_of_micros(micros) == expected


def test_now_is_now() -> None:
    before = instant_text(datetime.now(UTC))
    now = now_instant()
    after = instant_text(datetime.now(UTC))
    assert before <= now <= after and len(now) == len(before) == 32
