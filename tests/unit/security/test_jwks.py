"""Issuer key sources: JWKS files and URLs, caching, rotation and refetch limits."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from fhir_server.security.jwks import FileJwks, RemoteJwks, StaticJwks, fetch_jwks

if TYPE_CHECKING:
    from conftest import Signer


class FakeIssuer:
    """Serves a JWKS document that tests can rotate, counting fetches."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        self.jwks = jwks
        self.fetches = 0
        self.failing = False

    def fetch(self, url: str) -> Mapping[str, Any]:
        self.fetches += 1
        if self.failing:
            raise OSError("connection refused")
        return self.jwks


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def remote(issuer: FakeIssuer, clock: Clock) -> RemoteJwks:
    return RemoteJwks(
        "https://idp.example/jwks",
        ttl=600,
        min_refetch_interval=60,
        fetch=issuer.fetch,
        clock=clock,
    )


def test_remote_jwks_is_fetched_once_and_cached(es256: Signer) -> None:
    issuer, clock = FakeIssuer(es256.jwks()), Clock()
    source = remote(issuer, clock)
    assert source.find("es256") is not None
    clock.now += 100
    assert source.find("es256") is not None
    assert issuer.fetches == 1


def test_remote_jwks_refetches_on_unknown_kid_after_rotation(es256: Signer, es384: Signer) -> None:
    issuer, clock = FakeIssuer(es256.jwks()), Clock()
    source = remote(issuer, clock)
    source.find("es256")
    issuer.jwks = es384.jwks()
    clock.now += 61
    assert source.find("es384") is not None
    assert source.find("es256") is None  # rotated out of the issuer's JWKS
    assert issuer.fetches == 2


def test_unknown_kid_refetch_is_rate_limited(es256: Signer) -> None:
    issuer, clock = FakeIssuer(es256.jwks()), Clock()
    source = remote(issuer, clock)
    for attempt in range(20):
        assert source.find(f"random-{attempt}") is None
    assert issuer.fetches == 1
    clock.now += 60
    source.find("another")
    assert issuer.fetches == 2


def test_stale_cache_is_refreshed_after_ttl(es256: Signer) -> None:
    issuer, clock = FakeIssuer(es256.jwks()), Clock()
    source = remote(issuer, clock)
    source.find("es256")
    clock.now += 601
    source.find("es256")
    assert issuer.fetches == 2


def test_failed_refetch_keeps_serving_cached_keys(es256: Signer) -> None:
    issuer, clock = FakeIssuer(es256.jwks()), Clock()
    source = remote(issuer, clock)
    source.find("es256")
    issuer.failing = True
    clock.now += 601
    assert source.find("es256") is not None
    assert issuer.fetches == 2


def test_jwks_file_is_reread_when_it_changes(tmp_path: Path, es256: Signer, es384: Signer) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(es256.jwks()))
    source = FileJwks(path)
    assert source.find("es384") is None
    path.write_text(json.dumps(es384.jwks()))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert source.find("es384") is not None


def test_static_jwks_finds_its_keys_by_kid(es256: Signer) -> None:
    source = StaticJwks.from_document(es256.jwks())
    assert source.find("es256") is not None and source.find("other") is None


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://idp.example/jwks"])
def test_jwks_url_must_be_http(url: str) -> None:
    with pytest.raises(ValueError):
        fetch_jwks(url)
