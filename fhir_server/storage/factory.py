"""Choose and build the store named by the storage URL in the settings."""

from __future__ import annotations

from typing import Any

from fhir_server.settings import Settings
from fhir_server.storage.port import ResourceStore
from fhir_server.storage.sqlite.store import SqliteStore

__all__ = ["open_store"]


def open_store(settings: Settings, registry: Any = None) -> ResourceStore:
    """Return an (unopened) store for ``settings.storage_url()``; raise ValueError if unknown.

    ``registry`` is the search parameter registry the store compiles searches with.
    """
    url = settings.storage_url()
    if url.startswith("sqlite:"):
        store = SqliteStore.from_url(url, synchronous=settings.sqlite_synchronous,
                                     busy_timeout_s=settings.sqlite_busy_timeout_s,
                                     memory_mb=settings.worker_memory_mb,
                                     search_timeout_s=settings.search_timeout_s)
        store.registry = registry
        return store
    if url.startswith(("mongodb://", "mongodb+srv://")):
        # Imported here so that the embedded store runs without pymongo installed.
        from fhir_server.storage.mongo.store import MongoStore

        mongo = MongoStore.from_url(url, search_timeout_s=settings.search_timeout_s)
        mongo.registry = registry
        return mongo
    raise ValueError(
        f"Unsupported storage URL: {url!r} (supported: sqlite:///path, mongodb://host/db)"
    )
