"""Where an issuer's public keys come from: a fixed set, a JWKS file, or a JWKS URL.

Each source answers one question, :meth:`JwksSource.find`: the verification key for a ``kid``.
Keys are parsed once into ``cryptography`` objects and cached, so verifying a token never parses
PEM or JSON key material. Rotation is handled by reloading on an unknown ``kid``: a file source
rereads the file when its modification time changed; a URL source refetches when its cache is
older than ``ttl`` or when an unknown ``kid`` arrives, at most once per ``min_refetch_interval``
so that tokens with random ``kid`` values cannot make the server hammer the issuer.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from fhir_server.security.keys import InvalidKey, VerificationKey, parse_jwks

__all__ = ["FileJwks", "JwksSource", "RemoteJwks", "StaticJwks", "fetch_jwks"]

_log = logging.getLogger(__name__)
MAX_JWKS_BYTES = 1_000_000


class JwksSource(Protocol):
    """Something that knows an issuer's current public keys."""

    def find(self, kid: str) -> VerificationKey | None:
        """Return the key with this ``kid``, or ``None`` if the issuer has none."""
        ...


class StaticJwks:
    """A fixed set of keys (the server's own key, a registered client's JWKS)."""

    def __init__(self, keys: Mapping[str, VerificationKey]) -> None:
        self._keys = dict(keys)

    @classmethod
    def from_document(cls, jwks: Mapping[str, Any]) -> StaticJwks:
        """Parse a JWKS document; raises ``InvalidKey`` if it is not one."""
        return cls(parse_jwks(jwks))

    def find(self, kid: str) -> VerificationKey | None:
        """Return the key with this ``kid`` or ``None``."""
        return self._keys.get(kid)


class FileJwks:
    """A JWKS file, reread when an unknown ``kid`` arrives and the file has changed."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._mtime = path.stat().st_mtime_ns
        self._keys = parse_jwks(json.loads(path.read_bytes()))

    def find(self, kid: str) -> VerificationKey | None:
        """Return the key with this ``kid``, rereading a changed file once if it is unknown."""
        key = self._keys.get(kid)
        if key is None and self._reload_if_changed():
            key = self._keys.get(kid)
        return key

    def _reload_if_changed(self) -> bool:
        with self._lock:
            try:
                mtime = self._path.stat().st_mtime_ns
                if mtime == self._mtime:
                    return False
                self._keys = parse_jwks(json.loads(self._path.read_bytes()))
                self._mtime = mtime
            except (OSError, ValueError) as exc:  # keep the old keys if the file is mid-write
                _log.warning("cannot reload JWKS file %s: %s", self._path, exc)
                return False
            return True


def fetch_jwks(url: str, timeout: float = 5.0) -> dict[str, Any]:
    """Fetch and decode a JWKS document over HTTP(S); raises ``OSError`` or ``ValueError``."""
    if not url.startswith(("https://", "http://")):
        raise ValueError(f"JWKS URL must be http(s): {url!r}")
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # scheme checked above
        body = response.read(MAX_JWKS_BYTES + 1)
    if len(body) > MAX_JWKS_BYTES:
        raise ValueError(f"JWKS document at {url} is too large")
    document = json.loads(body)
    if not isinstance(document, dict):
        raise ValueError(f"JWKS document at {url} is not a JSON object")
    return document


class RemoteJwks:
    """A JWKS URL with a TTL cache and rate-limited refetch on unknown ``kid``.

    ``fetch`` and ``clock`` are injectable for tests. Fetching blocks; call ``find`` from a
    worker thread in async code when a refetch may happen.
    """

    def __init__(
        self,
        url: str,
        *,
        ttl: float = 3600.0,
        min_refetch_interval: float = 60.0,
        fetch: Callable[[str], Mapping[str, Any]] = fetch_jwks,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._ttl = ttl
        self._min_interval = min_refetch_interval
        self._fetch = fetch
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, VerificationKey] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None

    def find(self, kid: str) -> VerificationKey | None:
        """Return the key with this ``kid``, refreshing a stale cache or on an unknown ``kid``."""
        now = self._clock()
        stale = self._fetched_at is None or now - self._fetched_at >= self._ttl
        if stale or kid not in self._keys:
            self._refresh(now)
        return self._keys.get(kid)

    def _refresh(self, now: float) -> None:
        with self._lock:
            if self._attempted_at is not None and now - self._attempted_at < self._min_interval:
                return
            self._attempted_at = now
            try:
                self._keys = parse_jwks(self._fetch(self._url))
                self._fetched_at = now
            except (OSError, ValueError, InvalidKey) as exc:  # keep serving the cached keys
                _log.warning("cannot fetch JWKS from %s: %s", self._url, exc)
