"""``fhir-server status``, ``compact`` and ``facilities load``: the operator's commands.

The loading code is imported when the command runs: importing it loads the metrics client,
which ``serve`` must configure first (``metrics.directory``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from fhir_server.progress import track
from fhir_server.settings import Settings
from fhir_server.status import describe_status, gather_status

__all__ = ["add_operations_commands"]


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {key: getattr(args, key) for key in ("data_dir", "storage")
                 if getattr(args, key, None) is not None}
    return Settings(**overrides)


def cmd_status(args: argparse.Namespace) -> int:
    """Print the figures of the data directory and its store (as JSON with ``--json``)."""
    status = gather_status(_settings(args))
    print(json.dumps(status, indent=2) if args.json else describe_status(status))
    return 0


async def _load(settings: Settings, path: Path) -> Any:
    from fhir_server.facilities.loading import load_facilities
    from fhir_server.loader import open_services

    with track("facilities", None, "rows", interval_s=settings.progress_interval_s) as progress:
        async with open_services(settings) as services:
            return await load_facilities(services, path, progress)


def cmd_facilities(args: argparse.Namespace) -> int:
    """Load the facility list CSV; exit 1 if any row was not loaded."""
    summary = asyncio.run(_load(_settings(args), Path(args.file)))
    print(summary.describe())
    return 1 if summary.failed else 0


async def _compact(settings: Settings) -> tuple[int, int] | None:
    from fhir_server.loader import open_services
    from fhir_server.storage.sqlite.store import SqliteStore

    with track("compact", None, "versions", interval_s=settings.progress_interval_s) as progress:
        async with open_services(settings) as services:
            store = services.store
            if not isinstance(store, SqliteStore):
                return None
            progress.set_total(store.write_count())
            found: tuple[int, int] = await store.compact_bodies(progress.advance)
            await store.vacuum()
            return found


def cmd_compact(args: argparse.Namespace) -> int:
    """Compress the resource bodies an older release stored as JSON, then rebuild the file
    without the space they left (SQLite; run it with the server stopped: writes wait for the
    rebuild, and the WAL grows to about the new file's size meanwhile)."""
    done = asyncio.run(_compact(_settings(args)))
    if done is None:
        print("this store keeps no bodies to compact (MongoDB)")
        return 0
    print(f"compressed {done[0]} stored versions ({done[1] / 1e6:.1f} MB less) and rebuilt "
          "the file")
    return 0


def add_operations_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``status`` and ``facilities`` on the ``fhir-server`` parser."""
    status = sub.add_parser("status", help="what the data directory and its store hold")
    status.add_argument("--data-dir", type=Path, default=None)
    status.add_argument("--storage", default=None)
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=cmd_status)
    compact = sub.add_parser("compact", help="compress resource bodies stored as JSON by an "
                             "older release and rebuild the file (SQLite; server stopped)")
    compact.add_argument("--data-dir", type=Path, default=None)
    compact.add_argument("--storage", default=None)
    compact.set_defaults(func=cmd_compact)
    facilities = sub.add_parser("facilities", help="the facility registry")
    actions = facilities.add_subparsers(dest="action", required=True)
    load = actions.add_parser("load", help="load the facility list (CSV; docs/operations.md)")
    load.add_argument("file")
    load.add_argument("--data-dir", type=Path, default=None)
    load.add_argument("--storage", default=None)
    load.set_defaults(func=cmd_facilities)
