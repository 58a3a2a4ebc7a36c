"""The ``fhir-server`` command: serve, load, generate, reindex and the other tools.

Every sub-command takes the same settings as the server (``--data-dir``, ``--storage``); the
environment variables ``FHIR_SERVER_*`` give the defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from fhir_server.cli_conformance import add_conformance_commands
from fhir_server.cli_operations import add_operations_commands
from fhir_server.cli_security import add_security_commands
from fhir_server.cli_signatures import add_signature_commands
from fhir_server.cli_xml130 import add_xml130_commands
from fhir_server.logs import configure_logging, uvicorn_log_config
from fhir_server.metrics import directory as metrics_directory
from fhir_server.progress import track
from fhir_server.settings import Settings
from fhir_server.supervision import SUPERVISOR_ENV

__all__ = ["main"]

Command = Callable[[argparse.Namespace], int]


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {
        key: getattr(args, key)
        for key in ("host", "port", "data_dir", "storage", "workers")
        if getattr(args, key, None) is not None
    }
    return Settings(**overrides)


def _export_settings(settings: Settings) -> None:
    """Put the effective settings into the environment so worker processes see them."""
    for key in ("host", "port", "data_dir", "storage", "workers"):
        os.environ[f"FHIR_SERVER_{key.upper()}"] = str(getattr(settings, key))


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the HTTP server (uvicorn) with the configured store."""
    import uvicorn

    settings = _settings(args)
    _export_settings(settings)
    metrics_directory.prepare(settings.data_dir)  # before any worker starts
    os.environ[SUPERVISOR_ENV] = str(os.getpid())  # the workers end with this process
    uvicorn.run(
        "fhir_server.main:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        access_log=False,
        log_level=settings.log_level,
        # uvicorn applies it in this process and in each worker: its own lines in our format.
        log_config=uvicorn_log_config(settings.log_level, settings.log_format),
        proxy_headers=False,
        # Named, not "auto": without them uvicorn silently falls back to a transport that
        # stalls every response about 40 ms with several workers (docs/performance.md).
        loop="uvloop",
        http="httptools",
    )
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    """Load resources, Bundles or NDJSON files through the interactions."""
    from fhir_server.loader import count_items, load_paths

    settings = _settings(args)
    paths = [Path(p) for p in args.paths]
    with track("load", count_items(paths), "items",
               interval_s=settings.progress_interval_s) as progress:
        summary = asyncio.run(load_paths(settings, paths, concurrency=args.concurrency,
                                         processes=args.processes,
                                         defer_indexes=args.defer_indexes, progress=progress))
    print(summary.describe())
    return 0 if summary.rejected == 0 else 1


def cmd_generate(args: argparse.Namespace) -> int:
    """Write deterministic synthetic Vietnamese visits: NDJSON Bundles, or XML 130 envelopes."""
    from fhir_server.synthetic import generate

    interval = Settings().progress_interval_s
    if args.format == "xml130":
        from fhir_server.synthetic.xml130 import generate_xml130

        with track("generate", args.patients, "patients", interval_s=interval) as progress:
            written = generate_xml130(args.patients, args.seed, Path(args.out),
                                      progress.reached)
        print(f"patients={written.patients} visits={written.visits} envelopes="
              f"{len(written.files)} out={args.out}")
        return 0
    with track("generate", args.patients, "patients", interval_s=interval) as progress:
        summary = generate(args.patients, args.seed, Path(args.out), progress.reached)
    print(f"patients={summary.patients} visits={summary.visits} bundles={summary.bundles} "
          f"resources={summary.resources} files={len(summary.files)} out={args.out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Export to NDJSON files in a folder (the server's bulk export, as the server)."""
    from fhir_server.cli_export import export_to_folder
    from fhir_server.errors import FhirError

    settings = _settings(args)
    with track("export", None, "resources",
               interval_s=settings.progress_interval_s) as progress:
        try:
            job = asyncio.run(export_to_folder(settings, args, progress))
        except FhirError as exc:
            print(f"export refused ({exc.message_id}): {exc.diagnostics}", file=sys.stderr)
            return 1
        result = job.result or {}
        written = sum(item["count"] for item in result.get("output", []))
        progress.set_total(written)
        progress.reached(written)
    if job.state.value != "completed":
        print(f"export failed: {json.dumps(job.error, ensure_ascii=False)}", file=sys.stderr)
        return 1
    print(f"exported {written} resources in {len(result.get('output', []))} files to "
          f"{args.out} (transactionTime {result.get('transactionTime')})")
    return 0


def cmd_reindex(args: argparse.Namespace) -> int:
    """Rebuild search index rows (after a SearchParameter was added or changed)."""
    from fhir_server.reindex import reindex

    settings = _settings(args)
    with track("reindex", None, "resources",
               interval_s=settings.progress_interval_s) as progress:
        count = asyncio.run(reindex(settings, args.type, progress))
    print(f"reindexed {count} resources")
    return 0


def _export_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``fhir-server export`` (the kick-off's parameters)."""
    parser.add_argument("out", help="folder for the NDJSON files and manifest.json")
    parser.add_argument("--type", help="comma-separated resource types (_type)")
    parser.add_argument("--since", help="only resources last updated after (_since)")
    parser.add_argument("--until", help="only resources last updated before (_until)")
    parser.add_argument("--type-filter", action="append", default=[],
                        help="Type?query (_typeFilter; repeatable)")
    parser.add_argument("--elements", help="[Type.]element,... (_elements)")
    parser.add_argument("--patients", action="store_true",
                        help="the Patient compartments only (Patient/$export)")
    parser.add_argument("--group", help="the compartments of a Group's patients")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=None, help="data directory")
    parser.add_argument("--storage", default=None, help="storage URL (default: SQLite file)")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``fhir-server`` command."""
    parser = argparse.ArgumentParser(prog="fhir-server", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the FHIR server")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument("--workers", type=int, default=None)
    _common(serve)
    serve.set_defaults(func=cmd_serve)
    load = sub.add_parser("load", aliases=["import"],
                          help="load resources, Bundles or NDJSON files (an export's folder)")
    load.add_argument("paths", nargs="+")
    load.add_argument("--concurrency", type=int, default=1,
                      help="items in flight in each process (default 1)")
    load.add_argument("--processes", type=int, default=1,
                      help="loader processes on the same store, each taking every n-th item "
                           "(default 1; one more than the CPUs keeps them all busy)")
    load.add_argument("--defer-indexes", choices=("auto", "on", "off"), default="auto",
                      help="build the search value indexes after loading instead of row by "
                           "row (SQLite; auto: when the store holds under 100,000 resources)")
    _common(load)
    load.set_defaults(func=cmd_load)
    gen = sub.add_parser("generate", help="write synthetic Vietnamese visit Bundles")
    gen.add_argument("--patients", type=int, required=True)
    gen.add_argument("--seed", type=int, default=1)
    gen.add_argument("--out", required=True)
    gen.add_argument("--format", choices=("fhir", "xml130"), default="fhir",
                     help="fhir: NDJSON transaction Bundles; xml130: one envelope per visit")
    gen.set_defaults(func=cmd_generate)
    export = sub.add_parser("export", help="bulk export to NDJSON files in a folder")
    _export_arguments(export)
    _common(export)
    export.set_defaults(func=cmd_export)
    reindex = sub.add_parser("reindex", help="rebuild the search index")
    reindex.add_argument("--type", default=None)
    _common(reindex)
    reindex.set_defaults(func=cmd_reindex)
    add_security_commands(sub)
    add_operations_commands(sub)
    add_conformance_commands(sub)
    add_xml130_commands(sub)
    add_signature_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fhir-server`` console script."""
    args = build_parser().parse_args(argv)
    if args.command != "serve":  # serve hands its configuration to uvicorn
        settings = Settings()
        configure_logging(settings.log_level, settings.log_format)
    func: Command = args.func
    return func(args)


if __name__ == "__main__":
    raise SystemExit(main())
