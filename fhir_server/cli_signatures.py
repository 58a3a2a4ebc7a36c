"""``fhir-server verify``: check digital signatures outside the HTTP API.

``verify FILE...`` checks the signatures a file carries, as a third party would, against the
trust list (``--trust-list``, else ``FHIR_SERVER_SIGNATURE_TRUST_LIST``): a FHIR JSON Bundle
(its ``Bundle.signature``, the signed Provenances among its entries), a document the server
produced, an XML 130 envelope, a signed PDF. ``verify --stored Type/id...`` checks again, in
the configured store, the signatures about stored resources and the proofs kept of them (what
``$verify-signature`` answers), as the server. One line per signature; the exit status is 0
when every file or resource has signatures and all verify, 1 otherwise, 2 for a file that
cannot be read.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from fhir_server.signatures.verification import Verification

__all__ = ["add_signature_commands"]


def _line(name: str, verification: Verification) -> str:
    when = f" signed {verification.signing_time}" if verification.signing_time else ""
    who = f" by {verification.signer}" if verification.signer else ""
    return f"{name}: {verification.status} ({verification.kind}){who}{when}: " \
        f"{verification.detail}"


def _report(name: str, found: list[Verification] | None) -> int:
    if found is None:
        print(f"{name}: not a FHIR JSON resource, an XML 130 envelope or a PDF")
        return 2
    if not found:
        print(f"{name}: no signature")
        return 1
    for verification in found:
        print(_line(name, verification))
    return 0 if all(v.verified for v in found) else 1


def _files(args: argparse.Namespace) -> int:
    from fhir_server.cli import _settings
    from fhir_server.signatures.on_write import verify_file
    from fhir_server.signatures.trust import load_trust_list

    trust = load_trust_list(args.trust_list or _settings(args).signature_trust_list)
    status = 0
    for name in args.paths:
        try:
            data = Path(name).read_bytes()
        except OSError as exc:
            print(f"{name}: {exc}")
            status = max(status, 2)
            continue
        status = max(status, _report(name, verify_file(data, trust)))
    return status


async def _stored(args: argparse.Namespace) -> int:
    from fhir_server.cli import _settings
    from fhir_server.errors import FhirError
    from fhir_server.loader import open_services
    from fhir_server.security.caller import SERVER
    from fhir_server.security.policy import Access
    from fhir_server.signatures.recheck import recheck
    from fhir_server.signatures.trust import load_trust_list

    settings = _settings(args)
    trust = load_trust_list(args.trust_list or settings.signature_trust_list)
    status = 0
    async with open_services(settings) as services:
        for reference in args.paths:
            kind, _, id = reference.partition("/")
            try:
                found = await recheck(services, Access(SERVER, services.registry), kind, id,
                                      trust)
            except FhirError as exc:
                print(f"{reference}: {exc.diagnostics}")
                status = max(status, 2)
                continue
            status = max(status, _report(reference, [f.verification for f in found]))
    return status


def cmd_verify(args: argparse.Namespace) -> int:
    """Run ``fhir-server verify``."""
    return asyncio.run(_stored(args)) if args.stored else _files(args)


def add_signature_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``fhir-server verify``."""
    verify = sub.add_parser("verify", help="check digital signatures (files, or stored "
                                           "resources with --stored)")
    verify.add_argument("paths", nargs="+", help="files, or Type/id with --stored")
    verify.add_argument("--stored", action="store_true",
                        help="the arguments are stored resources (Type/id) to check again")
    verify.add_argument("--trust-list", type=Path, default=None,
                        help="the trust list (default: FHIR_SERVER_SIGNATURE_TRUST_LIST)")
    verify.add_argument("--data-dir", type=Path, default=None, help="data directory")
    verify.add_argument("--storage", default=None, help="storage URL (default: SQLite file)")
    verify.set_defaults(func=cmd_verify)
