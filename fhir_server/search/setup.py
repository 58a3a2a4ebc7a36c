"""Start-up of the search engine: the registry and the cursor secret.

Paging cursors are signed; every worker of a server must share the secret, so it is derived
from the server's own key in the data directory (created on first start).
"""

from __future__ import annotations

import hashlib

from fhir_server.search.cursor import set_cursor_secret
from fhir_server.search.registry import SearchParameterRegistry
from fhir_server.security.keys import load_server_key
from fhir_server.settings import Settings

__all__ = ["prepare_search"]


def prepare_search(settings: Settings) -> SearchParameterRegistry:
    """Load the registry (R4 plus ``profiles/``) and set the cursor secret."""
    registry = SearchParameterRegistry.load(settings.profiles_dir)
    key = load_server_key(settings.data_dir)
    secret = key.private_key.private_numbers().private_value.to_bytes(32, "big")
    set_cursor_secret(hashlib.sha256(b"fhir-server cursor secret\0" + secret).digest())
    return registry
