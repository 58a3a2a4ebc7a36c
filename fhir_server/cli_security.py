"""``fhir-server token`` and ``fhir-server client``: the server's own tokens and the registry
of clients, backend services and apps (both kept in the data directory)."""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from pathlib import Path

from fhir_server.security.clients import (
    ClientRegistry,
    RegisteredClient,
    auth_database_path,
    secret_hash,
)
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


def _new_client(args: argparse.Namespace) -> tuple[RegisteredClient, str | None]:
    """The client the ``add`` arguments describe, and its new secret (confidential apps)."""
    jwks = json.loads(Path(args.jwks).read_text()) if args.jwks else {}
    secret = None
    if args.kind == "confidential" and not args.jwks:
        secret = secrets.token_urlsafe(32)
    client = RegisteredClient(
        args.client_id, jwks, args.scope, args.organization, kind=args.kind, name=args.name,
        redirect_uris=tuple(args.redirect_uri or ()),
        secret_hash=secret_hash(secret) if secret else None)
    return client, secret


def cmd_client(args: argparse.Namespace) -> int:
    """Add, list or remove registered clients (backend services and apps)."""
    registry = ClientRegistry(auth_database_path(_settings(args).data_dir))
    if args.action == "add":
        client, secret = _new_client(args)
        try:
            registry.add(client)
        except ValueError as exc:
            print(f"cannot add client {args.client_id}: {exc}", file=sys.stderr)
            return 2
        print(f"added {args.kind} client {args.client_id}")
        if secret is not None:
            print(f"client secret (shown once, keep it safe): {secret}")
    elif args.action == "remove":
        removed = registry.remove(args.client_id)
        print(f"removed client {args.client_id}" if removed else f"no client {args.client_id}")
        return 0 if removed else 1
    else:
        for client in registry.list():
            detail = client.organization or " ".join(client.redirect_uris) or "-"
            print(f"{client.client_id}\t{client.kind}\t{client.scope}\t{detail}")
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
    client = sub.add_parser("client", help="manage clients (backend services and apps)")
    client.add_argument("action", choices=["add", "list", "remove"])
    client.add_argument("--client-id", default=None)
    client.add_argument("--kind", choices=["backend", "confidential", "public"],
                        default="backend", help="backend service (default), or an app: "
                        "confidential (gets a secret unless --jwks) or public (PKCE only)")
    client.add_argument("--name", default=None, help="app name shown on the consent page")
    client.add_argument("--redirect-uri", action="append",
                        help="an app's redirect URI (exact match; repeat for several)")
    client.add_argument("--jwks", default=None, help="file with the client's public JWKS")
    client.add_argument("--scope", default="", help="scopes the client may be granted")
    client.add_argument("--organization", default=None, help="Organization/ID")
    client.add_argument("--data-dir", type=Path, default=None)
    client.set_defaults(func=cmd_client)
