"""Start-up of access control and auditing: the token verifier (which asks the authorization
store whether App Launch tokens were revoked) and the audit trail."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from fhir_server.authorization.store import AuthStore
from fhir_server.interactions.context import Services
from fhir_server.metrics.catalogue import AUDIT_BACKLOG
from fhir_server.security.audit import AuditTrail, BatchAuditLog
from fhir_server.security.clients import auth_database_path
from fhir_server.security.keys import load_server_key
from fhir_server.security.tokens import TokenVerifier, TrustedIssuer
from fhir_server.settings import Settings

__all__ = ["audit_trail_for", "load_trusted_issuers", "token_verifier"]

log = logging.getLogger("fhir_server.security")


def load_trusted_issuers(path: Path | None) -> list[TrustedIssuer]:
    """Read the trusted issuers file: a JSON list of TrustedIssuer fields."""
    if path is None:
        return []
    entries: list[dict[str, Any]] = json.loads(path.read_text())
    issuers = []
    for entry in entries:
        if entry.get("jwks_path"):
            entry = {**entry, "jwks_path": Path(entry["jwks_path"])}
        issuers.append(TrustedIssuer(**entry))
    return issuers


def token_verifier(settings: Settings) -> TokenVerifier | None:
    """The verifier of bearer tokens, or None (with a loud warning) when auth is off."""
    if settings.auth == "off":
        log.warning("FHIR_SERVER_AUTH=off: access control is DISABLED (development only); "
                    "every request is served without a token")
        return None
    if settings.dev_identity_provider:
        log.warning("FHIR_SERVER_DEV_IDENTITY_PROVIDER=true: /dev-idp lets ANYONE sign in as "
                    "ANY citizen (development and tests only)")
    revocations = AuthStore(auth_database_path(settings.data_dir), settings.sqlite_synchronous)
    return TokenVerifier(audience=settings.public_base_url(),
                         server_key=load_server_key(settings.data_dir),
                         trusted=load_trusted_issuers(settings.trusted_issuers_file),
                         revocations=revocations)


def audit_trail_for(services: Services) -> AuditTrail | None:
    """The batched writer of read AuditEvents into the services' store."""
    if not services.settings.audit:
        return None

    log = services.store.audit_log
    write_batch = log.append_batch if isinstance(log, BatchAuditLog) else services.store_audit
    return AuditTrail(write_batch, batch_size=500, flush_seconds=1.0,
                      on_backlog=AUDIT_BACKLOG.set)
