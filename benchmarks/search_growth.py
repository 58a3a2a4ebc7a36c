"""How a search page's cost grows with the store: in-process, on prepared data directories.

    .venv/bin/python benchmarks/search_growth.py DIR [DIR...] [--rounds 30] [--json OUT]

Each DIR is a data directory filled with ``fhir-server generate`` + ``fhir-server load``
(``--patients 1000``, ``10000``, ``50000``: about 19k, 190k and 930k resources). For each store,
every search of the set runs ``--rounds`` times on one connection (warm cache, as a worker's),
after one untimed run; reported per search: p50 and p99 wall time, SQLite virtual-machine
steps (a count that does not depend on the machine's load), and the ratio of the p50 to the
primary-key read measured in the same run (the baseline). A page must cost the same on every
size: the steps of a search should not grow with the store (docs/search.md, "What a page
costs").
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qsl

import orjson

from fhir_server.search.parse import parse_search
from fhir_server.search.setup import prepare_search
from fhir_server.settings import Settings
from fhir_server.storage.sqlite.schema import configure_connection
from fhir_server.storage.sqlite.search_sql import run_search

LOINC = "http://loinc.org|8867-4"
SEARCHES = [
    ("Patient", "name=nguyen"),
    ("Patient", "name=nguyen&birthdate=ge1990&_count=50"),
    ("Patient", "name=vu&birthdate=ge1990&_count=50"),  # a rarer name: the page from its list
    ("Patient", "_has:Encounter:patient:_id={encounter}"),
    ("Patient", f"_has:Observation:patient:code={LOINC}"),
    ("Encounter", "_sort=-date"),
    ("Observation", f"code={LOINC}&_sort=-date"),
    ("Observation", "patient={patient}&code=" + LOINC + "&_sort=-date"),
    ("Observation", "value-quantity:missing=true"),
    ("Patient", "birthdate:missing=false"),
    ("Patient", "name=nguyen&_revinclude=Encounter:patient"),
    ("Patient", "identifier={cccd}"),
]


def _steps(conn: sqlite3.Connection, run: Callable[[], object]) -> int:
    count = [0]

    def tick() -> int:
        count[0] += 1
        return 0

    conn.set_progress_handler(tick, 100)
    try:
        run()
    finally:
        conn.set_progress_handler(None, 0)
    return count[0] * 100


def _samples(conn: sqlite3.Connection) -> dict[str, str]:
    """One Patient (with its CCCD) and one Encounter of the middle of the store."""
    middle = conn.execute("SELECT COUNT(*) FROM resources WHERE type = 'Encounter'").fetchone()[0]
    encounter = conn.execute("SELECT id FROM resources WHERE type = 'Encounter' LIMIT 1 "
                             "OFFSET ?", (middle // 2,)).fetchone()[0]
    content = conn.execute(
        "SELECT v.content FROM resources r JOIN versions v ON v.rid = r.rid AND v.version = "
        "r.version WHERE r.type = 'Patient' LIMIT 1 OFFSET ?", (middle // 4,)).fetchone()[0]
    person = orjson.loads(content)
    cccd = next(i for i in person["identifier"] if i["system"].endswith("national_id"))
    return {"encounter": encounter, "patient": f"Patient/{person['id']}",
            "cccd": f"{cccd['system']}|{cccd['value']}"}


def measure(data_dir: Path, rounds: int) -> dict[str, object]:
    conn = sqlite3.connect(data_dir / "fhir.sqlite3", isolation_level=None)
    configure_connection(conn, "NORMAL", 256, 0)
    registry = prepare_search(Settings())
    unions = registry.unions()
    samples = _samples(conn)
    size = conn.execute("SELECT COUNT(*) FROM resources").fetchone()[0]
    rids = [row[0] for row in conn.execute("SELECT rid FROM resources")]
    random.seed(1)
    picked = random.sample(rids, min(len(rids), 2000))
    read = "SELECT v.content FROM resources r JOIN versions v ON v.rid = r.rid AND v.version = " \
           "r.version WHERE r.rid = ?"
    for _ in range(2):  # the second pass, on a warm cache, is the baseline
        started = time.perf_counter()
        for rid in picked:
            conn.execute(read, (rid,)).fetchone()
        baseline_ms = (time.perf_counter() - started) * 1000 / len(picked)
    rows: dict[str, object] = {"resources": size, "read_ms": round(baseline_ms, 4)}
    for kind, text in SEARCHES:
        query = parse_search(kind, parse_qsl(text.format(**samples)), registry).query
        run = lambda q=query: run_search(conn, q, registry, unions)  # noqa: E731
        run()  # the first run counts the type's resources (remembered): not what a page costs
        steps = _steps(conn, run)
        times = []
        for _ in range(rounds):
            began = time.perf_counter()
            run()
            times.append((time.perf_counter() - began) * 1000)
        times.sort()
        p50 = statistics.median(times)
        rows[f"{kind}?{text}"] = {"p50_ms": round(p50, 3),
                                  "p99_ms": round(times[min(len(times) - 1,
                                                            int(len(times) * 0.99))], 3),
                                  "steps": steps, "ratio_to_read": round(p50 / baseline_ms, 1)}
    conn.close()
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dirs", nargs="+", type=Path)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    results = {str(d): measure(d, args.rounds) for d in args.dirs}
    for directory, rows in results.items():
        print(f"{directory}: {rows['resources']} resources, primary-key read "
              f"{rows['read_ms']} ms")
        for name, figures in rows.items():
            if isinstance(figures, dict):
                print(f"  {figures['p50_ms']:8.2f} {figures['p99_ms']:8.2f} ms "
                      f"{figures['steps']:>9} steps {figures['ratio_to_read']:>7}x  {name}")
    if args.json:
        args.json.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
