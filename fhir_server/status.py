"""``fhir-server status``: what an operator asks first about a data directory.

The store's size, WAL size, last checkpoint, schema version and resources per type (for the
embedded SQLite store, read-only: safe beside a running server), whether the server's signing
key is present, and the registered backend clients. Nothing is created or changed.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fhir_server.security.clients import ClientRegistry, auth_database_path
from fhir_server.security.keys import SERVER_KEY_PATH
from fhir_server.settings import Settings
from fhir_server.storage.sqlite.status import SqliteStatus, sqlite_status

__all__ = ["describe_status", "gather_status"]


def gather_status(settings: Settings) -> dict[str, Any]:
    """The figures of the data directory and store of ``settings``, as plain values."""
    url = settings.storage_url()
    status: dict[str, Any] = {"data_dir": str(settings.data_dir), "storage": url}
    if url.startswith("sqlite:"):
        path = Path(url.removeprefix("sqlite:///").removeprefix("sqlite://"))
        try:
            status["store"] = asdict(sqlite_status(path))
        except FileNotFoundError:
            status["store"] = None
    key = settings.data_dir / SERVER_KEY_PATH
    status["server_key"] = {"path": str(key), "present": key.exists(),
                            "private": key.exists() and not key.stat().st_mode & 0o077}
    database = auth_database_path(settings.data_dir)
    clients = ClientRegistry(database).list() if database.exists() else []
    status["clients"] = [{"client_id": c.client_id, "organization": c.organization}
                         for c in clients]
    return status


def _bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{count} B"


def _store_lines(store: dict[str, Any] | None, url: str) -> list[str]:
    if store is None:
        return [f"store            {url}: no store file yet" if url.startswith("sqlite:")
                else f"store            {url}: figures are read from SQLite stores only "
                     "(MongoDB: docs/mongodb.md)"]
    figures = SqliteStatus(**store)
    checkpoint = ("none yet" if figures.last_checkpoint is None else
                  time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(figures.last_checkpoint))
                  + f" ({time.time() - figures.last_checkpoint:.0f} s ago)")
    lines = [f"store            {figures.path}",
             f"  size           {_bytes(figures.database_bytes + figures.wal_bytes)} "
             f"(database {_bytes(figures.database_bytes)}, WAL {_bytes(figures.wal_bytes)})",
             f"  schema version {figures.schema_version or 'unknown (not opened by a server)'}",
             f"  last checkpoint {checkpoint}",
             f"  resources      {sum(figures.current.values())} current, "
             f"{sum(figures.deleted.values())} deleted, {figures.audit_events} AuditEvents"]
    lines += [f"    {kind:<28} {count}" for kind, count in figures.current.items()]
    return lines


def describe_status(status: dict[str, Any]) -> str:
    """The figures as the lines ``fhir-server status`` prints."""
    key = status["server_key"]
    key_text = ("present" + ("" if key["private"] else ", READABLE BY OTHERS: chmod 600 it")
                if key["present"] else "missing (created at the first start)")
    lines = [f"data directory   {status['data_dir']}",
             *_store_lines(status.get("store"), status["storage"]),
             f"signing key      {key['path']}: {key_text}",
             f"clients          {len(status['clients'])} registered"]
    lines += [f"    {c['client_id']}" + (f" ({c['organization']})" if c["organization"] else "")
              for c in status["clients"]]
    return "\n".join(lines)
