"""The server's own signing key and JWKS parsing."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from fhir_server.security.keys import (
    SERVER_KEY_PATH,
    InvalidKey,
    jwk_thumbprint,
    load_server_key,
    parse_jwk,
    parse_jwks,
)

if TYPE_CHECKING:
    from conftest import Signer


def test_server_key_file_is_created_with_mode_0600_on_first_start(tmp_path: Path) -> None:
    key = load_server_key(tmp_path)
    path = tmp_path / SERVER_KEY_PATH
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert key.algorithm == "ES256"
    assert list(path.parent.iterdir()) == [path]  # no temp file left behind


def test_server_key_is_reused_on_second_start(tmp_path: Path) -> None:
    first = load_server_key(tmp_path)
    content = (tmp_path / SERVER_KEY_PATH).read_bytes()
    second = load_server_key(tmp_path)
    assert second.kid == first.kid
    assert (tmp_path / SERVER_KEY_PATH).read_bytes() == content


def test_server_keys_of_different_data_dirs_differ(tmp_path: Path) -> None:
    assert load_server_key(tmp_path / "a").kid != load_server_key(tmp_path / "b").kid


def test_server_kid_is_the_rfc7638_thumbprint_of_its_public_jwk(tmp_path: Path) -> None:
    key = load_server_key(tmp_path)
    jwk = key.public_jwk()
    assert key.kid == jwk_thumbprint(jwk)
    assert jwk["kid"] == key.kid and jwk["alg"] == "ES256" and "d" not in jwk
    assert key.jwks() == {"keys": [jwk]}


def test_jwk_thumbprint_matches_rfc7638_example() -> None:
    # RFC 7638 §3.1 example key and thumbprint.
    jwk = {
        "kty": "RSA",
        "n": (
            "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7"
            "aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXA"
            "rwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7"
            "d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lF"
            "d2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
        ),
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_parse_jwks_binds_algorithms_to_the_key_type(
    es256: Signer, es384: Signer, rs256: Signer
) -> None:
    keys = parse_jwks({"keys": [es256.public_jwk(), es384.public_jwk(), rs256.public_jwk()]})
    assert keys["es256"].algorithms == {"ES256"}
    assert keys["es384"].algorithms == {"ES384"}
    assert keys["rsa"].algorithms == {"RS256", "RS384", "RS512"}


def test_jwk_alg_member_narrows_the_algorithms(rs256: Signer) -> None:
    assert parse_jwk(rs256.public_jwk(alg="RS384")).algorithms == {"RS384"}


def test_parse_jwks_skips_symmetric_encryption_and_private_keys(es256: Signer) -> None:
    oct_key = {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}
    encryption = es256.with_kid("enc").public_jwk(use="enc")
    private = {**es256.with_kid("priv").public_jwk(), "d": "AAAA"}
    assert parse_jwks({"keys": [oct_key, encryption, private]}) == {}


def test_key_without_kid_is_filed_under_its_thumbprint(es256: Signer) -> None:
    jwk = es256.public_jwk()
    del jwk["kid"]
    assert list(parse_jwks({"keys": [jwk]})) == [jwk_thumbprint(jwk)]


def test_document_without_keys_list_is_not_a_jwks() -> None:
    with pytest.raises(InvalidKey):
        parse_jwks({"kty": "EC"})


def test_mismatched_alg_member_makes_the_key_unusable(es256: Signer) -> None:
    with pytest.raises(InvalidKey):
        parse_jwk(es256.public_jwk(alg="RS256"))
