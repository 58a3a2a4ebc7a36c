"""``fhir-server validate`` and ``fhir-server schema``: offline validation of files against the
R4 rules and the Vietnamese profiles, and JSON Schemas of the profiles."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import orjson

from fhir_server.errors import Issue

__all__ = ["add_conformance_commands"]


def _resources(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """The resources of a file: one JSON resource, NDJSON lines, or a Bundle's entries."""
    if path.suffix == ".ndjson":
        items = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    else:
        items = [orjson.loads(path.read_bytes())]
    found: list[tuple[str, dict[str, Any]]] = []
    for number, item in enumerate(items):
        where = f"{path}" if len(items) == 1 else f"{path}:{number + 1}"
        if item.get("resourceType") == "Bundle" and item.get("type") != "document":
            for index, entry in enumerate(item.get("entry") or []):
                if isinstance(entry.get("resource"), dict):
                    found.append((f"{where} Bundle.entry[{index}]", entry["resource"]))
        else:
            found.append((where, item))
    return found


def _print(where: str, issues: list[Issue], fmt: str) -> None:
    if fmt == "json":
        print(orjson.dumps({"file": where, "issues": [i.to_fhir() for i in issues]}).decode())
        return
    for issue in issues:
        place = ", ".join(issue.expression)
        print(f"{where}: {issue.severity} {issue.message_id} {place}: {issue.diagnostics}")


def cmd_validate(args: argparse.Namespace) -> int:
    """Validate files; exit 1 if any resource has an error."""
    from fhir_server.operations.validate import validate_resource_issues

    errors = 0
    for name in args.files:
        for where, resource in _resources(Path(name)):
            issues = validate_resource_issues(resource, None, args.profile)
            errors += sum(1 for i in issues if i.severity in ("error", "fatal"))
            if issues or args.format == "json":
                _print(where, issues, args.format)
    if args.format == "text":
        print(f"{errors} error(s)")
    return 1 if errors else 0


def cmd_schema(args: argparse.Namespace) -> int:
    """Print the JSON Schema of a profile."""
    from fhir_server.conformance.schema import json_schema

    print(orjson.dumps(json_schema(args.profile), option=orjson.OPT_INDENT_2).decode())
    return 0


def add_conformance_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``validate`` and ``schema`` sub-commands."""
    validate = sub.add_parser("validate", help="validate FHIR JSON files offline")
    validate.add_argument("files", nargs="+")
    validate.add_argument("--profile", default=None, help="validate against this profile URL")
    validate.add_argument("--format", choices=["text", "json"], default="text")
    validate.set_defaults(func=cmd_validate)
    schema = sub.add_parser("schema", help="print the JSON Schema of a profile")
    schema.add_argument("--profile", required=True)
    schema.set_defaults(func=cmd_schema)
