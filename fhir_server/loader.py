"""``fhir-server load`` and ``fhir-server reindex``: bulk work through the same interactions
the API uses (validation, conditional logic, transactions), without HTTP.

Inputs are JSON files (one resource or Bundle), NDJSON files (one per line) or directories of
them. Transaction and batch Bundles go through ``interactions.bundle``; other Bundles load
their entries' resources; a resource with an id is an update (create-as-update), without one
a create.

``processes`` > 1 starts that many loader processes on the same store, each taking every n-th
item (validation and indexing need a CPU each; the store serialises their writes, and its
conditional creates are safe across processes, so two Bundles naming one new Patient still make
one).

A folder's files load in ``load_order`` (a bulk export's types, referred-to ones first), and
an item that refers to what is not stored yet is loaded again after the rest
(``load_order.Deferred``), so an export loads back into an empty server with referential
integrity on.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, wait
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson

from fhir_server import decimals
from fhir_server.errors import FhirError
from fhir_server.facilities.known import load_known_facilities
from fhir_server.geography.addresses import address_context
from fhir_server.interactions.context import Services
from fhir_server.interactions.references import local_targets
from fhir_server.load_order import Deferred, load_order, read_on, resolvable
from fhir_server.logs import configure_logging
from fhir_server.progress import Progress
from fhir_server.router.door import handle
from fhir_server.router.request import FhirRequest
from fhir_server.search.setup import prepare_search
from fhir_server.security.caller import SERVER
from fhir_server.settings import Settings
from fhir_server.storage.factory import open_store
from fhir_server.storage.port import DeferrableIndexes

__all__ = ["LoadSummary", "count_items", "load_paths", "open_services"]


@dataclass
class LoadSummary:
    """Counts of a load: items read, resources written, items rejected with reasons."""

    items: int = 0
    resources: int = 0
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: Seconds spent building the search value indexes a load into an empty store deferred
    #: (None when it did not defer them); part of ``seconds``.
    index_seconds: float | None = None
    #: Files of the items that waited for what they refer to (loaded again at the end).
    deferred_files: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """Return the human summary printed at the end of a load."""
        rate = self.resources / self.seconds if self.seconds else 0.0
        lines = [f"loaded {self.resources} resources from {self.items} items in "
                 f"{self.seconds:.1f} s ({rate:.0f} resources/s); rejected {self.rejected}"]
        if self.index_seconds is not None:
            lines.append(f"  search value indexes built after the load in "
                         f"{self.index_seconds:.1f} s (included above)")
        lines += [f"  rejected: {reason}" for reason in self.reasons[:20]]
        if len(self.reasons) > 20:
            lines.append(f"  ... and {len(self.reasons) - 20} more")
        return "\n".join(lines)


def _files(paths: list[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():  # an export's manifest.json is not a resource
            yield from sorted((p for p in path.rglob("*") if p.suffix in (".json", ".ndjson")
                               and p.name != "manifest.json"), key=load_order)
        else:
            yield path


def count_items(paths: list[Path]) -> int:
    """How many items ``load_paths`` would read from ``paths`` (for the progress bar's
    total): one pass over the files, about a second a gigabyte of NDJSON."""
    total = 0
    for path in _files(paths):
        if path.suffix == ".ndjson":
            with path.open("rb") as handle:
                total += sum(1 for line in handle if line.strip())
        else:
            total += 1
    return total


def _share(paths: list[Path], share: tuple[int, int]) -> Iterator[tuple[str, bytes]]:
    """The items of ``paths`` numbered ``k`` modulo ``n`` (``share`` = (k, n)), in order."""
    k, n = share
    number = 0
    for path in _files(paths):
        for job in _items(path):
            if number % n == k:
                yield job
            number += 1


def _items(path: Path) -> Iterator[tuple[str, bytes]]:
    if path.suffix == ".ndjson":
        with path.open("rb") as handle:
            for number, line in enumerate(handle, 1):
                if line.strip():
                    yield f"{path}:{number}", line
    else:
        yield str(path), path.read_bytes()


async def _load_item(services: Services, item: dict[str, Any]) -> int:
    """Load one resource or Bundle through the router, as the server itself; return how many
    resources it wrote."""
    kind = str(item.get("resourceType"))
    if kind == "Bundle" and item.get("type") in ("transaction", "batch"):
        answer = await handle(services, FhirRequest("POST", "bundle", body=item), SERVER)
        entries = answer.body.get("entry", []) if isinstance(answer.body, dict) else []
        return sum(1 for e in entries if e["response"]["status"].startswith("201")
                   or e["response"].get("etag", "") not in ("", 'W/"1"'))
    if kind == "Bundle":
        written = 0
        for entry in item.get("entry") or []:
            if isinstance(entry.get("resource"), dict):
                written += await _load_item(services, entry["resource"])
        return written
    if item.get("id"):
        request = FhirRequest("PUT", "update", kind, str(item["id"]), body=item)
        with address_context(visit=read_on(item)):  # an exported resource, as it was
            return 1 if (await handle(services, request, SERVER)).status == 201 else 0
    await handle(services, FhirRequest("POST", "create", kind, body=item), SERVER)
    return 1


def _show(progress: Progress | None, items: int, resources: int, rejected: int) -> None:
    if progress is not None:
        progress.note(resources=resources, rejected=rejected)
        progress.reached(items)


async def _progress(summary: LoadSummary, report: Callable[[LoadSummary], None],
                    stop: asyncio.Event) -> None:
    while not stop.is_set():
        report(summary)
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    report(summary)


async def _load_one(services: Services, where: str, raw: bytes, summary: LoadSummary,
                    deferred: Deferred | None) -> None:
    """Load one item; one that refers to what is not stored yet waits in ``deferred``."""
    try:
        item = decimals.loads(raw)
        # Await first: "summary.resources += await ..." would read the counter before the
        # await and lose the other workers' additions.
        written = await _patiently(services, item)
        summary.resources += written
    except FhirError as exc:
        if deferred is not None and exc.message_id == "MSG_REFERENCE_NOT_FOUND":
            deferred.add(where, decimals.dumps(item))
        else:
            summary.rejected += 1
            summary.reasons.append(f"{where}: {exc.diagnostics}")
    except (orjson.JSONDecodeError, ValueError, KeyError, TypeError) as exc:
        summary.rejected += 1
        summary.reasons.append(f"{where}: {exc}")


#: Pauses before each new try of an item the store answered busy (its write lock held by
#: others past the busy time-out, as when loader processes are starved of CPU): about a
#: minute in all, then the item is rejected with the reason.
BUSY_PAUSES_S = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


async def _patiently(services: Services, item: dict[str, Any]) -> int:
    """``_load_item``, tried again after each of ``BUSY_PAUSES_S`` while the store answers
    busy: a busy store wrote nothing of the item, and an item is safe to send again."""
    for pause in BUSY_PAUSES_S:
        try:
            return await _load_item(services, item)
        except FhirError as exc:
            if exc.message_id != "MSG_STORAGE_BUSY":
                raise
        await asyncio.sleep(pause)
    return await _load_item(services, item)


async def _worker(services: Services, queue: asyncio.Queue[tuple[str, bytes] | None],
                  summary: LoadSummary, deferred: Deferred) -> None:
    while (job := await queue.get()) is not None:
        where, raw = job
        await _load_one(services, where, raw, summary, deferred)
        summary.items += 1


async def _load_deferred(settings: Settings, summary: LoadSummary) -> None:
    """Load again what waited for its references, pass after pass while a pass stores
    something; reject what still waits then."""
    files, summary.deferred_files = summary.deferred_files, []
    waiting = sum(1 for path in files for _ in Deferred.items(path))
    if not waiting:
        for path in files:
            os.unlink(path)
        return
    async with open_services(settings) as services:
        while True:
            again = Deferred()
            for path in files:
                for where, raw in Deferred.items(path):
                    await _load_one(services, where, raw, summary, again)
                os.unlink(path)
            files = [again.close()]
            if again.count in (0, waiting):
                break
            waiting = again.count
        await _load_cycles(services, files, summary)
    for path in files:
        os.unlink(path)


async def _load_cycles(services: Services, files: list[str], summary: LoadSummary) -> None:
    """Store together the waiting items that refer to each other (and to what is stored),
    without checking references one at a time; reject the rest."""
    base = services.base_url
    targets: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for path in files:
        for _, raw in Deferred.items(path):
            item = decimals.loads(raw)
            targets[str(item.get("resourceType")), str(item.get("id"))] = set(
                local_targets(item, base))
    wanted = sorted({t for refs in targets.values() for t in refs} - set(targets))
    async with services.store.transaction() as tx:
        stored = await tx.existing(wanted) if wanted else set()
    kept = resolvable(targets, stored)
    unchecked = replace(services, settings=services.settings.model_copy(
        update={"referential_integrity": False}))
    for path in files:
        for where, raw in Deferred.items(path):
            item = decimals.loads(raw)
            if (str(item.get("resourceType")), str(item.get("id"))) in kept:
                await _load_one(unchecked, where, raw, summary, None)
            else:
                summary.rejected += 1
                summary.reasons.append(f"{where}: refers to a resource that is not stored")


async def load_paths(settings: Settings, paths: list[Path], concurrency: int = 1,
                     processes: int = 1, defer_indexes: str = "auto",
                     progress: Progress | None = None) -> LoadSummary:
    """Load every item of ``paths`` into the configured store; return the summary.

    ``progress`` is told the items done (and the resources written and items rejected so far)
    every second.

    ``defer_indexes``: ``on`` drops the search value indexes while loading and builds them at
    the end (SQLite store), ``off`` keeps them, ``auto`` defers them when the store holds fewer
    than :data:`SMALL_STORE` resources when the load starts (a new store, or one holding only
    the conformance resources a server stores at start-up). Searches run meanwhile by a server
    on the same store stay correct but slow.
    """
    started = time.monotonic()
    defer = await _should_defer(settings, defer_indexes)
    if processes > 1:
        summary = await asyncio.to_thread(_load_in_processes, settings, paths, concurrency,
                                          processes, defer, progress)
    else:
        def report(current: LoadSummary) -> None:
            _show(progress, current.items, current.resources, current.rejected)

        summary = await _load_share(settings, paths, concurrency, (0, 1), report, defer)
    await _load_deferred(settings, summary)
    if defer:
        building = time.monotonic()
        async with open_services(settings):  # opening the store creates missing indexes
            pass
        summary.index_seconds = time.monotonic() - building
    summary.seconds = time.monotonic() - started
    return summary


#: ``defer_indexes="auto"`` defers below this many resources: building the indexes of what
#: is already stored again at the end then costs a second or two.
SMALL_STORE = 100_000


async def _should_defer(settings: Settings, mode: str) -> bool:
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"defer_indexes is auto, on or off, not {mode!r}")
    if mode == "off":
        return False
    async with open_services(settings) as services:
        store = services.store
        if not isinstance(store, DeferrableIndexes):
            return False  # MongoDB keeps its indexes
        return mode == "on" or await store.holds_fewer_than(SMALL_STORE)


async def _load_share(settings: Settings, paths: list[Path], concurrency: int,
                      share: tuple[int, int], report: Callable[[LoadSummary], None],
                      defer: bool = False) -> LoadSummary:
    summary = LoadSummary()
    async with open_services(settings) as services:
        if defer and isinstance(services.store, DeferrableIndexes):
            # After this process's open, which creates any missing index.
            await services.store.defer_value_indexes()
        queue: asyncio.Queue[tuple[str, bytes] | None] = asyncio.Queue(maxsize=concurrency * 4)
        deferred = Deferred()
        workers = [asyncio.create_task(_worker(services, queue, summary, deferred))
                   for _ in range(max(1, concurrency))]
        stop = asyncio.Event()
        progress = asyncio.create_task(_progress(summary, report, stop))
        for job in _share(paths, share):
            await queue.put(job)
        for _ in workers:
            await queue.put(None)
        await asyncio.gather(*workers)
        stop.set()
        await progress
        summary.deferred_files.append(deferred.close())
    return summary


#: In a loader process: its slot in the counters shared with the parent (items, resources,
#: rejected for each process), set by ``_child_init``.
_counters: Any = None


def _child_init(counters: Any) -> None:
    global _counters
    _counters = counters
    settings = Settings()  # the parent's FHIR_SERVER_* environment
    configure_logging(settings.log_level, settings.log_format)  # a spawned process: its own


def _child_load(settings: Settings, paths: list[Path], concurrency: int,
                share: tuple[int, int], defer: bool) -> LoadSummary:
    slot = share[0] * 3

    def report(current: LoadSummary) -> None:
        _counters[slot:slot + 3] = [current.items, current.resources, current.rejected]

    return asyncio.run(_load_share(settings, paths, concurrency, share, report, defer))


def _load_in_processes(settings: Settings, paths: list[Path], concurrency: int,
                       processes: int, defer: bool, progress: Progress | None) -> LoadSummary:
    """Run ``processes`` loader processes, each on its share of the items; merge the counts."""
    context = multiprocessing.get_context("spawn")  # no inherited SQLite handles or event loop
    counters = context.Array("q", 3 * processes)
    with ProcessPoolExecutor(processes, mp_context=context, initializer=_child_init,
                             initargs=(counters,)) as pool:
        futures = [pool.submit(_child_load, settings, paths, concurrency, (k, processes), defer)
                   for k in range(processes)]
        while wait(futures, timeout=1.0).not_done:
            values = counters[:]
            _show(progress, sum(values[0::3]), sum(values[1::3]), sum(values[2::3]))
        parts = [future.result() for future in futures]
    _show(progress, sum(p.items for p in parts), sum(p.resources for p in parts),
          sum(p.rejected for p in parts))
    return LoadSummary(items=sum(p.items for p in parts),
                       resources=sum(p.resources for p in parts),
                       rejected=sum(p.rejected for p in parts),
                       reasons=[reason for p in parts for reason in p.reasons],
                       deferred_files=[path for p in parts for path in p.deferred_files])


@asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    """Open the configured store and yield the interactions' ``Services``."""
    registry = prepare_search(settings)
    store = open_store(settings, registry)
    await store.open()
    try:
        services = Services(store, settings, registry, handle=handle)
        await load_known_facilities(services)  # what pushes' facility codes are checked against
        yield services
    finally:
        await store.close()
