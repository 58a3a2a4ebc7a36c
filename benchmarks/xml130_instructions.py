"""Instructions per visit of the XML 130 route and of the FHIR push, counted by callgrind.

    .venv/bin/python benchmarks/xml130_instructions.py STORE [--door xml|fhir|both]
        [--visits 40] [--warm 10] [--inflight 1] [--seed 4102] [--step MODULE:FUNCTION]

The machine's speed drifts by up to half from minute to minute, so timings of two codes or two
doors taken apart mislead; a count of instructions does not drift. For each door this copies
STORE (read-only is fine) to a temporary directory and runs itself under ``valgrind
--tool=callgrind`` with instrumentation off; in that process one app serves the door
in-process (``xml130_cpu._client``: ``httpx``'s ASGI transport, the whole app), ``--warm``
visits are pushed, then instrumentation is turned on and the counters zeroed through
callgrind's client requests (a five-line C helper compiled with ``gcc`` against
``valgrind/callgrind.h``), ``--visits`` visits are pushed (``--inflight`` at a time) and the
counters are dumped. Every thread is counted (valgrind runs them one at a time). It prints
the instructions per visit and the dump's path (``callgrind_annotate`` reads it).

``--step module:function`` counts only inside that function (sync or async; with
``--inflight 1``, an async one also counts what other tasks run while it awaits), e.g.
``fhir_server.bridges.xml130.visits:_prepare``. The same synthetic one-visit envelopes
(``xml130.envelopes``) go to ``$import-xml130``; the FHIR push gets their transaction Bundles
(``convert_only``), as ``push-xml130-slices`` sends them. Needs valgrind, gcc and
``valgrind/callgrind.h`` (Debian: ``valgrind``).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import functools
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_HELPER = """#include <valgrind/callgrind.h>
void cg_start(void) { CALLGRIND_START_INSTRUMENTATION; CALLGRIND_ZERO_STATS; }
void cg_dump(void) { CALLGRIND_DUMP_STATS_AT("measured"); CALLGRIND_STOP_INSTRUMENTATION; }
void cg_toggle(void) { CALLGRIND_TOGGLE_COLLECT; }
"""


def _helper(directory: Path) -> Path:
    source, library = directory / "cg.c", directory / "libcg.so"
    source.write_text(_HELPER)
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(library), str(source)],
                   check=True)
    return library


def _counted(helper: Any, spec: str) -> None:
    """Collect only inside ``module:function`` (outermost call), wherever it is imported."""
    module_name, name = spec.split(":")
    module = importlib.import_module(module_name)
    inner = getattr(module, name)
    depth = [0]

    def enter() -> None:
        depth[0] += 1
        if depth[0] == 1:
            helper.cg_toggle()

    def leave() -> None:
        if depth[0] == 1:
            helper.cg_toggle()
        depth[0] -= 1

    wrapped: Any
    if asyncio.iscoroutinefunction(inner):
        @functools.wraps(inner)
        async def wrapped(*args: Any, **kwargs: Any) -> Any:
            enter()
            try:
                return await inner(*args, **kwargs)
            finally:
                leave()
    else:
        @functools.wraps(inner)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            enter()
            try:
                return inner(*args, **kwargs)
            finally:
                leave()
    for other in list(sys.modules.values()):
        if other is not None and getattr(other, name, None) is inner:
            setattr(other, name, wrapped)


async def _push(store: Path, door: str, args: argparse.Namespace, helper: Any) -> None:
    import orjson
    from xml130 import envelopes
    from xml130_cpu import _client, _post

    from fhir_server.bridges.xml130 import visits

    standard = visits.standard_of("4750")
    sent = envelopes(args.seed, args.visits + args.warm)
    if door == "fhir":
        bodies = [orjson.dumps(visits.convert_only(e, standard)[0].bundle)
                  for e in sent]
        url, content_type = "/fhir", "application/fhir+json"
    else:
        bodies, url, content_type = sent, "/fhir/$import-xml130", "application/xml"
    app, client, headers = _client(store)
    headers["Content-Type"] = content_type
    async with app.router.lifespan_context(app):
        for body in bodies[:args.warm]:
            await _post(client, url, body, headers)
        todo = list(bodies[args.warm:])

        async def sender() -> None:
            while todo:
                await _post(client, url, todo.pop(0), headers)

        helper.cg_start()
        await asyncio.gather(*(sender() for _ in range(args.inflight)))
        helper.cg_dump()
    await client.aclose()


def _inside(args: argparse.Namespace) -> None:
    """The run under valgrind: one door over the copy ``args.store``."""
    import logging
    logging.disable(logging.CRITICAL)  # the access log's lines: not what is counted
    helper = ctypes.CDLL(args.helper)
    if args.step:
        _counted(helper, args.step)
    asyncio.run(_push(Path(args.store), args.door, args, helper))


def _summary(dump: Path) -> int:
    for line in dump.read_text().splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise SystemExit(f"{dump}: no summary line")


def _outside(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="xml130-instructions-"))
    helper = _helper(work)
    doors = ("xml", "fhir") if args.door == "both" else (args.door,)
    for door in doors:
        store = work / f"store-{door}"
        shutil.copytree(args.store, store)
        for path in [store, *store.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)
        out = work / f"callgrind.{door}"
        command = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                   f"--callgrind-out-file={out}",
                   *(["--collect-atstart=no"] if args.step else []),
                   sys.executable, __file__, str(store), "--door", door, "--inside",
                   "--helper", str(helper), "--visits", str(args.visits),
                   "--warm", str(args.warm), "--inflight", str(args.inflight),
                   "--seed", str(args.seed), *(["--step", args.step] if args.step else [])]
        started = time.monotonic()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join(
                           [str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])})
        shutil.rmtree(store)
        dump = Path(f"{out}.1")
        per_visit = _summary(dump) / args.visits
        print(f"{door:4s} {per_visit / 1e6:9.3f} M instructions per visit "
              f"({args.visits} visits, {args.inflight} in flight"
              f"{', in ' + args.step if args.step else ''}; "
              f"{time.monotonic() - started:.0f} s; {dump})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", type=Path, help="a store (copied for each door)")
    parser.add_argument("--door", choices=("xml", "fhir", "both"), default="both")
    parser.add_argument("--visits", type=int, default=40)
    parser.add_argument("--warm", type=int, default=10)
    parser.add_argument("--inflight", type=int, default=1)
    parser.add_argument("--seed", type=int, default=4102)
    parser.add_argument("--step", help="count only inside MODULE:FUNCTION")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--helper", help=argparse.SUPPRESS)
    args = parser.parse_args()
    (_inside if args.inside else _outside)(args)


if __name__ == "__main__":
    main()
