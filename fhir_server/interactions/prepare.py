"""Preparation shared by every write: structural validation and the search criteria of
conditional interactions (R4 http.html#ccreate, #cond-update, #cdelete)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from fhir_server.errors import BadRequest, Issue, MultipleMatches, Unprocessable
from fhir_server.facilities.known import check_facility_codes
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
    write it is checked first and ``meta.source`` records who wrote it (``guard``). Facility
    codes missing from the facility registry add a warning or raise (``facilities.known``).
    """
    validate_structure(resource, expected_type=resource_type)
    guard.prepare_write(resource, interaction)
    facility_issues = check_facility_codes(services, resource)
    mode = services.settings.validation_mode(resource_type)
    if mode == "off":
        return facility_issues
    from fhir_server.conformance.profiles import default_validator

    issues = default_validator().validate_resource(resource)
    if mode == "enforce" and any(i.severity in ("error", "fatal") for i in issues):
        first = next(i for i in issues if i.severity in ("error", "fatal"))
        raise Unprocessable(first.diagnostics, message_id=first.message_id, issues=issues)
    return (*issues, *facility_issues)


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
