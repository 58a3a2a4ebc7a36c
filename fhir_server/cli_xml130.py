"""``fhir-server xml130 import|convert|export``: the XML 130 bridge without HTTP.

``import FILE|DIR...`` sends every envelope (``*.xml``) through the same code as
``$import-xml130`` (the push path, without a caller: an operator's tool) and prints a summary;
``convert`` writes the transaction Bundles a dry run gives; ``export ENCOUNTER_ID`` writes a
stored visit back as an envelope.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from pathlib import Path

import orjson

from fhir_server.bridges.xml130.report import VisitResult
from fhir_server.errors import FhirError
from fhir_server.security.caller import SERVER
from fhir_server.security.policy import Access

__all__ = ["add_xml130_commands"]


def _files(paths: list[str]) -> list[Path]:
    found: list[Path] = []
    for name in paths:
        path = Path(name)
        found += sorted(path.glob("*.xml")) if path.is_dir() else [path]
    return found


def _bar(done: int, total: int, counts: Counter[str]) -> None:
    width = 30
    filled = width * done // max(total, 1)
    summary = " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
    print(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} files {summary}",
          end="", file=sys.stderr, flush=True)


def _rejections(path: Path, visits: list[VisitResult]) -> list[str]:
    return [f"{path} HOSO {v.position} MA_LK {v.ma_lk}: "
            + "; ".join(i.diagnostics for i in v.issues if i.severity in ("error", "fatal"))
            for v in visits if v.rejected]


async def _import(args: argparse.Namespace, convert: bool) -> int:
    from fhir_server.bridges.xml130.visits import convert_envelope, import_envelope, standard_of
    from fhir_server.cli import _settings
    from fhir_server.loader import open_services

    files, counts, problems = _files(args.paths), Counter[str](), []
    standard = standard_of(args.standard)
    async with open_services(_settings(args)) as services:
        for done, path in enumerate(files, start=1):
            try:
                if convert:
                    report = await convert_envelope(services, path.read_bytes(), standard)
                else:
                    report = await import_envelope(services, Access(SERVER, services.registry),
                                                   path.read_bytes(), standard)
            except FhirError as exc:
                counts["malformed"] += 1
                problems.append(f"{path}: {exc.diagnostics}")
                continue
            counts.update(report.counts())
            problems += _rejections(path, report.visits)
            if convert and args.out:
                _write_bundles(Path(args.out), path, report.visits)
            _bar(done, len(files), counts)
    print(file=sys.stderr)
    print(*problems, sep="\n", file=sys.stderr) if problems else None
    print(" ".join(f"{k}={counts.get(k, 0)}" for k in
                   ("created", "updated", "unchanged", "converted", "rejected", "malformed")))
    return 1 if counts["rejected"] or counts["malformed"] else 0


def _write_bundles(out: Path, source: Path, visits: list[VisitResult]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for visit in visits:
        if visit.bundle is not None:
            target = out / f"{source.stem}-{visit.position}.json"
            target.write_bytes(orjson.dumps(visit.bundle, option=orjson.OPT_INDENT_2))


async def _export(args: argparse.Namespace) -> int:
    from fhir_server.bridges.xml130.exporting import export_visit
    from fhir_server.bridges.xml130.visits import standard_of
    from fhir_server.cli import _settings
    from fhir_server.loader import open_services

    async with open_services(_settings(args)) as services:
        envelope = await export_visit(services, Access(SERVER, services.registry),
                                      standard_of(args.standard), args.encounter)
    if args.out:
        Path(args.out).write_bytes(envelope)
    else:
        sys.stdout.buffer.write(envelope)
    return 0


def cmd_xml130(args: argparse.Namespace) -> int:
    """Run one of the xml130 sub-commands."""
    if args.action == "export":
        return asyncio.run(_export(args))
    return asyncio.run(_import(args, convert=args.action == "convert"))


def add_xml130_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``fhir-server xml130 import|convert|export``."""
    xml = sub.add_parser("xml130", help="import, convert or export XML 130 envelopes")
    actions = xml.add_subparsers(dest="action", required=True)
    for name, help_text in (("import", "import envelopes (files or directories of *.xml)"),
                            ("convert", "convert envelopes to transaction Bundles, no writes")):
        action = actions.add_parser(name, help=help_text)
        action.add_argument("paths", nargs="+")
        action.add_argument("--standard", default="4750", choices=("130", "4750", "3176"))
        action.add_argument("--out", default=None, help="(convert) folder for the Bundles")
        _common(action)
        action.set_defaults(func=cmd_xml130)
    export = actions.add_parser("export", help="write a stored visit as an envelope")
    export.add_argument("encounter", help="the Encounter id")
    export.add_argument("--standard", default="4750", choices=("130", "4750", "3176"))
    export.add_argument("--out", default=None, help="file to write (default: stdout)")
    _common(export)
    export.set_defaults(func=cmd_xml130)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=None, help="data directory")
    parser.add_argument("--storage", default=None, help="storage URL (default: SQLite file)")
