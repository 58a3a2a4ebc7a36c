"""Resource bodies as the embedded store keeps them in ``versions.content``.

A body is written as a zstd frame compressed with a preset dictionary trained on typical
resources (``scripts/train_body_dictionary.py``): about 8 times smaller than its JSON, for
about 5 µs to compress and 2 µs to decompress a resource of 1.3 kB (docs/performance.md).
The frame's header names its dictionary by id. Each store keeps a copy of every dictionary
it wrote with (``body_dictionaries``), so the file alone can be read, also by a later release
that ships other dictionaries.

A store of schema version 1 holds plain JSON bodies; they stay readable as they are (a JSON
body starts with ``{``, a zstd frame with its magic number), and ``fhir-server compact``
rewrites them compressed (:func:`compact_batch`).

:func:`json_bytes` is the one way from a stored body to the resource's JSON bytes: every
read of ``versions.content`` (read, vread, history, search pages and their includes, scans for
bulk export and reindex, the write log of subscriptions, the comparisons of updates) calls it.
:func:`pack` is the one way in.
"""

from __future__ import annotations

import sqlite3
import threading
from functools import cache
from importlib import resources

import zstandard

__all__ = ["CURRENT_DICTIONARY", "SCHEMA_SQL", "UnreadableBody", "compact_batch", "install",
           "is_packed", "json_bytes", "pack"]

#: The dictionary new bodies are compressed with (``data/bodies/dictionary-<id>.zstd``).
CURRENT_DICTIONARY = 32769
#: The first bytes of every zstd frame.
_MAGIC = b"\x28\xb5\x2f\xfd"
_LEVEL = 3

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS body_dictionaries (id INTEGER PRIMARY KEY, dictionary BLOB NOT NULL);
"""

#: Dictionaries read from stores (``install``), by id, beside those shipped in the package.
_FOUND: dict[int, bytes] = {}
#: Compressors and decompressors are not safe to share between threads (searches decompress
#: in their own threads): each thread has its own.
_LOCAL = threading.local()


class UnreadableBody(RuntimeError):
    """A stored body names a dictionary that neither the store nor this server holds."""


@cache
def _shipped(dictionary_id: int) -> bytes | None:
    found = resources.files("fhir_server") / "data" / "bodies" / f"dictionary-{dictionary_id}.zstd"
    return found.read_bytes() if found.is_file() else None


@cache
def _dictionary(dictionary_id: int) -> zstandard.ZstdCompressionDict:
    data = _FOUND.get(dictionary_id) or _shipped(dictionary_id)
    if data is None:
        raise UnreadableBody(f"a stored resource was compressed with dictionary "
                             f"{dictionary_id}, which this store does not hold")
    dictionary = zstandard.ZstdCompressionDict(data)
    dictionary.precompute_compress(level=_LEVEL)
    return dictionary


def _decompressor(dictionary_id: int) -> zstandard.ZstdDecompressor:
    known: dict[int, zstandard.ZstdDecompressor] = _LOCAL.__dict__.setdefault("readers", {})
    reader = known.get(dictionary_id)
    if reader is None:
        reader = known[dictionary_id] = zstandard.ZstdDecompressor(
            dict_data=_dictionary(dictionary_id))
    return reader


def is_packed(stored: bytes | memoryview | str) -> bool:
    """Whether a stored body is compressed (else it is JSON, as schema version 1 kept it)."""
    return not isinstance(stored, str) and bytes(stored[:4]) == _MAGIC


def json_bytes(stored: bytes | memoryview | str | None) -> bytes:
    """The resource's JSON bytes from a stored body (b"" for a deletion's NULL).

    A zstd frame is decompressed with the dictionary its header names; anything else is JSON
    as a store of schema version 1 wrote it, returned as it is.
    """
    if not stored:
        return b""
    if isinstance(stored, str):
        return stored.encode()
    data = bytes(stored)
    if not data.startswith(_MAGIC):
        return data
    dictionary_id = zstandard.get_frame_parameters(data).dict_id
    return _decompressor(dictionary_id).decompress(data)


def pack(body: bytes) -> bytes:
    """The stored form of a resource's JSON bytes (compressed with the current dictionary)."""
    writer = getattr(_LOCAL, "writer", None)
    if writer is None:
        writer = _LOCAL.writer = zstandard.ZstdCompressor(
            dict_data=_dictionary(CURRENT_DICTIONARY), write_checksum=False,
            write_content_size=True, write_dict_id=True)
    return writer.compress(body)


def install(conn: sqlite3.Connection) -> None:
    """Inside the schema transaction: keep the current dictionary in the store, and learn the
    store's others (a store written by another release may hold bodies of its own
    dictionaries)."""
    shipped = _shipped(CURRENT_DICTIONARY)
    if shipped is None:
        raise UnreadableBody(f"the package lacks dictionary {CURRENT_DICTIONARY}")
    conn.execute("INSERT OR IGNORE INTO body_dictionaries (id, dictionary) VALUES (?, ?)",
                 (CURRENT_DICTIONARY, shipped))
    for dictionary_id, data in conn.execute("SELECT id, dictionary FROM body_dictionaries"):
        _FOUND.setdefault(int(dictionary_id), bytes(data))


def compact_batch(conn: sqlite3.Connection, after: int, limit: int) -> tuple[int, int, int]:
    """Compress the plain JSON bodies among the ``limit`` versions after ``seq`` ``after``
    (call inside a write transaction). Returns (last seq read, bodies rewritten, bytes saved);
    the last seq is ``after`` when no version is left."""
    rows = conn.execute("SELECT seq, content FROM versions WHERE seq > ? ORDER BY seq LIMIT ?",
                        (after, limit)).fetchall()
    changed: list[tuple[bytes, int]] = []
    saved = 0
    for seq, content in rows:
        if content and not is_packed(content):
            body = json_bytes(content)
            packed = pack(body)
            saved += len(body) - len(packed)
            changed.append((packed, seq))
    conn.executemany("UPDATE versions SET content = ? WHERE seq = ?", changed)
    return (rows[-1][0] if rows else after), len(changed), saved
