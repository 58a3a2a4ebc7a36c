"""The embedded store writes a scope's new index rows together (``insert_fresh``): the same
rows as one resource at a time, and never missing from anything that reads them."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_server.errors import Conflict
from fhir_server.search.indexing import index_resource
from fhir_server.search.setup import prepare_search
from fhir_server.settings import Settings
from fhir_server.storage.sqlite import bodies, search_tables
from fhir_server.storage.sqlite.schema import CORE_SCHEMA_SQL
from fhir_server.storage.sqlite.store import SqliteStore
from tests.builders import criteria, patient

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "visit-bundle.json"
TABLES = ("search_string", "search_token", "search_text", "search_date", "search_number",
          "search_quantity", "search_reference", "search_uri", "search_composite",
          "search_compartment")


def _visit_resources() -> list[dict[str, Any]]:
    bundle = orjson.loads(EXAMPLE.read_bytes())
    resources = []
    for n, entry in enumerate(bundle["entry"]):
        resources.append({**entry["resource"], "id": f"r{n}"})
    return resources


def _contents(conn: sqlite3.Connection) -> dict[str, list[tuple[Any, ...]]]:
    return {table: sorted(conn.execute(f"SELECT * FROM {table}").fetchall()) for table in TABLES}


def test_rows_inserted_together_equal_rows_inserted_one_resource_at_a_time() -> None:
    registry = prepare_search(Settings(seed_search_parameters=False))
    items = [(rid, index_resource(resource, registry))
             for rid, resource in enumerate(_visit_resources(), start=1)]
    assert any(index.composites for _, index in items)  # the Observations have composites
    together, one_by_one = (sqlite3.connect(":memory:") for _ in range(2))
    for conn in (together, one_by_one):
        conn.executescript(CORE_SCHEMA_SQL + search_tables.SCHEMA_SQL)
    search_tables.insert_fresh(together, items)
    for rid, index in items:
        search_tables.replace_index(one_by_one, rid, index)
    rows = _contents(together)
    assert rows == _contents(one_by_one)
    assert sum(map(len, rows.values())) > 100


async def test_a_scope_s_kept_back_rows_are_seen_by_its_own_finds_and_written_at_its_end(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "db.sqlite3")
    store.registry = prepare_search(Settings(seed_search_parameters=False))
    await store.open()
    identifier = "http://fhir.ehealth.gov.vn/core/sid/national_id|001085000001"
    try:
        async with store.transaction() as tx:
            first = {**patient(cccd="001085000001"), "id": "p1"}
            await tx.create(first, index_resource(first, store.registry))
            assert tx._fresh  # kept back...
            found_now = await tx.find(criteria("Patient", [("identifier", identifier)]))
            assert found_now == ["p1"]  # ...not lost
            assert not tx._fresh
            second = {**patient(cccd="001085000002"), "id": "p2"}
            await tx.create(second, index_resource(second, store.registry))
            gone = {**patient(cccd="001085000003"), "id": "p3"}
            await tx.create(gone, index_resource(gone, store.registry))
            await tx.delete("Patient", "p3")  # rows of a resource made in this scope go too
        async with store.transaction() as tx:
            found = await tx.find_many([
                criteria("Patient", [("identifier", identifier[:-1] + "2")]),
                criteria("Patient", [("identifier", identifier[:-1] + "3")]),
            ])
    finally:
        await store.close()
    assert found == [["p2"], []]
    conn = sqlite3.connect(tmp_path / "db.sqlite3")
    rids = {rid for (rid,) in conn.execute("SELECT rid FROM search_token")}
    deleted = conn.execute("SELECT rid FROM resources WHERE id = 'p3'").fetchone()[0]
    assert deleted not in rids and len(rids) == 2


async def test_a_scope_s_resources_and_versions_rows_wait_and_are_read_as_written(
    tmp_path: Path,
) -> None:
    """Creates and updates keep their resources and versions rows back until the scope's
    flush; a read, an update or a create of the same resource, ``existing`` and a delete see
    them; the rids the store gives are those the index rows name; ``seq`` follows the order
    written; a scope that fails leaves none of them."""
    store = SqliteStore(tmp_path / "db.sqlite3")
    store.registry = prepare_search(Settings(seed_search_parameters=False))
    await store.open()
    made = [{**patient(cccd=f"00108500000{n}"), "id": f"p{n}"} for n in range(4)]
    try:
        async with store.transaction() as tx:
            for resource in made[:3]:
                await tx.create(resource, index_resource(resource, store.registry))
            assert tx._versions and not tx.conn.execute(
                "SELECT 1 FROM resources WHERE id = 'p0'").fetchone()  # kept back
            with pytest.raises(Conflict):
                await tx.create(dict(made[0]), None)
            read = await tx.read("Patient", "p1")
            assert read is not None and read.version == 1 and not tx._versions
            changed = {**made[1], "active": False}
            result = await tx.update(changed, index_resource(changed, store.registry))
            assert result.stored.version == 2
            await tx.create(made[3], index_resource(made[3], store.registry))
            assert await tx.existing([("Patient", "p3"), ("Patient", "p9")]) == {
                ("Patient", "p3")}
            await tx.create({**patient(cccd="001085000009"), "id": "p9"}, None)
            assert await tx.delete("Patient", "p9") is not None
        with pytest.raises(RuntimeError):
            async with store.transaction() as tx:
                await tx.create({**patient(cccd="001085000008"), "id": "p8"}, None)
                raise RuntimeError("the scope fails")
        async with store.transaction() as tx:
            again = await tx.read("Patient", "p1")
    finally:
        await store.close()
    assert again is not None and again.version == 2
    conn = sqlite3.connect(tmp_path / "db.sqlite3")
    versions = conn.execute("SELECT id, version FROM versions ORDER BY seq").fetchall()
    assert versions == [("p0", 1), ("p1", 1), ("p2", 1), ("p1", 2), ("p3", 1), ("p9", 1),
                        ("p9", 2)]
    rids = dict(conn.execute("SELECT id, rid FROM resources").fetchall())
    assert set(rids) == {"p0", "p1", "p2", "p3", "p9"}
    assert sorted(rids.values()) == list(range(1, 6))
    indexed = {rid for (rid,) in conn.execute("SELECT DISTINCT rid FROM search_token")}
    assert indexed == {rids["p0"], rids["p1"], rids["p2"], rids["p3"]}
    stamped = [orjson.loads(bodies.json_bytes(content))["meta"]["lastUpdated"]
               for (content,) in conn.execute(
                   "SELECT content FROM versions WHERE content IS NOT NULL ORDER BY seq")]
    assert stamped == sorted(stamped)


async def test_the_store_keeps_no_rows_of_union_parameters(tmp_path: Path) -> None:
    """The visit's Observations have combo-code and combo-value-quantity values; the store
    keeps the rows of code, component-code and value-quantity only, on create and update."""
    store = SqliteStore(tmp_path / "db.sqlite3")
    store.registry = prepare_search(Settings(seed_search_parameters=False))
    await store.open()
    observations = [r for r in _visit_resources() if r["resourceType"] == "Observation"]
    try:
        async with store.transaction() as tx:
            for resource in observations:
                await tx.create(resource, index_resource(resource, store.registry))
        async with store.transaction() as tx:  # an update replaces the rows
            changed = {**observations[0], "status": "amended"}
            await tx.update(changed, index_resource(changed, store.registry))
        keys = {search_tables.param_key(code): code
                for code in ("combo-code", "combo-value-quantity", "code", "value-quantity")}
        conn = sqlite3.connect(tmp_path / "db.sqlite3")
        stored = {keys[key] for table in ("search_token", "search_text", "search_quantity")
                  for (key,) in conn.execute(f"SELECT DISTINCT param FROM {table}")
                  if key in keys}
        conn.close()
    finally:
        await store.close()
    assert stored == {"code", "value-quantity"}


async def test_a_store_with_the_old_reference_index_gets_the_target_first_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(CORE_SCHEMA_SQL + search_tables.SCHEMA_SQL.replace(
        "CREATE INDEX IF NOT EXISTS search_reference_target ON search_reference (id, param, type)",
        "CREATE INDEX IF NOT EXISTS search_reference_value ON search_reference (param, id, type)"))
    assert _indexes(old) >= {"search_reference_value"}
    assert "search_reference_target" not in _indexes(old)
    old.close()
    store = SqliteStore(path)
    await store.open()
    await store.close()
    names = _indexes(sqlite3.connect(path))
    assert "search_reference_target" in names
    assert "search_reference_value" not in names


async def test_a_store_without_the_string_head_index_gets_it_when_opened(
    tmp_path: Path,
) -> None:
    """A store written by a release before ``search_string_head`` gets it at its next open
    (1.6 s for the 797,372 string rows of a store of 931,636 resources); its rows are read
    from the table, so nothing needs to be indexed again."""
    path = tmp_path / "db.sqlite3"
    old = sqlite3.connect(path)
    head = ("CREATE INDEX IF NOT EXISTS search_string_head ON search_string "
            "(param, substr(folded, 1, 2), rid);")
    assert head in search_tables.SCHEMA_SQL
    old.executescript(CORE_SCHEMA_SQL + search_tables.SCHEMA_SQL.replace(head, ""))
    old.execute("INSERT INTO resources VALUES (1, 'Patient', 'p1', 1, 'x', 0)")
    old.execute("INSERT INTO search_string VALUES (1, 7, 'nguyen', 'Nguyễn')")
    old.commit()
    assert "search_string_head" not in _indexes(old)
    old.close()
    store = SqliteStore(path)
    await store.open()
    await store.close()
    conn = sqlite3.connect(path)
    assert "search_string_head" in _indexes(conn)
    assert conn.execute("SELECT rid FROM search_string INDEXED BY search_string_head "
                        "WHERE param = 7 AND substr(folded, 1, 2) = 'ng'").fetchall() == [(1,)]
    conn.close()


def _indexes(conn: sqlite3.Connection) -> set[str]:
    return {row[0] for row in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'index'")}
