"""The embedded store: FHIR resources in one SQLite file (WAL), safe across worker processes.

All SQLite calls run on the event loop's thread: a primary-key read costs tens of
microseconds, less than handing it to a thread pool would. Writes in one process are serialised
by an ``asyncio.Lock``; across processes, ``BEGIN IMMEDIATE`` takes SQLite's write lock, and
when another process holds it the store backs off with ``asyncio.sleep`` (never blocking the
loop in ``busy_timeout``) until ``busy_timeout_s`` has passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from fhir_server.errors import FhirError, Gone, NotFound, SearchTooCostly
from fhir_server.metrics.catalogue import (
    SEARCH_TIMEOUTS,
    WRITE_LOCK_HOLD_SECONDS,
    WRITE_LOCK_WAIT_SECONDS,
    observe_checkpoint,
)
from fhir_server.search.model import Grant, SearchQuery, SearchResult
from fhir_server.storage.outbox import Outbox
from fhir_server.storage.port import (
    Change,
    HistoryPage,
    HistoryQuery,
    ResourceReader,
    StoredResource,
)
from fhir_server.storage.sqlite import (
    audit_log,
    bodies,
    history,
    memory,
    outbox,
    turn,
    wal,
    write_log,
    writes,
)
from fhir_server.storage.sqlite.audit_reader import SqliteAuditLog
from fhir_server.storage.sqlite.consent_sql import GrantMemo, GrantReader, read_grants
from fhir_server.storage.sqlite.offload import run_to_end
from fhir_server.storage.sqlite.schema import (
    CORE_SCHEMA_SQL,
    configure_connection,
    record_schema_version,
)
from fhir_server.storage.sqlite.search_sql import StoreConnection, run_search
from fhir_server.storage.sqlite.search_tables import (
    check_param_keys,
    drop_deferrable_indexes,
)
from fhir_server.storage.sqlite.search_where import Unions
from fhir_server.storage.sqlite.turn import StorageBusy, WriterTurn

__all__ = ["SqliteStore"]

_READ_SQL = (
    "SELECT r.version, r.last_updated, r.deleted, v.content, v.method FROM resources r "
    "JOIN versions v ON v.rid = r.rid AND v.version = r.version WHERE r.type = ? AND r.id = ?"
)
_VREAD_SQL = (
    "SELECT v.version, v.last_updated, v.content, v.method FROM resources r "
    "JOIN versions v ON v.rid = r.rid WHERE r.type = ? AND r.id = ? AND v.version = ?"
)


class IndexTables(Protocol):
    """The search index tables: their schema and how to write a resource's rows."""

    SCHEMA_SQL: str

    def replace_index(
        self, conn: sqlite3.Connection, rid: int, index: Any, skip: Collection[str] = ()
    ) -> None: ...

    def delete_index(self, conn: sqlite3.Connection, rid: int) -> None: ...

    def insert_fresh(
        self, conn: sqlite3.Connection, items: Sequence[tuple[int, Any]],
        skip: Collection[str] = (),
    ) -> None: ...


def _default_index_tables() -> IndexTables | ModuleType:
    from fhir_server.storage.sqlite import search_tables

    return search_tables


_GROUP_LIMIT = 64
_GROUP_WAIT_S = 0.05


@dataclass
class _Group:
    """Scopes sharing one outer SQLite transaction, and the future of its commit."""

    done: asyncio.Future[None]
    members: int = 0
    durable: bool = True
    #: When the group's process took the write turn (``time.monotonic``), for the hold time.
    began: float = 0.0


#: How often the background task checkpoints the WAL into the database file.
_CHECKPOINT_EVERY_S = 1.0
#: Searches running at once in a worker, each in a thread on a connection of its own.
_SEARCH_THREADS = 2
#: How long a search runs on the event loop before it is stopped and run in a thread instead.
_INLINE_BUDGET_S = 0.02
#: SQLite virtual-machine steps between two checks of a search's deadline (about 1 ms).
_PROGRESS_STEPS = 100_000
#: How long opening the store waits for another process's schema work (an index build of a
#: very large store takes minutes); StorageBusy after that.
_OPEN_WAIT_S = 3600.0
#: Versions read per write transaction of ``compact_bodies``.
_COMPACT_BATCH = 2000


#: A WAL of this many frames (pages of 4 KiB: 256 MiB) is started again from its beginning.
#: The restart holds the write turn (15-35 ms on a store of 1,000,000 resources under the visit
#: push), so it should come seldom: at 8,192 frames it came every second or two.
_RESTART_FRAMES = 65536
#: How long the restarting checkpoint waits for readers still on the old WAL.
_RESTART_WAIT_MS = 200
#: Before a restart, PASSIVE passes (at most ``_CATCH_UP_PASSES``) copy the WAL until fewer
#: than ``_CATCH_UP_FRAMES`` frames are left for the restart to copy under the write lock.
_CATCH_UP_FRAMES = 2048
_CATCH_UP_PASSES = 4


_LOG = logging.getLogger("fhir_server.storage")


class _OutOfTime(Exception):
    """A search was still running at its deadline (SQLite interrupted it)."""


class StorageNotSynced(FhirError):
    """500: the commit is in the WAL but syncing the WAL to disk failed; not acknowledged."""

    status = 500
    issue_code = "exception"
    default_message_id = "MSG_STORAGE_SYNC"


Searcher = Callable[[sqlite3.Connection, SearchQuery], SearchResult]
"""A search over one connection (the resources' ``run_search``, the audit log's)."""


def _fail(groups: list[_Group], exc: BaseException) -> None:
    failure = StorageNotSynced(f"The write could not be synced to disk: {exc}")
    for group in groups:
        group.done.set_exception(failure)


class SqliteStore:
    """``ResourceStore`` over a SQLite file; see the module docstring for concurrency."""

    def __init__(
        self,
        path: Path | str,
        *,
        synchronous: str = "FULL",
        busy_timeout_s: float = 10.0,
        memory_mb: int = 1024,
        index_tables: IndexTables | ModuleType | None = None,
        search_timeout_s: float = 30.0,
    ) -> None:
        self.path = str(path)
        self.synchronous = synchronous
        self.busy_timeout_s = busy_timeout_s
        self.memory = memory.budget(memory_mb)
        self._reader: sqlite3.Connection | None = None
        self.search_timeout_s = search_timeout_s
        #: The connections searches run on in threads (see ``search``), while none uses them.
        self._idle_searchers: list[sqlite3.Connection] = []
        self._search_slots = asyncio.Semaphore(_SEARCH_THREADS)
        self._writer: sqlite3.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._unions: tuple[object, Unions] | None = None
        self._waiting = 0
        self._group: _Group | None = None
        # synchronous=FULL is kept by syncing the WAL after COMMIT ourselves (_settle), outside
        # the write lock and turn: the writer connection itself always runs NORMAL.
        self._own_sync = synchronous == "FULL" and self.path != ":memory:"
        self._unsynced: list[_Group] = []
        self._syncer: asyncio.Task[None] | None = None
        self._checkpointer: asyncio.Task[None] | None = None
        #: The WAL's frames when this process's last RESTART checkpoint succeeded: until a
        #: writer starts the WAL over, every PASSIVE one finds that many frames.
        self._restarted_at: int | None = None
        shared = None if self.path == ":memory:" else self.path
        self._turn = WriterTurn(shared and f"{shared}-writer")
        self._checkpoint_claim = WriterTurn(shared and f"{shared}-checkpoint")
        self.registry: Any = None
        self.index_tables = index_tables or _default_index_tables()
        #: AuditEvents live in the audit log (``audit_log``), which indexes them itself.
        self._audit = SqliteAuditLog(self)
        self.audit_log: ResourceReader | None = self._audit
        #: Subscriptions' delivery state and notification events (``storage.outbox``).
        self.outbox: Outbox = outbox.SqliteOutbox(self)
        #: How Consent grants are read: remembered while the patient's grants do not change
        #: (``GrantMemo``), anew for each opening (a database in memory is read each time).
        self._grants_of: GrantReader = read_grants

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SqliteStore:
        """Build a store from ``sqlite:///path`` (or ``sqlite://:memory:`` is refused)."""
        path = url.removeprefix("sqlite:///").removeprefix("sqlite://")
        return cls(path, **options)

    def _connect(self, writer: bool = False) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                               factory=StoreConnection)
        budget = self.memory
        configure_connection(conn, self.synchronous,
                             budget.writer_cache_mb if writer else budget.reader_cache_mb,
                             budget.mmap_mb)
        memory.limit_heap(conn, budget)
        return conn

    async def open(self) -> None:
        """Create the file and schema if needed and open the reader and writer connections."""
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        if self.registry is not None:
            # Parameter codes are stored as hashes: a custom SearchParameter must not collide.
            check_param_keys(definition.code for definition in self.registry)
            _ = self.unions  # found now (about 20 ms), not by the first write
        self._writer = self._connect(writer=True)
        # Start-up may block: another worker may be creating the schema or building an index
        # of a new layout right now (8 s on a store of 1,000,000 resources). It does so holding
        # the turn, so the wait is for the turn, as long as the build takes; SQLite's busy
        # timeout is left for writers outside the server.
        self._turn.open()
        self._checkpoint_claim.open()
        self._writer.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
        try:
            await self._turn.acquire(_OPEN_WAIT_S)
            self._writer.executescript(
                "BEGIN IMMEDIATE;" + CORE_SCHEMA_SQL + bodies.SCHEMA_SQL
                + self.index_tables.SCHEMA_SQL
            )
            audit_log.create_schema(self._writer)
            outbox.create_schema(self._writer)
            record_schema_version(self._writer)
            bodies.install(self._writer)
            self._writer.execute("COMMIT")
        except BaseException:  # nothing of a failed open stays open
            if self._writer.in_transaction:
                self._writer.execute("ROLLBACK")
            self._writer.close()
            self._writer = None
            self._turn.close()
            self._checkpoint_claim.close()
            raise
        finally:
            self._turn.release()
        # The writer never waits inside SQLite: it waits for its turn (WriterTurn), and
        # _begin backs off with asyncio.sleep for writers outside the server.
        self._writer.execute("PRAGMA busy_timeout=0")
        # Commits do not copy the WAL back into the database (a checkpoint of a large store
        # writes pages all over the file and fsyncs it, stalling every writer behind the
        # lock); a background task checkpoints passively instead, beside the writers.
        self._writer.execute("PRAGMA wal_autocheckpoint=0")
        # No fsync inside COMMIT: durable groups are synced after the lock (_settle).
        self._writer.execute("PRAGMA synchronous=NORMAL")
        if self.path != ":memory:":
            self._checkpointer = asyncio.get_running_loop().create_task(self._checkpoints())
        self._reader = self._connect()
        self._grants_of = read_grants if self.path == ":memory:" else GrantMemo().read

    async def _checkpoints(self) -> None:
        """Every ``_CHECKPOINT_EVERY_S``, a checkpoint step on a connection of its own, in a
        thread: a PASSIVE checkpoint copies what no reader still needs and never waits for or
        blocks a writer; now and then a short RESTART one keeps the WAL small."""
        conn = self._connect()
        conn.execute("PRAGMA busy_timeout=0")
        try:
            while True:
                await asyncio.sleep(_CHECKPOINT_EVERY_S)
                await self._checkpoint_step(conn)
        finally:
            conn.close()

    async def _checkpoint_step(self, conn: sqlite3.Connection) -> None:
        """One PASSIVE checkpoint; if the WAL has grown past ``_RESTART_FRAMES``, also one
        that lets the next writer start the WAL again from its beginning.

        A PASSIVE checkpoint never finishes while writes keep coming (each one appends frames
        while it copies), and SQLite starts the WAL over only when a writer finds it fully
        copied; under a steady write load the file grew without end (1 GB after 40,000
        creates), and with it the page cache and the checkpoint's work.
        """
        # One process checkpoints at a time: two would find each other busy, and both
        # would restart the WAL, each holding the write turn.
        if not self._checkpoint_claim.try_acquire():
            return
        # OperationalError: a checkpoint from outside the server is running; its turn.
        try:
            with contextlib.suppress(sqlite3.OperationalError, StorageBusy):
                started = time.monotonic()
                _, frames, copied = await run_to_end(wal.checkpoint, conn, "PASSIVE")
                self._checkpointed("passive", started)
                # Restarted and nothing written since: the next writer starts the WAL over.
                if frames >= _RESTART_FRAMES and frames != self._restarted_at:
                    await self._catch_up(conn, copied)
                    started = time.monotonic()
                    busy, frames, _ = await self._restart_wal(conn)
                    self._checkpointed("restart", started)
                    self._restarted_at = None if busy else frames
        finally:
            self._checkpoint_claim.release()

    def _checkpointed(self, mode: str, started: float) -> None:
        """Note a checkpoint: the metrics, and the claim file's time for ``fhir-server status``
        (the time of the last checkpoint, which SQLite itself does not keep)."""
        try:
            wal_bytes = os.stat(f"{self.path}-wal").st_size
        except FileNotFoundError:
            wal_bytes = 0
        observe_checkpoint(mode, time.monotonic() - started, wal_bytes)
        if self._checkpoint_claim.path is not None:
            os.utime(self._checkpoint_claim.path)

    async def _catch_up(self, conn: sqlite3.Connection, copied: int) -> None:
        """Copy and sync, outside the write lock, nearly all that the restart would.

        SQLite syncs the database file only after a checkpoint that copied the whole WAL,
        which a PASSIVE one under load never does: the pages they copied wait in the OS cache,
        and the restart under the write lock would sync all of them (seconds into a 3 GB
        store, with every writer waiting). The first sync takes a while (0.2 s on the 1M
        store under the visit push), and the writes of that time are copied by more PASSIVE
        passes, each shorter than the one before, until one copies few frames (the restart
        will find about as many); their pages are synced too, still outside the lock. Under
        the visit push the second pass copied 300-900 frames after the first's 2,400-4,900,
        and the second sync took under 20 ms (docs/performance.md). ``copied``: the frames
        copied so far (SQLite counts them from the WAL's beginning).
        """
        await run_to_end(wal.sync_file, self.path)
        for _ in range(_CATCH_UP_PASSES):
            before, copied = copied, (await run_to_end(wal.checkpoint, conn, "PASSIVE"))[2]
            if copied - before < _CATCH_UP_FRAMES:
                break
        await run_to_end(wal.sync_file, self.path)

    async def _restart_wal(self, conn: sqlite3.Connection) -> tuple[int, int, int]:
        """A RESTART checkpoint while this process holds its write lock and turn, so no frame
        is added meanwhile: it copies the frames the PASSIVE ones left and waits up to
        ``_RESTART_WAIT_MS`` for readers still on the old WAL. Returns its (busy, frames,
        frames copied)."""
        async with self._write_lock:
            if self._group is not None:
                self._commit(self._group)
            await self._turn.acquire(self.busy_timeout_s)
            try:
                conn.execute(f"PRAGMA busy_timeout={_RESTART_WAIT_MS}")
                try:
                    return await run_to_end(wal.checkpoint, conn, "RESTART")
                finally:
                    conn.execute("PRAGMA busy_timeout=0")
            finally:
                self._turn.release()

    async def close(self) -> None:
        """Close both connections (and stop the checkpoints; the last closer checkpoints)."""
        if self._checkpointer is not None:
            self._checkpointer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checkpointer
            self._checkpointer = None
        self._audit.close()
        async with self._write_lock:
            if self._group is not None:
                self._commit(self._group)
            if self._syncer is not None:
                await asyncio.wait({self._syncer})  # its failures went to the groups
            for _ in range(_SEARCH_THREADS):  # searches in flight end first
                await self._search_slots.acquire()
            # With every slot held, every search connection is idle.
            for conn in (self._reader, self._writer, *self._idle_searchers):
                if conn is not None:
                    conn.close()
            self._idle_searchers = []
            for _ in range(_SEARCH_THREADS):
                self._search_slots.release()
            self._turn.close()
            self._checkpoint_claim.close()
            self._reader = self._writer = None

    async def holds_fewer_than(self, count: int) -> bool:
        """Whether the store holds fewer than ``count`` resources (deleted ones count, the
        audit log does not); reads at most ``count`` rows."""
        found = self.reader.execute(
            "SELECT count(*) FROM (SELECT 1 FROM resources LIMIT ?)", (count,)).fetchone()[0]
        return bool(found < count)

    async def defer_value_indexes(self) -> None:
        """Drop the search value indexes a bulk load builds again at its end
        (``search_tables.DEFERRABLE_INDEXES``); the next :meth:`open` creates them."""
        async with self.transaction() as tx:
            drop_deferrable_indexes(tx.conn)

    async def compact_bodies(self, advance: Callable[[int], None] | None = None) -> tuple[int, int]:
        """Compress the JSON bodies a store of schema version 1 wrote (``fhir-server compact``),
        ``_COMPACT_BATCH`` versions per write transaction, so that a running server's writes go
        on between them. ``advance`` is told of the versions read (the last is ``seq``-many).
        Returns the bodies rewritten and the bytes saved; the rows shrink where they are, so the
        file keeps its size until :meth:`vacuum`."""
        after, rewritten, saved = 0, 0, 0
        while True:
            async with self.transaction() as tx:
                last, count, gained = bodies.compact_batch(tx.conn, after, _COMPACT_BATCH)
            if last == after:
                return rewritten, saved
            if advance is not None:
                advance(last - after)
            after, rewritten, saved = last, rewritten + count, saved + gained

    async def vacuum(self) -> None:
        """Rebuild the file without its free space (``VACUUM``), then empty the WAL. Writers
        wait meanwhile (seconds per 100,000 resources): for ``fhir-server compact``, with the
        server stopped."""
        async with self._write_lock:
            await self._turn.acquire(_OPEN_WAIT_S)
            try:
                # The rebuilt copy goes to a temporary file, not memory (the size of the store).
                self._writer_conn().execute("PRAGMA temp_store=FILE")
                await run_to_end(self._writer_conn().execute, "VACUUM")
                self._writer_conn().execute("PRAGMA temp_store=MEMORY")
                await run_to_end(wal.checkpoint, self._writer_conn(), "TRUNCATE")
            finally:
                self._turn.release()

    def _writer_conn(self) -> sqlite3.Connection:
        if self._writer is None:
            raise RuntimeError("store is not open")
        return self._writer

    def write_count(self) -> int:
        """The number of versions written (the greatest ``seq``)."""
        return write_log.write_position(self.reader)[0]

    @property
    def unions(self) -> Unions:
        """The registry's union parameters: their rows are not stored (the codes are the
        ``skip`` of the index writes), and searches read their members' rows instead
        (``search_where.Unions``)."""
        if self.registry is None:
            return Unions()
        if self._unions is None or self._unions[0] is not self.registry:
            self._unions = (self.registry, Unions.of(self.registry))
        return self._unions[1]

    @property
    def reader(self) -> sqlite3.Connection:
        """The connection used for reads outside write transactions."""
        if self._reader is None:
            raise RuntimeError("store is not open")
        return self._reader

    async def ping(self) -> None:
        """Run a trivial query; raises if the database cannot be read."""
        self.reader.execute("SELECT count(*) FROM store_meta").fetchone()

    async def read(self, resource_type: str, id: str) -> StoredResource:
        """Return the current version; raise ``NotFound`` or ``Gone``."""
        row = self.reader.execute(_READ_SQL, (resource_type, id)).fetchone()
        if row is None:
            raise NotFound(f"{resource_type}/{id} is not known", message_id="MSG_NO_EXIST")
        version, last_updated, deleted, content, method = row
        if deleted:
            raise Gone(
                f"{resource_type}/{id} was deleted",
                headers={"ETag": f'W/"{version}"', "Last-Modified": last_updated},
            )
        return StoredResource(resource_type, id, version, last_updated,
                              bodies.json_bytes(content), method)

    async def vread(self, resource_type: str, id: str, version: int) -> StoredResource:
        """Return one version; a deletion version raises ``Gone``."""
        row = self.reader.execute(_VREAD_SQL, (resource_type, id, version)).fetchone()
        if row is None:
            raise NotFound(
                f"{resource_type}/{id}/_history/{version} is not known",
                message_id="MSG_NO_EXIST_VERSION",
            )
        found_version, last_updated, content, method = row
        if content is None:
            raise Gone(f"{resource_type}/{id} version {version} is a deletion")
        return StoredResource(resource_type, id, found_version, last_updated,
                              bodies.json_bytes(content), method)

    async def history(self, query: HistoryQuery) -> HistoryPage:
        """Return a page of versions, newest first (see ``history.fetch_page``); system
        history leaves AuditEvents (in the audit log) out."""
        return history.fetch_page(self.reader, query)

    async def consent_grants(self, patients: Sequence[str],
                             actors: Collection[str] | None = None) -> list[Grant]:
        """The grants of the current Consents about ``patients`` (``consent_grant``; naming
        one of ``actors`` or everyone, when given)."""
        return self._grants_of(self.reader, patients, actors)

    async def search(self, query: SearchQuery) -> SearchResult:
        """Run a compiled search within ``search_timeout_s``.

        A search can read far more rows than it returns (a ``:missing`` over every
        Observation, a chain), and on the event loop such a search stalled every other request
        of the worker. Most searches take a millisecond or two, and a hop to a thread cost
        them dearly (a cheap search with an include: 4,245 against 2,299 requests/s). So a
        search first runs on the loop for at most ``_INLINE_BUDGET_S``; one that is not done
        by then is stopped and runs again in a thread, on one of ``_SEARCH_THREADS``
        connections of its own, until the deadline (``SearchTooCostly`` after it).
        """
        return await self.run_timed(lambda conn, found: run_search(
            conn, found, self.registry, self.unions, self._grants_of), query)

    async def run_timed(self, search: Searcher, query: SearchQuery) -> SearchResult:
        """Run ``search(connection, query)`` as ``search`` describes: on the loop first, then
        in a thread until ``search_timeout_s`` (``SearchTooCostly`` after it)."""
        reader = self.reader
        started = time.monotonic()
        try:
            return self._search_until(search, reader, query, started + _INLINE_BUDGET_S)
        except _OutOfTime:
            pass
        async with self._search_slots:
            if self.path == ":memory:":  # another connection would be another database
                conn = reader
            else:
                conn = self._idle_searchers.pop() if self._idle_searchers else self._connect()
            try:
                deadline = started + self.search_timeout_s
                return await run_to_end(self._search_until, search, conn, query, deadline)
            except _OutOfTime:
                SEARCH_TIMEOUTS.labels(query.resource_type or "").inc()
                raise SearchTooCostly.after(self.search_timeout_s) from None
            finally:
                if conn is not reader:
                    self._idle_searchers.append(conn)

    def _search_until(
        self, search: Searcher, conn: sqlite3.Connection, query: SearchQuery, deadline: float
    ) -> SearchResult:
        """Run the search on ``conn``; ``_OutOfTime`` once SQLite is still at it at ``deadline``."""
        conn.set_progress_handler(lambda: time.monotonic() > deadline, _PROGRESS_STEPS)
        try:
            return search(conn, query)
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorname", "") != "SQLITE_INTERRUPT":
                raise
            raise _OutOfTime from None
        finally:
            conn.set_progress_handler(None, 0)

    async def write_position(self) -> tuple[int, str | None]:
        """The newest write's ``seq`` and ``lastUpdated`` (``port.WriteLog``)."""
        return write_log.write_position(self.reader)

    async def changes_after(self, seq: int, limit: int) -> list[Change]:
        """Versions written after ``seq``, oldest first (``port.WriteLog``)."""
        return write_log.changes_after(self.reader, seq, limit)

    async def version_at(self, resource_type: str, id: str, seq: int) -> StoredResource | None:
        """The version current at ``seq`` (``port.WriteLog``)."""
        return write_log.version_at(self.reader, resource_type, id, seq)

    async def scan(self, resource_type: str | None = None) -> AsyncIterator[StoredResource]:
        """Yield every current resource (of one type, or all), in batches by ``rid``."""
        async for item in writes.scan(self.reader, resource_type):
            yield item

    @asynccontextmanager
    async def transaction(self, *, durable: bool = True) -> AsyncIterator[writes.SqliteTransaction]:
        """An atomic write scope; group commit makes concurrent scopes share one fsync.

        Scopes run one at a time (the write lock), each inside a SAVEPOINT of an outer SQLite
        transaction. A scope that ends while others are waiting leaves the outer transaction
        open for them; the last one of the group commits (on the loop: ``_commit``). Every
        scope returns only after the commit that includes it is on disk (``_settle``: the WAL
        sync after the lock), so an acknowledged write is durable; a failing scope rolls back
        to its own savepoint only.

        ``durable=False`` (the batches of read AuditEvents) lets the group skip the WAL sync
        when no durable scope shares it: still atomic, and it survives the process being
        killed, but not a power cut. A durable scope joining such a group makes it durable.
        """
        conn = await self._enter(durable)
        group = self._group
        assert group is not None
        tx = writes.SqliteTransaction(conn, self)
        try:
            yield tx
            tx.flush()  # the index rows it kept back (SqliteTransaction.flush)
        except BaseException:
            self._undo_scope(conn, group)
            await self._leave(group)
            raise
        conn.execute("RELEASE scope")
        await self._leave(group)
        await self._committed(group)

    async def _enter(self, durable: bool = True) -> sqlite3.Connection:
        asked = time.monotonic()
        self._waiting += 1
        try:
            await self._write_lock.acquire()
        finally:
            self._waiting -= 1
        conn = self._writer
        try:
            if conn is None:
                raise RuntimeError("store is not open")
            if self._group is not None:
                # A durable scope joining a relaxed group: the WAL sync after its commit covers
                # every scope of it.
                self._group.durable = self._group.durable or durable
            else:
                await self._turn.acquire(self.busy_timeout_s)
                began = time.monotonic()
                try:
                    await self._begin(conn)
                except BaseException:
                    self._turn.release()
                    raise
                self._group = _Group(asyncio.get_running_loop().create_future(), durable=durable,
                                     began=began)
            conn.execute("SAVEPOINT scope")
        except BaseException:
            self._write_lock.release()
            raise
        WRITE_LOCK_WAIT_SECONDS.observe(time.monotonic() - asked)
        return conn

    def _undo_scope(self, conn: sqlite3.Connection, group: _Group) -> None:
        if conn.in_transaction:
            conn.execute("ROLLBACK TO scope")
            conn.execute("RELEASE scope")
            return
        # SQLite abandoned the whole outer transaction: every scope of the group is lost.
        self._group = None
        self._turn.release()
        if not group.done.done():
            group.done.set_exception(StorageBusy("The write was rolled back; try again"))

    async def _leave(self, group: _Group) -> None:
        """Release the lock, committing first unless another scope is about to join."""
        try:
            group.members += 1
            if self._group is group and (self._waiting == 0 or group.members >= _GROUP_LIMIT):
                self._commit(group)
        finally:
            self._write_lock.release()

    def _commit(self, group: _Group) -> None:
        """COMMIT on the event loop's thread, then pass the turn on at once.

        The turn is the serial resource of the whole server: every millisecond it is held
        beyond SQLite's own work is lost to every process. Run in a thread, the COMMIT waited
        for the thread to start and then for the interpreter lock to come back from the event
        loop (busy validating other Bundles: up to the 5 ms switch interval each way), 2-5 ms
        per commit group held for nothing (docs/performance.md, 2026-12-07 "The write lock's
        hand-over"). Here the loop is blocked for SQLite's own COMMIT (writing the group's
        pages to the WAL, no fsync: ``_settle``) and nothing else. Nothing can cancel it
        half-way: the group's fate is what the COMMIT did.
        """
        conn = self._writer
        assert conn is not None
        self._group = None
        try:
            turn.commit_passing_turn(conn, self._turn)
        except BaseException as exc:
            group.done.set_exception(exc)
            raise
        finally:
            self._turn.release()  # a no-op, unless the COMMIT raised before releasing it
        WRITE_LOCK_HOLD_SECONDS.observe(self._turn.released_since(group.began) - group.began)
        self._settle(group)

    def _settle(self, group: _Group) -> None:
        """After the group's COMMIT: acknowledge it, once the WAL is on disk if durable.

        With ``synchronous=FULL`` SQLite would fsync the WAL inside COMMIT, holding the write
        lock and the turn of every process for the fsync (0.5-2 ms on this machine's disk).
        The writer runs NORMAL instead, and the syncer fsyncs the WAL after the lock is
        released; the group's scopes return only then, so an acknowledged write is as durable
        as under FULL. Groups committed while a sync runs share the next one.
        """
        if not (group.durable and self._own_sync):
            group.done.set_result(None)
            return
        self._unsynced.append(group)
        if self._syncer is None or self._syncer.done():
            self._syncer = asyncio.get_running_loop().create_task(self._sync_wal())

    async def _sync_wal(self) -> None:
        while self._unsynced:
            batch, self._unsynced = self._unsynced, []
            try:
                await run_to_end(wal.sync_commits, self.path)
            except Exception as exc:
                _LOG.error("syncing the WAL of %s failed (%d commits not acknowledged): %r",
                           self.path, len(batch), exc)
                _fail(batch, exc)
                continue
            except BaseException as exc:  # cancelled: fail everything still waiting
                _fail(batch + self._unsynced, exc)
                self._unsynced = []
                raise
            for group in batch:
                group.done.set_result(None)

    async def _committed(self, group: _Group) -> None:
        """Wait for the group's commit; commit it ourselves if nobody else came along."""
        while not group.done.done():
            try:
                await asyncio.wait_for(asyncio.shield(group.done), _GROUP_WAIT_S)
            except TimeoutError:
                async with self._write_lock:
                    if self._group is group:
                        self._commit(group)
        group.done.result()

    async def _begin(self, conn: sqlite3.Connection) -> None:
        """``BEGIN IMMEDIATE`` with async back-off while another process writes."""
        deadline = time.monotonic() + self.busy_timeout_s
        delay = 0.0005
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() > deadline:
                    raise StorageBusy("The database is busy; try again later") from None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.002)

    async def find_many(self, queries: Sequence[SearchQuery]) -> list[list[str]]:
        """``find_many`` on the committed data (the reader connection), outside any lock."""
        return await writes.SqliteTransaction(self.reader, self).find_many(queries)
