"""Opaque, signed keyset cursors for search paging (next/previous links).

A cursor carries the sort-key values and the row id of the page boundary, the direction, the
time it was issued and a fingerprint of the query it belongs to, signed with HMAC-SHA256.
A page after the boundary is found by comparing keys, not by an offset, so paging stays
correct while other clients write. A cursor that was altered, belongs to another query or is
malformed is a ``BadRequest`` (``MSG_CURSOR_INVALID``); one older than ``CURSOR_LIFETIME_S``
is ``Gone`` (``MSG_CURSOR_EXPIRED``).

The signing key is random per process unless ``set_cursor_secret`` is called (servers with
several workers must set the same secret in each).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from fhir_server.errors import BadRequest, Gone
from fhir_server.search.model import SearchQuery

__all__ = [
    "CURSOR_LIFETIME_S",
    "Cursor",
    "decode_cursor",
    "encode_cursor",
    "page_window",
    "set_cursor_secret",
]

CURSOR_LIFETIME_S = 24 * 3600
T = TypeVar("T")
_secret = secrets.token_bytes(32)


@dataclass(frozen=True)
class Cursor:
    """A page boundary: sort-key values and row id; ``forward`` False for a previous page."""

    keys: tuple[Any, ...]
    rid: int
    forward: bool = True


def page_window(
    fetched: Sequence[T], count: int, cursor: Cursor | None
) -> tuple[list[T], bool, bool]:
    """Return the page in display order out of the up to ``count + 1`` rows a keyset query
    fetched after (or, backwards, before) ``cursor``, and whether a next and a previous page
    exist. Going forward, a next page exists if a row beyond this page was found, and a
    previous one if this page was reached by a cursor; going backward, the other way round."""
    forward = cursor is None or cursor.forward
    more = len(fetched) > count
    rows = list(fetched[:count])
    if not forward:
        rows.reverse()
    has_next = more if forward else True
    has_prev = (cursor is not None) if forward else more
    return rows, has_next, has_prev


def set_cursor_secret(secret: bytes) -> None:
    """Use ``secret`` to sign and verify cursors (shared by every worker of a server)."""
    global _secret
    _secret = secret


def fingerprint(query: SearchQuery) -> str:
    """Return a short digest of what the query selects and how it is ordered (for whom: a
    cursor of one caller's search does not page another caller's; grants a store resolved
    into the visibility do not count, so a Consent that changes between pages does not
    break the paging)."""
    seen = query.visibility.unresolved() if query.visibility is not None else None
    selecting = (query.resource_type, query.clauses, query.sort, query.types, query.compartment,
                 seen)
    return hashlib.sha256(repr(selecting).encode()).hexdigest()[:16]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(payload: bytes) -> str:
    return _b64(hmac.new(_secret, payload, hashlib.sha256).digest()[:18])


def encode_cursor(query: SearchQuery, cursor: Cursor) -> str:
    """Return the signed text of ``cursor`` for ``query``."""
    body = [list(cursor.keys), cursor.rid, cursor.forward, int(time.time()), fingerprint(query)]
    payload = orjson.dumps(body)
    return f"{_b64(payload)}.{_sign(payload)}"


def _verified(text: str) -> list[Any] | None:
    """Return the signed body of a cursor, or None if it is malformed or altered."""
    try:
        encoded, signature = text.split(".", 1)
        payload = _unb64(encoded)
        if not hmac.compare_digest(signature, _sign(payload)):
            return None
        body = orjson.loads(payload)
    except (ValueError, TypeError):  # bad base64, bad JSON (orjson's error is a ValueError)
        return None
    shape_ok = isinstance(body, list) and len(body) == 5 and isinstance(body[1], int)
    return body if shape_ok else None


def decode_cursor(query: SearchQuery, text: str) -> Cursor:
    """Return the cursor in ``text``; raise ``BadRequest`` if invalid, ``Gone`` if expired."""
    body = _verified(text)
    if body is None or body[4] != fingerprint(query):
        raise BadRequest(
            "The paging link is invalid or was altered; repeat the search",
            message_id="MSG_CURSOR_INVALID",
        )
    keys, rid, forward, issued, _ = body
    if time.time() - issued > CURSOR_LIFETIME_S:
        raise Gone(
            "The paging link has expired; repeat the search", message_id="MSG_CURSOR_EXPIRED"
        )
    return Cursor(tuple(keys), rid, bool(forward))
