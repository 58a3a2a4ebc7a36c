"""Resource bodies as the embedded store keeps them (``storage.sqlite.bodies``): compressed
with a dictionary the file keeps, read back as the same JSON by every kind of read, and the
JSON bodies of a store of schema version 1 read as they are, then compressed by
``fhir-server compact``."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard

from fhir_server.cli import main
from fhir_server.search.indexing import index_resource
from fhir_server.search.parse import parse_search
from fhir_server.search.setup import prepare_search
from fhir_server.settings import Settings
from fhir_server.storage.port import HistoryQuery
from fhir_server.storage.sqlite import bodies
from fhir_server.storage.sqlite.schema import SCHEMA_VERSION, NewerSchema
from fhir_server.storage.sqlite.store import SqliteStore
from tests.builders import patient

MAGIC = b"\x28\xb5\x2f\xfd"


async def _store(path: Path) -> SqliteStore:
    store = SqliteStore(path)
    store.registry = prepare_search(Settings(seed_search_parameters=False))
    await store.open()
    return store


async def _write(store: SqliteStore, resources: list[dict[str, Any]]) -> None:
    async with store.transaction() as tx:
        for resource in resources:
            await tx.create(resource, index_resource(resource, store.registry))


def _raw(path: Path) -> list[bytes]:
    conn = sqlite3.connect(path)
    try:
        return [bytes(row[0]) for row in
                conn.execute("SELECT content FROM versions WHERE content IS NOT NULL")]
    finally:
        conn.close()


async def _every_read(store: SqliteStore, id: str) -> list[bytes]:
    """The bytes of Patient ``id`` as read, vread, history, search, scan and the write log
    give them."""
    found = [(await store.read("Patient", id)).content,
             (await store.vread("Patient", id, 1)).content]
    history = await store.history(HistoryQuery("Patient", id))
    found += [entry.content for entry in history.entries]
    query = parse_search("Patient", [("_id", id)], store.registry).query
    found += [match.content for match in (await store.search(query)).matches]
    found += [stored.content async for stored in store.scan("Patient") if stored.id == id]
    position = (await store.write_position())[0]
    at = await store.version_at("Patient", id, position)
    assert at is not None
    async with store.transaction() as tx:
        current = await tx.read("Patient", id)
    assert current is not None
    return [*found, at.content, current.content]


def test_a_body_packs_and_unpacks_to_the_same_bytes_and_json_passes_as_it_is() -> None:
    body = orjson.dumps(patient(id="p1"))
    packed = bodies.pack(body)
    assert packed.startswith(MAGIC) and len(packed) < len(body)
    assert bodies.json_bytes(packed) == body
    assert bodies.json_bytes(memoryview(packed)) == body
    assert bodies.json_bytes(body) == body  # JSON of a store of schema version 1
    assert bodies.json_bytes(None) == b"" and bodies.json_bytes(b"") == b""


async def test_every_read_gives_the_json_of_a_compressed_body(tmp_path: Path) -> None:
    store = await _store(tmp_path / "db.sqlite3")
    try:
        await _write(store, [patient(id="p1", cccd="001090000001")])
        raw = _raw(tmp_path / "db.sqlite3")
        assert len(raw) == 1 and raw[0].startswith(MAGIC)
        reads = await _every_read(store, "p1")
        assert len(reads) == 7
        for content in reads:
            parsed = orjson.loads(content)
            assert parsed["id"] == "p1" and parsed["meta"]["versionId"] == "1"
    finally:
        await store.close()


async def _old_store(path: Path) -> None:
    """A store as schema version 1 left it: JSON bodies, no dictionary table."""
    store = await _store(path)
    await _write(store, [patient(id=f"p{n}", cccd=f"00109000000{n}") for n in range(3)])
    await store.close()
    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT seq, content FROM versions").fetchall()
    conn.executemany("UPDATE versions SET content = ? WHERE seq = ?",
                     [(bodies.json_bytes(content), seq) for seq, content in rows])
    conn.execute("DROP TABLE body_dictionaries")
    conn.execute("UPDATE store_meta SET value = '1' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()


async def test_a_store_of_schema_version_1_reads_as_it_is_and_compacts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "data" / "fhir.sqlite3"
    await _old_store(path)
    assert not any(body.startswith(MAGIC) for body in _raw(path))
    store = await _store(path)  # opened by this release: marked version 2, nothing rewritten
    try:
        assert {orjson.loads(c)["id"] for c in await _every_read(store, "p1")} == {"p1"}
        await _write(store, [patient(id="new", cccd="001090000009")])
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT value FROM store_meta WHERE key = 'schema_version'"
                        ).fetchone()[0] == str(SCHEMA_VERSION)
    conn.close()
    assert sum(body.startswith(MAGIC) for body in _raw(path)) == 1  # only the new write
    assert await asyncio.to_thread(main, ["compact", "--data-dir", str(path.parent)]) == 0
    assert "compressed 3 stored versions" in capsys.readouterr().out
    assert all(body.startswith(MAGIC) for body in _raw(path))
    store = await _store(path)
    try:
        for id in ("p0", "p1", "p2", "new"):
            assert {orjson.loads(c)["id"] for c in await _every_read(store, id)} == {id}
    finally:
        await store.close()


async def test_a_release_knowing_only_version_1_refuses_a_compressed_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "db.sqlite3"
    store = await _store(path)
    await store.close()
    monkeypatch.setattr("fhir_server.storage.sqlite.schema.SCHEMA_VERSION", 1)
    with pytest.raises(NewerSchema, match="schema version 2; this server knows up to 1"):
        await _store(path)


async def test_a_body_of_a_dictionary_only_the_file_holds_is_read(tmp_path: Path) -> None:
    """Another release's dictionary: the file's copy is enough to read its bodies."""
    path = tmp_path / "db.sqlite3"
    store = await _store(path)
    await _write(store, [patient(id="p1", cccd="001090000001")])
    await store.close()
    samples = [orjson.dumps(patient(id=f"x{n}", cccd=f"{n:012d}", given=f"An {n}"))
               for n in range(400)]
    other = zstandard.train_dictionary(4096, samples, dict_id=40000)
    conn = sqlite3.connect(path)
    body = bodies.json_bytes(_raw(path)[0])
    packed = zstandard.ZstdCompressor(dict_data=other, write_dict_id=True).compress(body)
    conn.execute("INSERT INTO body_dictionaries VALUES (40000, ?)", (other.as_bytes(),))
    conn.execute("UPDATE versions SET content = ?", (packed,))
    conn.commit()
    conn.close()
    store = await _store(path)
    try:
        assert (await store.read("Patient", "p1")).content == body
    finally:
        await store.close()


def test_a_body_of_an_unknown_dictionary_is_an_error_naming_it() -> None:
    samples = [orjson.dumps({"resourceType": "Basic", "id": f"b{n}", "n": n})
               for n in range(400)]
    other = zstandard.train_dictionary(2048, samples, dict_id=40001)
    packed = zstandard.ZstdCompressor(dict_data=other, write_dict_id=True).compress(samples[0])
    with pytest.raises(bodies.UnreadableBody, match="dictionary 40001"):
        bodies.json_bytes(packed)
