"""``fhir-server token`` and ``fhir-server client``: the server's own tokens and the registry
of backend-services clients (both kept in the data directory)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fhir_server.security.clients import ClientRegistry, RegisteredClient, auth_database_path
from fhir_server.security.keys import load_server_key
from fhir_server.security.tokens import mint_access_token
from fhir_server.settings import Settings

__all__ = ["add_security_commands"]


def _settings(args: argparse.Namespace) -> Settings:
    """The settings of ``serve`` (environment), with the options given on the command line."""
    names = ("data_dir", "base_url", "host", "port")
    return Settings(**{name: getattr(args, name) for name in names
                       if getattr(args, name, None) is not None})


def cmd_token(args: argparse.Namespace) -> int:
    """Print an access token signed with the server's key (alone on the last line)."""
    settings = _settings(args)
    base = settings.public_base_url()
    identifier = None
    if args.patient_identifier:
        system, _, value = args.patient_identifier.partition("|")
        identifier = (system, value)
    token = mint_access_token(
        load_server_key(settings.data_dir), issuer=base, audience=base,
        subject=args.client_id or "fhir-server-cli", scope=args.scope, ttl=args.ttl,
        client_id=args.client_id, patient_id=args.patient, patient_identifier=identifier,
    )
    print(f"audience and issuer: {base}", file=sys.stderr)
    print(token)
    return 0


def cmd_client(args: argparse.Namespace) -> int:
    """Add, list or remove registered backend-services clients."""
    registry = ClientRegistry(auth_database_path(_settings(args).data_dir))
    if args.action == "add":
        jwks = json.loads(Path(args.jwks).read_text())
        registry.add(RegisteredClient(args.client_id, jwks, args.scope, args.organization))
        print(f"added client {args.client_id}")
    elif args.action == "remove":
        removed = registry.remove(args.client_id)
        print(f"removed client {args.client_id}" if removed else f"no client {args.client_id}")
        return 0 if removed else 1
    else:
        for client in registry.list():
            print(f"{client.client_id}\t{client.scope}\t{client.organization or '-'}")
    return 0


def add_security_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``token`` and ``client`` sub-commands."""
    token = sub.add_parser("token", help="print an access token signed by this server")
    token.add_argument("--scope", required=True)
    who = token.add_mutually_exclusive_group()
    who.add_argument("--patient", default=None, help="Patient id")
    who.add_argument("--patient-identifier", default=None, help="SYSTEM|VALUE")
    token.add_argument("--client-id", default=None)
    token.add_argument("--ttl", type=int, default=3600)
    token.add_argument("--data-dir", type=Path, default=None)
    token.add_argument("--base-url", default=None,
                       help="the server's public base URL, the token's audience (default: "
                            "FHIR_SERVER_BASE_URL, else http://host:port/fhir as serve uses)")
    token.add_argument("--host", default=None, help="as serve --host, for the default base URL")
    token.add_argument("--port", type=int, default=None,
                       help="as serve --port, for the default base URL")
    token.set_defaults(func=cmd_token)
    client = sub.add_parser("client", help="manage backend-services clients")
    client.add_argument("action", choices=["add", "list", "remove"])
    client.add_argument("--client-id", default=None)
    client.add_argument("--jwks", default=None, help="file with the client's public JWKS")
    client.add_argument("--scope", default="")
    client.add_argument("--organization", default=None, help="Organization/ID")
    client.add_argument("--data-dir", type=Path, default=None)
    client.set_defaults(func=cmd_client)
