"""An in-process stand-in for ``pymongo.AsyncMongoClient``: only the surface MongoStore uses.

No maintained fake speaks PyMongo's async API with transactions (``mongomock`` is synchronous
and ignores sessions; ``mongomock-motor`` wraps Motor's API, not ``AsyncMongoClient``'s), so
this one evaluates the filter and update documents the adapter produces: equality (arrays
match by element, None matches a missing field), ``$in``, ``$nin``, ``$lt/$lte/$gt/$gte``
(within one BSON type only, as MongoDB's type bracketing), ``$ne``, ``$exists``, ``$regex``,
``$elemMatch``, ``$and``, ``$or``, ``$nor``; sorts on dotted paths in BSON type order, an array
by its least element ascending and its greatest descending, missing or null first ascending;
``count_documents``; updates ``$set`` and ``$inc`` with upsert;
unique indexes; sessions whose transactions work on a snapshot and commit first-committer-wins
(a document changed by another commit since the snapshot fails the commit with a
``WriteConflict`` labelled ``TransientTransactionError``, as a real server would).

It proves the adapter's logic, not MongoDB's: index use, real isolation and sharding need a
real server (``FHIR_SERVER_TEST_MONGODB_URL``).
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from pymongo.errors import DuplicateKeyError, OperationFailure

__all__ = ["FakeMongoClient", "matches", "sort_key"]

Docs = dict[str, dict[Any, dict[str, Any]]]
_MISSING = object()


def _values(doc: Any, path: list[str]) -> Iterator[Any]:
    """Yield the values at ``path``, descending into arrays as MongoDB does."""
    if not path:
        yield doc
        return
    if isinstance(doc, list):
        for item in doc:
            yield from _values(item, path)
        return
    if not isinstance(doc, dict):
        yield _MISSING
        return
    yield from _values(doc.get(path[0], _MISSING), path[1:])


def _candidates(value: Any) -> list[Any]:
    """A value, plus its elements when it is an array (equality matches either)."""
    return [value, *value] if isinstance(value, list) else [value]


def _equal(value: Any, wanted: Any) -> bool:
    if wanted is None:
        return value is _MISSING or value is None or (isinstance(value, list) and None in value)
    return any(c == wanted for c in _candidates(value) if c is not _MISSING)


def _compare(value: Any, op: str, bound: Any) -> bool:
    for c in _candidates(value):
        if (
            c is _MISSING
            or c is None
            or (
                type(c) is not type(bound)
                and not (isinstance(c, int | float) and isinstance(bound, int | float))
            )
        ):
            continue
        if {"$lt": c < bound, "$lte": c <= bound, "$gt": c > bound, "$gte": c >= bound}[op]:
            return True
    return False


def _operator(values: list[Any], op: str, arg: Any) -> bool:
    if op == "$eq":
        return any(_equal(v, arg) for v in values)
    if op == "$ne":
        return not any(_equal(v, arg) for v in values)
    if op == "$in":
        return any(_equal(v, a) for v in values for a in arg)
    if op == "$nin":
        return not any(_equal(v, a) for v in values for a in arg)
    if op == "$regex":
        pattern = re.compile(arg)
        return any(isinstance(c, str) and pattern.search(c) for v in values
                   for c in _candidates(v))  # fmt: skip
    if op in ("$lt", "$lte", "$gt", "$gte"):
        return any(_compare(v, op, arg) for v in values)
    if op == "$exists":
        return any(v is not _MISSING for v in values) == bool(arg)
    if op == "$elemMatch":
        return any(isinstance(v, list) and any(_element_matches(e, arg) for e in v)
                   for v in values)
    raise NotImplementedError(f"fake MongoDB does not evaluate {op}")


def _element_matches(element: Any, condition: dict[str, Any]) -> bool:
    """``$elemMatch`` on one array element: a document, or a scalar under operators."""
    if all(key.startswith("$") for key in condition):
        return all(_operator([element], op, arg) for op, arg in condition.items())
    return isinstance(element, dict) and matches(element, condition)


def _field_matches(doc: dict[str, Any], path: str, condition: Any) -> bool:
    values = list(_values(doc, path.split(".")))
    if isinstance(condition, dict) and condition and all(k.startswith("$") for k in condition):
        return all(_operator(values, op, arg) for op, arg in condition.items())
    return any(_equal(v, condition) for v in values)


def matches(doc: dict[str, Any], filter_: dict[str, Any]) -> bool:
    """Return whether ``doc`` passes the filter document ``filter_``."""
    for key, condition in filter_.items():
        if key == "$and":
            ok = all(matches(doc, sub) for sub in condition)
        elif key == "$or":
            ok = any(matches(doc, sub) for sub in condition)
        elif key == "$nor":
            ok = not any(matches(doc, sub) for sub in condition)
        else:
            ok = _field_matches(doc, key, condition)
        if not ok:
            return False
    return True


def _project(doc: dict[str, Any], keep: list[str]) -> dict[str, Any]:
    """The fields of ``doc`` named by ``keep`` (dotted names keep a sub-document's field)."""
    out: dict[str, Any] = {"_id": doc["_id"]} if "_id" in doc else {}
    for key in keep:
        head, _, rest = key.partition(".")
        if head not in doc:
            continue
        value = doc[head]
        if rest and isinstance(value, dict):
            inner = _project(value, [rest])
            inner.pop("_id", None)
            out[head] = {**out.get(head, {}), **inner}
        else:
            out[head] = value
    return out


_BSON_ORDER: tuple[tuple[type | tuple[type, ...], int], ...] = (
    (bool, 8), ((int, float), 2), (str, 3), (dict, 4), (list, 5), (bytes, 6),
)  # fmt: skip


def _bson_key(value: Any) -> tuple[int, Any]:
    """Order values as BSON does across types: null < numbers < strings < objects..."""
    if value is None:
        return (1, 0)
    for kinds, rank in _BSON_ORDER:  # bool before int: a bool is an int in Python
        if isinstance(value, kinds):
            return (rank, value if rank in (2, 3, 6) else repr(value))
    return (9, repr(value))


def sort_key(doc: dict[str, Any], path: str, descending: bool) -> tuple[int, Any]:
    """The value MongoDB sorts ``doc`` by: an array's least (ascending) or greatest element."""
    leaves: list[Any] = []
    for value in _values(doc, path.split(".")):
        leaves.extend(value if isinstance(value, list) else [value])
    keys = [_bson_key(v) for v in leaves if v is not _MISSING] or [_bson_key(None)]
    return max(keys) if descending else min(keys)


def _apply_update(doc: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    for op, fields in update.items():
        for name, value in fields.items():
            if op == "$set":
                out[name] = copy.deepcopy(value)
            elif op == "$inc":
                out[name] = out.get(name, 0) + value
            else:
                raise NotImplementedError(f"fake MongoDB does not apply {op}")
    return out


@dataclass
class _Result:
    matched_count: int = 0
    modified_count: int = 0
    deleted_count: int = 0
    upserted_id: Any = None
    inserted_id: Any = None


@dataclass
class _State:
    """The committed documents, each document's revision, and the unique indexes."""

    docs: Docs = field(default_factory=dict)
    revisions: dict[tuple[str, Any], int] = field(default_factory=dict)
    unique: dict[str, list[list[str]]] = field(default_factory=dict)
    indexes: list[tuple[str, list[tuple[str, int]], dict[str, Any]]] = field(default_factory=list)
    clock: Iterator[int] = field(default_factory=itertools.count)


class FakeSession:
    """``AsyncClientSession``: a transaction works on a snapshot, committed atomically."""

    def __init__(self, state: _State) -> None:
        self._state = state
        self.snapshot: Docs | None = None
        self._base: dict[tuple[str, Any], int] = {}
        self.touched: set[tuple[str, Any]] = set()

    @property
    def in_transaction(self) -> bool:
        return self.snapshot is not None

    async def __aenter__(self) -> FakeSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.snapshot = None

    async def start_transaction(self) -> None:
        # Stored documents are never changed in place (every write stores a new copy, every
        # read hands out a copy), so copying the collections' maps is a consistent snapshot.
        self.snapshot = {name: dict(docs) for name, docs in self._state.docs.items()}
        self._base = dict(self._state.revisions)
        self.touched = set()

    async def abort_transaction(self) -> None:
        self.snapshot = None

    async def commit_transaction(self) -> None:
        snapshot, self.snapshot = self.snapshot, None
        assert snapshot is not None, "no transaction in progress"
        for key in self.touched:
            if self._state.revisions.get(key) != self._base.get(key):
                raise OperationFailure(
                    "WriteConflict", 112, {"errorLabels": ["TransientTransactionError"]}
                )
        for coll, id_ in self.touched:
            doc = snapshot.get(coll, {}).get(id_)
            _write(self._state, coll, id_, doc)


def _write(state: _State, coll: str, id_: Any, doc: dict[str, Any] | None) -> None:
    docs = state.docs.setdefault(coll, {})
    if doc is None:
        docs.pop(id_, None)
    else:
        docs[id_] = doc
    state.revisions[(coll, id_)] = next(state.clock)


class FakeCursor:
    """An async cursor over a list of documents."""

    def __init__(self, docs: list[dict[str, Any]]) -> None:
        self._docs = docs

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[dict[str, Any]]:
        for doc in self._docs:
            yield doc

    async def to_list(self, length: int | None = None) -> list[dict[str, Any]]:
        return self._docs[:length] if length else list(self._docs)


class FakeCollection:
    """``AsyncCollection``: reads and writes, in a session's transaction when given one."""

    def __init__(self, state: _State, name: str) -> None:
        self._state = state
        self.name = name

    def _docs(self, session: FakeSession | None) -> dict[Any, dict[str, Any]]:
        if session is not None and session.snapshot is not None:
            return session.snapshot.setdefault(self.name, {})
        return self._state.docs.setdefault(self.name, {})

    def _store(self, session: FakeSession | None, doc: dict[str, Any] | None, id_: Any) -> None:
        if session is not None and session.snapshot is not None:
            docs = session.snapshot.setdefault(self.name, {})
            if doc is None:
                docs.pop(id_, None)
            else:
                docs[id_] = doc
            session.touched.add((self.name, id_))
        else:
            _write(self._state, self.name, id_, doc)

    def _check_unique(self, docs: dict[Any, dict[str, Any]], doc: dict[str, Any]) -> None:
        for keys in self._state.unique.get(self.name, []):
            value = [doc.get(k) for k in keys]
            for other in docs.values():
                if other["_id"] != doc["_id"] and [other.get(k) for k in keys] == value:
                    raise DuplicateKeyError(f"E11000 duplicate key {keys}={value}", 11000)

    def _put(self, session: FakeSession | None, doc: dict[str, Any]) -> None:
        self._check_unique(self._docs(session), doc)
        self._store(session, copy.deepcopy(doc), doc["_id"])

    async def create_index(self, keys: list[tuple[str, int]], **options: Any) -> str:
        self._state.indexes.append((self.name, list(keys), dict(options)))
        if options.get("unique"):
            self._state.unique.setdefault(self.name, []).append([k for k, _ in keys])
        return str(options.get("name", "_".join(k for k, _ in keys)))

    async def find_one(
        self, filter_: dict[str, Any], *, session: FakeSession | None = None
    ) -> dict[str, Any] | None:
        found = self._matching(filter_, session)
        return copy.deepcopy(found[0]) if found else None

    def _matching(self, filter_: dict[str, Any], session: FakeSession | None) -> list[Any]:
        docs = self._docs(session)
        wanted = filter_.get("_id")
        if isinstance(wanted, str | int):  # by _id: as MongoDB's _id index answers
            candidates = [docs[wanted]] if wanted in docs else []
        elif isinstance(wanted, dict) and list(wanted) == ["$in"]:
            keys = set(wanted["$in"])  # in the collection's natural order, as a scan
            candidates = [d for k, d in docs.items() if k in keys]
        else:
            candidates = list(docs.values())
        return [d for d in candidates if matches(d, filter_)]

    def find(
        self,
        filter_: dict[str, Any] | None = None,
        *,
        projection: dict[str, int] | None = None,
        sort: list[tuple[str, int]] | None = None,
        limit: int = 0,
        session: FakeSession | None = None,
    ) -> FakeCursor:
        found = self._matching(filter_ or {}, session)
        for name, direction in reversed(sort or []):
            descending = direction < 0
            found.sort(key=lambda d, n=name, r=descending: sort_key(d, n, r), reverse=descending)  # type: ignore[misc]
        if limit:
            found = found[:limit]
        if projection:
            keep = [k for k, v in projection.items() if v]
            found = [_project(d, keep) for d in found]
        return FakeCursor(copy.deepcopy(found))

    async def count_documents(
        self, filter_: dict[str, Any], *, session: FakeSession | None = None
    ) -> int:
        return len(self._matching(filter_, session))

    async def insert_one(
        self, doc: dict[str, Any], *, session: FakeSession | None = None
    ) -> _Result:
        if doc["_id"] in self._docs(session):
            raise DuplicateKeyError(f"E11000 duplicate key _id={doc['_id']!r}", 11000)
        self._put(session, doc)
        return _Result(inserted_id=doc["_id"])

    async def replace_one(
        self, filter_: dict[str, Any], doc: dict[str, Any], *, upsert: bool = False,
        session: FakeSession | None = None,
    ) -> _Result:  # fmt: skip
        found = self._matching(filter_, session)
        if found:
            self._put(session, {**doc, "_id": found[0]["_id"]})
            return _Result(matched_count=1, modified_count=1)
        if upsert:
            await self.insert_one(doc, session=session)
            return _Result(upserted_id=doc["_id"])
        return _Result()

    async def update_one(
        self, filter_: dict[str, Any], update: dict[str, Any], *, upsert: bool = False,
        session: FakeSession | None = None,
    ) -> _Result:  # fmt: skip
        found = self._matching(filter_, session)
        if found:
            self._put(session, _apply_update(found[0], update))
            return _Result(matched_count=1, modified_count=1)
        if upsert:
            seed = {k: v for k, v in filter_.items() if not k.startswith("$")
                    and not isinstance(v, dict)}  # fmt: skip
            doc = _apply_update(seed, update)
            await self.insert_one(doc, session=session)
            return _Result(upserted_id=doc["_id"])
        return _Result()

    async def find_one_and_update(
        self, filter_: dict[str, Any], update: dict[str, Any], *, upsert: bool = False,
        return_document: bool = False, session: FakeSession | None = None,
    ) -> dict[str, Any] | None:  # fmt: skip
        before = await self.find_one(filter_, session=session)
        result = await self.update_one(filter_, update, upsert=upsert, session=session)
        if not return_document:
            return before
        id_ = before["_id"] if before else result.upserted_id
        return await self.find_one({"_id": id_}, session=session)

    async def delete_many(
        self, filter_: dict[str, Any], *, session: FakeSession | None = None
    ) -> _Result:
        found = self._matching(filter_, session)
        for doc in found:
            self._store(session, None, doc["_id"])
        return _Result(deleted_count=len(found))


class FakeDatabase:
    """``AsyncDatabase``: collections by name, and the ``hello``/``ping`` commands."""

    def __init__(self, state: _State, replica_set: bool) -> None:
        self._state = state
        self._replica_set = replica_set

    def __getitem__(self, name: str) -> FakeCollection:
        return FakeCollection(self._state, name)

    async def command(self, name: str) -> dict[str, Any]:
        if name == "hello":
            hello: dict[str, Any] = {"isWritablePrimary": True, "ok": 1.0}
            if self._replica_set:
                hello["setName"] = "rs0"
            return hello
        if name == "ping":
            return {"ok": 1.0}
        raise NotImplementedError(f"fake MongoDB does not run {name}")


class FakeMongoClient:
    """``AsyncMongoClient``: one shared in-memory state; ``replica_set`` enables transactions."""

    def __init__(self, replica_set: bool = True) -> None:
        self.replica_set = replica_set
        self.state_by_db: dict[str, _State] = {}
        self.closed = False

    def __getitem__(self, name: str) -> FakeDatabase:
        return FakeDatabase(self.state_by_db.setdefault(name, _State()), self.replica_set)

    def start_session(self) -> FakeSession:
        # One client serves one database in these tests; sessions share its state.
        (state,) = self.state_by_db.values()
        return FakeSession(state)

    async def close(self) -> None:
        self.closed = True
