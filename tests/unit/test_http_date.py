"""Last-Modified: ``http_date`` formats each second once and says what RFC 9110 says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhir_server.router.responses import http_date
from fhir_server.storage.versions import instant_text


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                    timezones=st.just(UTC)))
def test_a_stored_instant_gives_the_http_date_of_its_second(moment: datetime) -> None:
    instant = instant_text(moment)
    assert http_date(instant) == format_datetime(moment, usegmt=True)
    assert http_date(instant) == http_date(instant)  # the second time from the cache


def test_instants_of_one_second_share_a_date_and_the_next_second_does_not() -> None:
    moment = datetime(2026, 12, 1, 23, 30, 5, 999999, tzinfo=UTC)
    first = http_date(instant_text(moment))
    assert first == "Tue, 01 Dec 2026 23:30:05 GMT"
    assert http_date(instant_text(moment.replace(microsecond=1))) == first
    assert http_date(instant_text(moment + timedelta(microseconds=1))) == (
        "Tue, 01 Dec 2026 23:30:06 GMT")


def test_other_instant_forms_are_formatted_as_before() -> None:
    assert http_date("2026-12-01T23:30:05+00:00") == "Tue, 01 Dec 2026 23:30:05 GMT"
    with pytest.raises(ValueError):  # HTTP-dates are in GMT only
        http_date(datetime(2026, 12, 1, tzinfo=timezone(timedelta(hours=7))).isoformat())
