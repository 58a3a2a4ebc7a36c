"""Preparation shared by every write: structural validation and the search criteria of
conditional interactions (R4 http.html#ccreate, #cond-update, #cdelete)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from fhir_server.errors import BadRequest, Issue, MultipleMatches, Unprocessable
from fhir_server.geography.addresses import address_context, annotate
from fhir_server.interactions.context import Services
from fhir_server.resources import validate_structure
from fhir_server.security import guard
from fhir_server.storage.port import StoreTransaction

__all__ = ["match_single", "parse_criteria", "prepare_resource"]


def prepare_resource(
    services: Services, resource: dict[str, Any], resource_type: str, interaction: str = "create"
) -> tuple[Issue, ...]:
    """Validate ``resource`` as a ``resource_type``: base R4 structure always, then profiles.

    Profiles (those in ``meta.profile`` and the Vietnamese profile required for the type) are
    checked unless validation is ``off`` for the type. Under ``enforce`` any error raises
    ``Unprocessable`` (422) with every issue; under ``warn`` the issues are returned for the
    response. Raises ``InvalidResource`` (400) for structural errors. The caller's right to
    write it is checked first and ``meta.source`` records who wrote it (``guard``). An
    address written with the administrative units of before 1 July 2025 gets the extension
    ``address-current-units`` (``fhir_server.geography.addresses.annotate``).
    """
    validate_structure(resource, expected_type=resource_type)
    guard.prepare_write(resource, interaction)
    annotate(resource)  # the current units of an address written with pre-2025 codes
    mode = services.settings.validation_mode(resource_type)
    if mode == "off":
        return ()
    from fhir_server.conformance.profiles import default_validator

    with address_context(unknown=services.settings.unknown_unit_code):
        issues = default_validator().validate_resource(resource)
    if mode == "enforce" and any(i.severity in ("error", "fatal") for i in issues):
        first = next(i for i in issues if i.severity in ("error", "fatal"))
        raise Unprocessable(first.diagnostics, message_id=first.message_id, issues=issues)
    return tuple(issues)


def parse_criteria(query: str) -> list[tuple[str, str]]:
    """Parse the search part of a conditional interaction; it must not be empty."""
    params = parse_qsl(query.lstrip("?"), keep_blank_values=True)
    params = [(k, v) for k, v in params if k not in ("_format", "_pretty")]
    if not params:
        raise BadRequest(
            "A conditional interaction needs search criteria",
            message_id="MSG_CONDITIONAL_NO_CRITERIA",
        )
    return params


async def match_single(
    tx: StoreTransaction, resource_type: str, params: list[tuple[str, str]]
) -> str | None:
    """Return the id of the one match, None for no match; raise ``MultipleMatches``."""
    ids = await tx.find(resource_type, params)
    if len(ids) > 1:
        raise MultipleMatches(
            f"The criteria matched {len(ids)} {resource_type} resources; expected at most one"
        )
    return ids[0] if ids else None
