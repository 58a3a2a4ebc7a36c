"""``fhir-server load`` and ``fhir-server reindex``: bulk work through the same interactions
the API uses (validation, conditional logic, transactions), without HTTP.

Inputs are JSON files (one resource or Bundle), NDJSON files (one per line) or directories of
them. Transaction and batch Bundles go through ``interactions.bundle``; other Bundles load
their entries' resources; a resource with an id is an update (create-as-update), without one
a create.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from fhir_server.errors import FhirError
from fhir_server.interactions import bundle, create, update
from fhir_server.interactions.context import Services
from fhir_server.search.setup import prepare_search
from fhir_server.settings import Settings
from fhir_server.storage.factory import open_store

__all__ = ["LoadSummary", "load_paths", "open_services", "reindex"]


@dataclass
class LoadSummary:
    """Counts of a load: items read, resources written, items rejected with reasons."""

    items: int = 0
    resources: int = 0
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def describe(self) -> str:
        """Return the human summary printed at the end of a load."""
        rate = self.resources / self.seconds if self.seconds else 0.0
        lines = [f"loaded {self.resources} resources from {self.items} items in "
                 f"{self.seconds:.1f} s ({rate:.0f} resources/s); rejected {self.rejected}"]
        lines += [f"  rejected: {reason}" for reason in self.reasons[:20]]
        if len(self.reasons) > 20:
            lines.append(f"  ... and {len(self.reasons) - 20} more")
        return "\n".join(lines)


def _files(paths: list[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.suffix in (".json", ".ndjson"))
        else:
            yield path


def _items(path: Path) -> Iterator[tuple[str, bytes]]:
    if path.suffix == ".ndjson":
        with path.open("rb") as handle:
            for number, line in enumerate(handle, 1):
                if line.strip():
                    yield f"{path}:{number}", line
    else:
        yield str(path), path.read_bytes()


async def _load_item(services: Services, item: dict[str, Any]) -> int:
    """Load one resource or Bundle; return how many resources it wrote."""
    if item.get("resourceType") == "Bundle" and item.get("type") in ("transaction", "batch"):
        outcome = await bundle.process_bundle(services, item)
        entries = (outcome.body or {}).get("entry", [])
        return sum(1 for e in entries if e["response"]["status"].startswith("201")
                   or e["response"].get("etag", "") not in ("", 'W/"1"'))
    if item.get("resourceType") == "Bundle":
        written = 0
        for entry in item.get("entry") or []:
            if isinstance(entry.get("resource"), dict):
                written += await _load_item(services, entry["resource"])
        return written
    if item.get("id"):
        result = await update.update(services, item["resourceType"], item["id"], item)
        return 1 if result.status == 201 else 0
    await create.create(services, str(item.get("resourceType")), item)
    return 1


async def _progress(summary: LoadSummary, started: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        elapsed = time.monotonic() - started
        print(f"\r{summary.items} items, {summary.resources} resources, {summary.rejected} "
              f"rejected, {elapsed:.0f} s", end="", file=sys.stderr, flush=True)
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    print(file=sys.stderr)


async def _worker(services: Services, queue: asyncio.Queue[tuple[str, bytes] | None],
                  summary: LoadSummary) -> None:
    while (job := await queue.get()) is not None:
        where, raw = job
        try:
            # Await first: "summary.resources += await ..." would read the counter before the
            # await and lose the other workers' additions.
            written = await _load_item(services, orjson.loads(raw))
            summary.resources += written
        except (FhirError, orjson.JSONDecodeError, ValueError, KeyError, TypeError) as exc:
            summary.rejected += 1
            text = exc.diagnostics if isinstance(exc, FhirError) else str(exc)
            summary.reasons.append(f"{where}: {text}")
        summary.items += 1


async def load_paths(settings: Settings, paths: list[Path], concurrency: int = 1) -> LoadSummary:
    """Load every item of ``paths`` into the configured store; return the summary."""
    summary = LoadSummary()
    started = time.monotonic()
    async with open_services(settings) as services:
        queue: asyncio.Queue[tuple[str, bytes] | None] = asyncio.Queue(maxsize=concurrency * 4)
        workers = [asyncio.create_task(_worker(services, queue, summary))
                   for _ in range(max(1, concurrency))]
        stop = asyncio.Event()
        progress = asyncio.create_task(_progress(summary, started, stop))
        for path in _files(paths):
            for job in _items(path):
                await queue.put(job)
        for _ in workers:
            await queue.put(None)
        await asyncio.gather(*workers)
        stop.set()
        await progress
    summary.seconds = time.monotonic() - started
    return summary


@asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    """Open the configured store and yield the interactions' ``Services``."""
    registry = prepare_search(settings)
    store = open_store(settings, registry)
    await store.open()
    try:
        yield Services(store, settings, registry)
    finally:
        await store.close()


async def reindex(settings: Settings, resource_type: str | None) -> int:
    """Recompute and rewrite the search index of every current resource; return the count."""
    count = 0
    async with open_services(settings) as services:
        batch: list[dict[str, Any]] = []
        async for stored in _scan(services, resource_type):
            batch.append(stored)
            if len(batch) >= 500:
                count += await _reindex_batch(services, batch)
                batch = []
        count += await _reindex_batch(services, batch)
    return count


async def _scan(services: Services, resource_type: str | None) -> AsyncIterator[dict[str, Any]]:
    async for stored in services.store.scan(resource_type):
        yield stored.resource()


async def _reindex_batch(services: Services, resources: list[dict[str, Any]]) -> int:
    indexes = [(r, services.index(r)) for r in resources]
    async with services.store.transaction() as tx:
        for resource, index in indexes:
            await tx.reindex(resource, index)
    return len(resources)
