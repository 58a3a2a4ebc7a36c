"""FHIR date/dateTime/instant parameter values as UTC instants, for ``_since``, ``_at`` and
the like. Parsing is the search engine's (``search.dates``): values without a time zone are
Vietnam time (+07:00), and a partial value stands for its whole precision range."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fhir_server.errors import BadRequest
from fhir_server.search.dates import date_range
from fhir_server.storage.versions import instant_text

__all__ = ["instant_range", "to_storage_instant"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_storage_instant(moment: datetime) -> str:
    """Format ``moment`` like the store's ``last_updated`` column (fixed width, UTC)."""
    return instant_text(moment)


def instant_range(value: str, name: str) -> tuple[datetime, datetime]:
    """Return [start, end) of the period ``value`` denotes; raise ``BadRequest`` if invalid."""
    try:
        low, high = date_range(value)
    except ValueError:
        raise BadRequest(f"Parameter {name}: '{value}' is not a valid date or instant",
                         message_id="MSG_PARAM_INVALID", expression=(name,)) from None
    return _EPOCH + timedelta(microseconds=low), _EPOCH + timedelta(microseconds=high)
