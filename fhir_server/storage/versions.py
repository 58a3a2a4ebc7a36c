"""What every store does the same way with versions: the instant of a write and whether an
update changes anything (an update equal to the current version creates no new one)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

__all__ = ["content_equal", "instant_text", "now_instant"]


def instant_text(moment: datetime) -> str:
    """Return ``moment`` as the stores write ``lastUpdated``: fixed width, UTC, sorts as text."""
    # isoformat is fixed width for every year (strftime's %Y drops the leading zeros of
    # years before 1000 here, which would break comparing instants as text) and faster.
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def now_instant() -> str:
    """Return the current time as a stored ``lastUpdated`` instant."""
    return instant_text(datetime.now(UTC))


def _without_version_meta(resource: dict[str, Any]) -> dict[str, Any]:
    meta = resource.get("meta")
    if not isinstance(meta, dict):
        return resource
    rest = {k: v for k, v in meta.items() if k not in ("versionId", "lastUpdated")}
    out = {k: v for k, v in resource.items() if k != "meta"}
    if rest:
        out["meta"] = rest
    return out


def content_equal(stored: bytes, resource: dict[str, Any]) -> bool:
    """Return True if ``resource`` equals the stored JSON, ignoring versionId/lastUpdated."""
    current = orjson.loads(stored)
    return bool(_without_version_meta(current) == _without_version_meta(resource))
