"""What every write prepares outside the write lock: structural and profile validation, the
record of who writes (``meta.source``), the search criteria of conditional interactions
(R4 http.html#ccreate, #cond-update, #cdelete) and the application of a JSON Patch."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

import jsonpatch

from fhir_server.conformance.profiles import default_validator
from fhir_server.errors import BadRequest, Issue, Unprocessable
from fhir_server.facilities.known import check_facility_codes
from fhir_server.geography.addresses import address_context, annotate
from fhir_server.interactions.context import Services
from fhir_server.resources import validate_structure
from fhir_server.search.model import Clause, ParamType, SearchQuery, TokenValue
from fhir_server.search.parse import parse_search
from fhir_server.search.registry import SearchParameterRegistry
from fhir_server.security.policy import Access
from fhir_server.signatures.on_write import check_written
from fhir_server.signatures.proof import Proof

__all__ = ["Prepared", "apply_patch", "parse_criteria", "prepare_resource"]


class Prepared(NamedTuple):
    """What preparing a resource found: validation issues to report (``warn`` mode) and the
    proofs of the signatures it carries, to keep with it (``signatures.proof``)."""

    issues: tuple[Issue, ...]
    proofs: tuple[Proof, ...] = ()


def prepare_resource(
    services: Services, access: Access, resource: dict[str, Any], resource_type: str
) -> Prepared:
    """Validate the content to store as a ``resource_type``, check the signatures it carries
    (``signatures.on_write``, before the server changes anything in it) and record who writes
    it (``meta.source``): base R4 structure always, then profiles.

    Profiles (those in ``meta.profile`` and the Vietnamese profile required for the type) are
    checked unless validation is ``off`` for the type. Under ``enforce`` any error raises
    ``Unprocessable`` (422) with every issue; under ``warn`` the issues are returned for the
    response. Raises ``InvalidResource`` (400) for structural errors. An address written
    with the administrative units of before 1 July 2025 gets the extension
    ``address-current-units`` (``fhir_server.geography.addresses.annotate``). Sensitive data
    gets the security labels of the deployment's labelling rules (``security.sharing``).
    Facility codes missing from the facility registry add a warning or raise
    (``facilities.known``). A signature that does not verify raises ``Unprocessable`` (422)
    under ``signature_verification`` ``enforce``.
    """
    validate_structure(resource, expected_type=resource_type)
    proofs = check_written(services, resource)
    access.stamp(resource)
    services.sharing.label(resource)  # sensitive data carries its security label
    annotate(resource)  # the current units of an address written with pre-2025 codes
    facility_issues = check_facility_codes(services, resource)
    mode = services.settings.validation_mode(resource_type)
    if mode == "off":
        return Prepared(tuple(facility_issues), proofs)
    with address_context(unknown=services.settings.unknown_unit_code):
        issues = default_validator().validate_resource(resource)
    if mode == "enforce" and any(i.severity in ("error", "fatal") for i in issues):
        first = next(i for i in issues if i.severity in ("error", "fatal"))
        raise Unprocessable(first.diagnostics, message_id=first.message_id, issues=issues)
    return Prepared((*issues, *facility_issues), proofs)


def parse_criteria(
    services: Services, access: Access, resource_type: str,
    criteria: str | Sequence[tuple[str, str]],
) -> SearchQuery:
    """Parse the search of a conditional interaction, limited to what the caller may see
    (another patient's resource never matches). ``criteria`` is a query string, with or
    without ``?``, or the full form ``Type?query`` (as ``ifNoneExist`` is often written).
    It must not be empty. Unknown parameters are refused (strict handling): a criterion that
    silently matched everything would act on the wrong resource."""
    if isinstance(criteria, str):
        query = criteria.lstrip("?")
        head, mark, rest = query.partition("?")
        criteria = parse_qsl(rest if mark and head == resource_type else query,
                             keep_blank_values=True)
    params = tuple((k, v) for k, v in criteria if k not in ("_format", "_pretty"))
    if not params:
        raise BadRequest("A conditional interaction needs search criteria",
                         message_id="MSG_CONDITIONAL_NO_CRITERIA")
    registry = services.registry
    parsed = (_identifier_criterion(registry, resource_type, params)
              or _parsed(registry, resource_type, params))
    return access.scoped(parsed)


@lru_cache(maxsize=4096)
def _parsed(registry: SearchParameterRegistry, resource_type: str,
            params: tuple[tuple[str, str], ...]) -> SearchQuery:
    """The parsed criteria, remembered: a hospital push's criteria repeat (its facility, the
    same identifier systems), and a Bundle names each several times. The criterion of every
    push entry, ``identifier=system|value``, is made directly before this (what the parser
    would make, without its general steps: a tenth of a visit's preparation otherwise), and
    not remembered: its value is new in nearly every entry, so the memo only missed."""
    return parse_search(resource_type, list(params), registry, strict=True).query


def _identifier_criterion(registry: SearchParameterRegistry, resource_type: str,
                          params: tuple[tuple[str, str], ...]) -> SearchQuery | None:
    if len(params) != 1 or params[0][0] != "identifier":
        return None
    system, bar, code = params[0][1].partition("|")
    definition = registry.get(resource_type, "identifier")
    if (not bar or not system or not code or any(c in params[0][1] for c in ",\\$")
            or definition is None or definition.type is not ParamType.TOKEN):
        return None
    clause = Clause("identifier", ParamType.TOKEN, (TokenValue(system, code),))
    return SearchQuery(resource_type, clauses=(clause,))


def apply_patch(
    current: dict[str, Any], operations: object, resource_type: str, id: str
) -> dict[str, Any]:
    """Return ``current`` with the JSON Patch (RFC 6902) applied; it may not change the type
    or the id. Raises ``BadRequest`` (not a patch) or ``Unprocessable`` (does not apply)."""
    if not isinstance(operations, list):
        raise BadRequest("A JSON Patch document is an array", message_id="MSG_PATCH_INVALID")
    try:
        patched = jsonpatch.JsonPatch(operations).apply(current)
    except jsonpatch.JsonPatchTestFailed as exc:
        raise Unprocessable(str(exc), message_id="MSG_PATCH_TEST_FAILED") from None
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError) as exc:
        raise Unprocessable(f"The patch cannot be applied: {exc}",
                            message_id="MSG_PATCH_FAILED") from None
    if not isinstance(patched, dict):
        raise Unprocessable("The patch did not produce a resource", message_id="MSG_PATCH_FAILED")
    if patched.get("id") != id or patched.get("resourceType") != resource_type:
        raise Unprocessable("A patch may not change id or resourceType",
                            message_id="MSG_PATCH_ID_CHANGED")
    return patched
