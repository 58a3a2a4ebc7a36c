"""Train the zstd dictionary the embedded store compresses resource bodies with.

    .venv/bin/python scripts/train_body_dictionary.py [--patients 300] [--id 32769]

Generates visits (``fhir_server.synthetic``, a fixed seed), loads them into a scratch store
and trains on the bodies as the store keeps them (``meta`` stamped), plus the ``examples/``.
Writes ``fhir_server/data/bodies/dictionary-<id>.zstd``. A stored body names its dictionary
by id, and every store keeps a copy of the dictionaries it used (``body_dictionaries``): a new
dictionary takes a new id and never replaces an old file (docs/architecture.md).
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
from pathlib import Path

import orjson
import zstandard

from fhir_server.loader import load_paths
from fhir_server.settings import Settings
from fhir_server.storage.sqlite import bodies
from fhir_server.synthetic import generate

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "fhir_server" / "data" / "bodies"
#: zstd reserves dictionary ids below 32768 for a registry; private ones start there.
FIRST_PRIVATE_ID = 32768


def _stored_bodies(patients: int) -> list[bytes]:
    # The scratch store keeps its bodies as JSON: this script makes the dictionary.
    bodies.pack = lambda body: body
    bodies.install = lambda conn: None
    with tempfile.TemporaryDirectory() as temp:
        data = Path(temp) / "data"
        generate(patients, 20261207, Path(temp) / "visits")
        settings = Settings(data_dir=data, seed_search_parameters=False)
        asyncio.run(load_paths(settings, sorted((Path(temp) / "visits").glob("*.ndjson")), 16))
        conn = sqlite3.connect(data / "fhir.sqlite3")
        try:
            return [bodies.json_bytes(row[0]) for row in
                    conn.execute("SELECT content FROM versions WHERE content IS NOT NULL")]
        finally:
            conn.close()


def _examples() -> list[bytes]:
    found = []
    for path in sorted((REPO / "examples").rglob("*.json")):
        parsed = orjson.loads(path.read_bytes())
        if isinstance(parsed, dict) and parsed.get("resourceType") != "Bundle":
            found.append(orjson.dumps(parsed))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patients", type=int, default=300)
    parser.add_argument("--id", type=int, default=FIRST_PRIVATE_ID + 1)
    parser.add_argument("--size", type=int, default=65536)
    args = parser.parse_args()
    samples = _stored_bodies(args.patients) + _examples()
    trained = zstandard.train_dictionary(args.size, samples, dict_id=args.id, level=3,
                                         threads=1, steps=16)
    OUT.mkdir(parents=True, exist_ok=True)
    target = OUT / f"dictionary-{args.id}.zstd"
    target.write_bytes(trained.as_bytes())
    print(f"{target}: {len(trained.as_bytes())} bytes from {len(samples)} bodies")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
