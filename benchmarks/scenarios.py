"""The scenario registry and the core scenarios: FHIR create/read and their baselines.

A scenario is a name, a one-line description and a function from a ``BenchContext`` to the
measurements it made. Later issues add scenarios (search, transaction push, ``$everything``
over a big data set) by registering them here or from their own module::

    SCENARIOS["search"] = Scenario("search", "GET Patient?name=...", run_search)
    SUITES["big"] = ("search", "everything")

The context starts servers lazily and one at a time (two servers on a 2-core machine would
steal CPU from each other), seeds Patients once, and runs wrk with the run's load settings.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

import orjson
from loadgen import WrkLoad, WrkResult, run_wrk
from patients import PATIENT_TEMPLATE, patient_document
from processes import LOOPBACK, RunningServer, free_port, running_server
from results import Measurement
from sqlite_inserts import (
    SqliteFigures,
    measure_batched_inserts,
    measure_inserts,
    measure_reads,
)

__all__ = ["SCENARIOS", "SUITES", "BenchContext", "BenchSettings", "Scenario", "expand"]

BENCH_DIR = Path(__file__).resolve().parent
LUA_DIR = BENCH_DIR / "lua"
#: Seconds of load every fresh server gets before its first measured run (not reported).
WARMUP_S = 3
REPO_ROOT = BENCH_DIR.parent
# Settings the runner decides; inherited values could point the server at real data.
_CONTROLLED_ENV = ("STORAGE", "DATA_DIR", "HOST", "PORT", "WORKERS")


@dataclass(frozen=True)
class BenchSettings:
    """One run's knobs: load shape, server workers, how many Patients to seed, where to write."""

    duration_s: int
    connections: int
    threads: int
    workers: int
    seed_patients: int
    workdir: Path
    python: str = sys.executable
    data_dir: Path | None = None
    storage: str | None = None

    @property
    def load(self) -> WrkLoad:
        """The wrk load every HTTP scenario of this run uses."""
        return WrkLoad(self.connections, self.threads, self.duration_s)


class BenchContext:
    """What scenarios share: the servers under test, the seeded ids and the wrk runner."""

    def __init__(self, settings: BenchSettings) -> None:
        self.settings = settings
        self._active: tuple[str, RunningServer, contextlib.ExitStack] | None = None
        self._warmed: set[str] = set()
        self.cache: dict[str, object] = {}
        self._seeded: Path | None = None

    def close(self) -> None:
        """Stop the running server, if any."""
        if self._active is not None:
            _, _, stack = self._active
            self._active = None
            stack.close()

    def server(self, name: str) -> RunningServer:
        """Return the running server ``name`` ("fhir" or "asgi"), stopping any other first."""
        if self._active is not None and self._active[0] == name:
            return self._active[1]
        self.close()
        stack = contextlib.ExitStack()
        try:
            running = stack.enter_context(self._start(name))
        except BaseException:
            stack.close()
            raise
        self._active = (name, running, stack)
        self._warmed.discard(name)  # a fresh process: warm it up again
        return running

    def _start(self, name: str) -> contextlib.AbstractContextManager[RunningServer]:
        port = free_port()
        command, ready = _SERVER_COMMANDS[name](self.settings, port)
        env = _server_env()
        if self.settings.storage and name.startswith("fhir"):
            env["FHIR_SERVER_STORAGE"] = self.settings.storage
        env.update(SERVER_ENV.get(name, {}))
        return running_server(
            name,
            command,
            port=port,
            ready_path=ready,
            cwd=REPO_ROOT,
            log_path=self.settings.workdir / f"{name}-server.log",
            env=env,
        )

    def seeded_ids(self) -> Path:
        """Return a file of ids of Patients created on the FHIR server (seeding them once)."""
        if self._seeded is None:
            base = self.server("fhir").base_url
            ids = seed_patients(base, self.settings.seed_patients, self.token())
            self._seeded = self.workfile("patient-ids.txt")
            self._seeded.write_text("\n".join(ids) + "\n")
        return self._seeded

    @property
    def data_dir(self) -> Path:
        """The FHIR server's data directory (a prepared large data set, or a fresh one)."""
        return self.settings.data_dir or self.settings.workdir / "fhir-data"

    def workfile(self, name: str) -> Path:
        """Return a path for a scratch file of this run."""
        return self.settings.workdir / name

    def wrk(self, url: str, script: str, args: list[str]) -> WrkResult:
        """Run wrk with ``lua/<script>`` against ``url`` under the run's load (with a token)."""
        fhir = self._active is not None and self._active[0].startswith("fhir")
        headers = [f"Authorization: Bearer {self.token()}"] if fhir else []
        if self._active is not None and self._active[0] not in self._warmed:
            # Every worker process of a fresh server is warmed up (imports, tables compiled
            # on first use, caches) before the measured run, so servers compare fairly.
            self._warmed.add(self._active[0])
            warm = replace(self.settings.load, duration_s=WARMUP_S)
            run_wrk(url, LUA_DIR / script, args, warm, headers)
        watch = self._active[1].pid if self._active is not None else None
        return run_wrk(url, LUA_DIR / script, args, self.settings.load, headers, watch)

    def token(self) -> str:
        """A ``system/*.cruds`` token of the running FHIR server, signed with its own key."""
        from fhir_server.security.keys import load_server_key
        from fhir_server.security.tokens import mint_access_token

        assert self._active is not None
        base = self._active[1].base_url + "/fhir"
        key = load_server_key(self.data_dir)
        return mint_access_token(key, issuer=base, audience=base, subject="benchmark",
                                 scope="system/*.cruds", ttl=7200)


def _server_env() -> dict[str, str]:
    env = dict(os.environ)
    for key in _CONTROLLED_ENV:
        env.pop(f"FHIR_SERVER_{key}", None)
    return env


def _fhir_command(settings: BenchSettings, port: int) -> tuple[list[str], str]:
    data_dir = settings.data_dir or settings.workdir / "fhir-data"
    return (
        [
            settings.python,
            "-P",  # not the working directory first: PYTHONPATH chooses the code
            "-m",
            "fhir_server.cli",
            "serve",
            "--host",
            LOOPBACK,
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--workers",
            str(settings.workers),
        ],
        "/readyz",
    )


def _asgi_command(settings: BenchSettings, port: int) -> tuple[list[str], str]:
    return (
        [
            settings.python,
            "-m",
            "uvicorn",
            "baseline_app:app",
            "--app-dir",
            str(BENCH_DIR),
            "--host",
            LOOPBACK,
            "--port",
            str(port),
            "--workers",
            str(settings.workers),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        "/readyz",
    )


_SERVER_COMMANDS: dict[str, Callable[[BenchSettings, int], tuple[list[str], str]]] = {
    "fhir": _fhir_command,
    "fhir-noaudit": _fhir_command,
    "fhir-reads": _fhir_command,
    "fhir-observed": _fhir_command,
    "fhir-quiet": _fhir_command,
    "asgi": _asgi_command,
}
#: What a server of that name runs with besides the inherited environment.
SERVER_ENV: dict[str, dict[str, str]] = {
    "fhir-noaudit": {"FHIR_SERVER_AUDIT": "false"},
    # Metrics and the JSON access line on (the defaults) against both off.
    "fhir-observed": {"FHIR_SERVER_METRICS": "loopback", "FHIR_SERVER_LOG_FORMAT": "json",
                      "FHIR_SERVER_LOG_LEVEL": "info"},
    "fhir-logged": {"FHIR_SERVER_METRICS": "off", "FHIR_SERVER_LOG_FORMAT": "json",
                    "FHIR_SERVER_LOG_LEVEL": "info"},
    "fhir-quiet": {"FHIR_SERVER_METRICS": "off", "FHIR_SERVER_LOG_LEVEL": "warning"},
}


def seed_patients(base_url: str, count: int, token: str, connections: int = 8) -> list[str]:
    """Create ``count`` Patients over HTTP (keep-alive, in parallel); return their ids."""
    numbers = iter(range(count))

    def create_some(_: int) -> list[str]:
        conn = http.client.HTTPConnection(base_url.removeprefix("http://"), timeout=10)
        try:
            return [_create(conn, n, token) for n in numbers]
        finally:
            conn.close()

    # The shared iterator hands each number to one thread; next() on it is atomic in CPython.
    with ThreadPoolExecutor(connections) as pool:
        return list(itertools.chain.from_iterable(pool.map(create_some, range(connections))))


def _create(conn: http.client.HTTPConnection, number: int, token: str) -> str:
    conn.request(
        "POST",
        "/fhir/Patient",
        body=patient_document(-1 - number),
        headers={"Content-Type": "application/fhir+json", "Authorization": f"Bearer {token}"},
    )
    answer = conn.getresponse()
    body = answer.read()
    if answer.status != 201:
        raise RuntimeError(f"seeding Patient failed: {answer.status} {body[:300]!r}")
    return str(orjson.loads(body)["id"])


def _from_wrk(name: str, result: WrkResult, url: str, baselines: tuple[str, ...]) -> Measurement:
    p = result.percentiles_ms
    return Measurement(
        name,
        "http",
        result.requests_per_s,
        p.get(50, 0.0),
        p.get(99, 0.0),
        result.requests,
        result.errors,
        baselines,
        {
            "url": url,
            "percentiles_ms": {str(k): v for k, v in p.items()},
            "non_2xx": result.non_2xx,
            "socket_errors": result.socket_errors,
            **result.use,
        },
    )


def _from_sqlite(name: str, figures: SqliteFigures) -> Measurement:
    return Measurement(
        name, "in-process", figures.per_s, figures.p50_ms, figures.p99_ms, figures.operations
    )


def _template_file(context: BenchContext) -> str:
    path = context.workfile("patient-template.json")
    path.write_text(PATIENT_TEMPLATE, encoding="utf-8")
    return str(path)


def run_fhir_create(context: BenchContext) -> list[Measurement]:
    """POST /fhir/Patient with a slightly different body each time."""
    url = context.server("fhir").base_url + "/fhir/Patient"
    result = context.wrk(url, "create_patient.lua", [_template_file(context)])
    return [_from_wrk("fhir-create", result, url, ("asgi-post", "sqlite-insert"))]


#: Each read scenario is measured this many times, alternating with the other one on freshly
#: started servers, and reported by its median run: on 2 cores shared with wrk one run of the
#: pair differs from the next by 10-20 %, as much as the auditing cost being measured.
READ_ROUNDS = 3


def _read_pair(context: BenchContext) -> dict[str, Measurement]:
    """Audited and unaudited reads, ``READ_ROUNDS`` rounds each, alternating; the medians."""
    cached = context.cache.get("read-pair")
    if cached is not None:
        return cast(dict[str, Measurement], cached)
    ids = context.seeded_ids()
    runs: dict[str, list[Measurement]] = {"fhir-read": [], "fhir-read-noaudit": []}
    for _ in range(READ_ROUNDS):
        for name, server, baselines in (
            ("fhir-read", "fhir-reads", ("asgi-get", "sqlite-read", "fhir-read-noaudit")),
            ("fhir-read-noaudit", "fhir-noaudit", ()),
        ):
            url = context.server(server).base_url + "/fhir/Patient/"
            result = context.wrk(url, "read_patient.lua", [str(ids)])
            runs[name].append(_from_wrk(name, result, url, baselines))
            context.close()  # the next run starts its own server
    pair = {name: _median_run(found) for name, found in runs.items()}
    context.cache["read-pair"] = pair
    return pair


def _median_run(runs: list[Measurement]) -> Measurement:
    ordered = sorted(runs, key=lambda m: m.requests_per_s)
    median = ordered[len(ordered) // 2]
    rates = [round(m.requests_per_s) for m in runs]
    return replace(median, errors=sum(m.errors for m in runs),
                   detail={**median.detail, "rounds_requests_per_s": rates})


def run_fhir_read(context: BenchContext) -> list[Measurement]:
    """GET /fhir/Patient/{id} for random ids among the seeded Patients.

    Each round on a freshly started server (as ``fhir-read-noaudit``), so that neither read run
    inherits the create scenario's write backlog and the two compare; see ``READ_ROUNDS``.
    """
    return [_read_pair(context)["fhir-read"]]


def run_fhir_read_noaudit(context: BenchContext) -> list[Measurement]:
    """The read scenario on a server with auditing off: the baseline of audit's cost."""
    return [_read_pair(context)["fhir-read-noaudit"]]


def run_asgi_baseline(context: BenchContext) -> list[Measurement]:
    """The same two wrk loads against the bare ASGI app answering a fixed Patient."""
    ids = context.workfile("baseline-ids.txt")
    ids.write_text("\n".join(str(uuid.uuid4()) for _ in range(100)) + "\n")
    base = context.server("asgi").base_url
    post = context.wrk(base + "/fhir/Patient", "create_patient.lua", [_template_file(context)])
    get = context.wrk(base + "/fhir/Patient/", "read_patient.lua", [str(ids)])
    return [
        _from_wrk("asgi-post", post, base + "/fhir/Patient", ()),
        _from_wrk("asgi-get", get, base + "/fhir/Patient/{id}", ()),
    ]


def run_sqlite_baseline(context: BenchContext) -> list[Measurement]:
    """Raw inserts (one transaction each, then batches of 100) and primary-key reads."""
    context.close()  # no server competes for the CPU or the disk while SQLite is measured
    duration = context.settings.duration_s
    path = context.workfile("baseline.sqlite3")
    return [
        _from_sqlite("sqlite-insert", measure_inserts(path, duration)),
        _from_sqlite("sqlite-insert-batch100", measure_batched_inserts(path, duration)),
        _from_sqlite("sqlite-read", measure_reads(path, duration)),
    ]


@dataclass(frozen=True)
class Scenario:
    """A named measurement: what it measures, and the function that measures it."""

    name: str
    description: str
    run: Callable[[BenchContext], list[Measurement]]


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "fhir-create", "POST /fhir/Patient (201), body varies per request", run_fhir_create
        ),
        Scenario("fhir-read", "GET /fhir/Patient/{id} over seeded ids", run_fhir_read),
        Scenario("fhir-read-noaudit", "the read scenario with auditing off (audit's cost)",
                 run_fhir_read_noaudit),
        Scenario(
            "baseline-asgi",
            "bare ASGI app, same uvicorn and workers, fixed JSON",
            run_asgi_baseline,
        ),
        Scenario(
            "baseline-sqlite",
            "raw SQLite inserts (WAL, synchronous=FULL) and reads",
            run_sqlite_baseline,
        ),
    )
}

SUITES: dict[str, tuple[str, ...]] = {
    "core": ("fhir-create", "fhir-read", "fhir-read-noaudit", "baseline-asgi", "baseline-sqlite"),
}


def expand(names: list[str]) -> Iterator[Scenario]:
    """Yield the scenarios named (suite names expand to their scenarios), each once, in order.

    Raises KeyError naming an unknown scenario.
    """
    seen: set[str] = set()
    for name in names:
        for member in SUITES.get(name, (name,)):
            if member not in SCENARIOS:
                raise KeyError(
                    f"unknown scenario {member!r}; known: {', '.join([*SUITES, *SCENARIOS])}"
                )
            if member not in seen:
                seen.add(member)
                yield SCENARIOS[member]
