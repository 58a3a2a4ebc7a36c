"""SMART on FHIR scopes: the v1 and v2 grammar, and what a set of scopes allows.

Implements the clinical-scope syntax of SMART App Launch v1
(``patient/*.read``, ``user/Observation.write``, ``system/*.*``) and v2
(``patient/Observation.rs``, ``system/*.cruds``, ``patient/Observation.rs?category=laboratory``);
see https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html.

A v1 scope is read as its v2 equivalent: ``read`` = ``rs``, ``write`` = ``cud``, ``*`` = ``cruds``.
v2 permissions must be written in the order c, r, u, d, s without repeats, as the specification
requires. Query restrictions are allowed on v2 scopes only.

Scope strings that are not clinical scopes (``openid``, ``fhirUser``, ``launch/patient``,
``offline_access``...) and malformed clinical scopes are ignored by :func:`parse_scopes`, so a
token carrying them still works for what it validly grants; :func:`parse_scope` raises
:class:`InvalidScope` for them, which the token endpoint reports as ``invalid_scope``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import parse_qsl, urlencode

__all__ = [
    "PERMISSION_ORDER",
    "Interaction",
    "InvalidScope",
    "Restriction",
    "Scope",
    "ScopeContext",
    "allows",
    "is_clinical_scope",
    "narrow_scopes",
    "parse_scope",
    "parse_scopes",
    "required_permission",
    "restriction_params",
]

PERMISSION_ORDER = "cruds"

# A query restriction: (search parameter, value) pairs, all of which must hold (AND).
Restriction = tuple[tuple[str, str], ...]

_V1_PERMISSIONS = {
    "read": frozenset("rs"),
    "write": frozenset("cud"),
    "*": frozenset(PERMISSION_ORDER),
}
_V1_WORDS = {letters: word for word, letters in _V1_PERMISSIONS.items()}
_SCOPE_PATTERN = re.compile(
    r"(?P<context>patient|user|system)/(?P<type>\*|[A-Z][A-Za-z]{1,63})"
    r"\.(?P<permissions>read|write|\*|c?r?u?d?s?)(?:\?(?P<query>.+))?"
)


class InvalidScope(ValueError):
    """A clinical scope string that does not follow the SMART v1 or v2 grammar."""


class ScopeContext(StrEnum):
    """Whose data a scope reaches: one patient's, the user's, or the whole system's."""

    PATIENT = "patient"
    USER = "user"
    SYSTEM = "system"


class Interaction(StrEnum):
    """FHIR RESTful interactions and the operations the server maps to a permission."""

    READ = "read"
    VREAD = "vread"
    HISTORY_INSTANCE = "history-instance"
    HISTORY_TYPE = "history-type"
    HISTORY_SYSTEM = "history-system"
    SEARCH_TYPE = "search-type"
    SEARCH_SYSTEM = "search-system"
    CREATE = "create"
    UPDATE = "update"
    PATCH = "patch"
    DELETE = "delete"
    OPERATION_EVERYTHING = "$everything"
    OPERATION_SUMMARY = "$summary"
    OPERATION_EXPORT = "$export"
    OPERATION_VALIDATE = "$validate"
    OPERATION_EXPAND = "$expand"
    OPERATION_LOOKUP = "$lookup"
    OPERATION_VALIDATE_CODE = "$validate-code"
    OPERATION_META = "$meta"
    OPERATION_DOCUMENT = "$document"
    OPERATION_JSON_SCHEMA = "$json-schema"
    OPERATION_BREAK_GLASS = "$break-glass"
    OPERATION_ACCESS_LOG = "$access-log"
    OPERATION_STATUS = "$status"
    OPERATION_EVENTS = "$events"
    OPERATION_GET_WS_BINDING_TOKEN = "$get-ws-binding-token"
    OPERATION_IMPORT_XML130 = "$import-xml130"
    OPERATION_CONVERT_XML130 = "$convert-xml130"
    OPERATION_EXPORT_XML130 = "$export-xml130"
    OPERATION_VERIFY_SIGNATURE = "$verify-signature"


# SMART v2: c = create, r = read/vread/instance history, u = update/patch, d = delete,
# s = search and type/system history. Operations that return many resources count as search;
# terminology look-ups and $meta read one resource; $validate is a dry-run create;
# $break-glass asks to read a patient's record (r on Patient), $access-log reads the log of
# accesses to it (r on Patient; the operation admits only the citizen and operators).
_REQUIRED_PERMISSION: dict[Interaction, str] = {
    Interaction.READ: "r",
    Interaction.VREAD: "r",
    Interaction.HISTORY_INSTANCE: "r",
    Interaction.HISTORY_TYPE: "s",
    Interaction.HISTORY_SYSTEM: "s",
    Interaction.SEARCH_TYPE: "s",
    Interaction.SEARCH_SYSTEM: "s",
    Interaction.CREATE: "c",
    Interaction.UPDATE: "u",
    Interaction.PATCH: "u",
    Interaction.DELETE: "d",
    Interaction.OPERATION_EVERYTHING: "s",
    Interaction.OPERATION_SUMMARY: "s",
    Interaction.OPERATION_EXPORT: "s",
    Interaction.OPERATION_VALIDATE: "c",
    Interaction.OPERATION_EXPAND: "r",
    Interaction.OPERATION_LOOKUP: "r",
    Interaction.OPERATION_VALIDATE_CODE: "r",
    Interaction.OPERATION_META: "r",
    Interaction.OPERATION_DOCUMENT: "s",
    Interaction.OPERATION_JSON_SCHEMA: "r",
    Interaction.OPERATION_BREAK_GLASS: "r",
    Interaction.OPERATION_ACCESS_LOG: "r",
    # A subscription's status, its events and a websocket token read the subscription (each
    # event's focus is judged as a read of it).
    Interaction.OPERATION_STATUS: "r",
    Interaction.OPERATION_EVENTS: "r",
    Interaction.OPERATION_GET_WS_BINDING_TOKEN: "r",
    Interaction.OPERATION_IMPORT_XML130: "c",
    Interaction.OPERATION_CONVERT_XML130: "c",
    Interaction.OPERATION_EXPORT_XML130: "s",
    Interaction.OPERATION_VERIFY_SIGNATURE: "r",
}


@dataclass(frozen=True)
class Scope:
    """One clinical scope: context, resource type (or ``*``), permissions and restriction."""

    context: ScopeContext
    resource_type: str
    permissions: frozenset[str]
    restriction: Restriction = ()
    version: int = 2

    def covers(self, resource_type: str | None) -> bool:
        """Return whether the scope names ``resource_type`` (``None``, the whole system: ``*``)."""
        return self.resource_type == "*" or self.resource_type == resource_type

    def to_text(self) -> str:
        """Return the scope as a SMART string (v1 form if it was written in v1 and still fits)."""
        letters = "".join(p for p in PERMISSION_ORDER if p in self.permissions)
        word = _V1_WORDS.get(self.permissions) if self.version == 1 else None
        text = f"{self.context}/{self.resource_type}.{word or letters}"
        if self.restriction and not word:
            text += "?" + urlencode(self.restriction, safe="|:/,")
        return text

    def intersect(self, other: Scope) -> Scope | None:
        """Return the scope granting what both grant, or ``None`` if they share nothing."""
        if self.context != other.context:
            return None
        resource_type = _narrower_type(self.resource_type, other.resource_type)
        permissions = self.permissions & other.permissions
        if resource_type is None or not permissions:
            return None
        # Query parameters are ANDed, so the union of two restrictions is their conjunction.
        extra = tuple(pair for pair in other.restriction if pair not in self.restriction)
        restriction = self.restriction + extra
        keeps_v1 = self.version == 1 and permissions == self.permissions and not restriction
        return Scope(self.context, resource_type, permissions, restriction, 1 if keeps_v1 else 2)


def _narrower_type(first: str, second: str) -> str | None:
    if first == "*":
        return second
    if second in ("*", first):
        return first
    return None


def is_clinical_scope(text: str) -> bool:
    """Return whether ``text`` claims to be a patient/, user/ or system/ scope."""
    return text.startswith(("patient/", "user/", "system/"))


def parse_scope(text: str) -> Scope:
    """Parse one clinical scope string; raises :class:`InvalidScope` if it is malformed."""
    match = _SCOPE_PATTERN.fullmatch(text)
    if match is None or not match["permissions"]:
        raise InvalidScope(f"not a SMART clinical scope: {text!r}")
    word = match["permissions"]
    version = 1 if word in _V1_PERMISSIONS else 2
    permissions = _V1_PERMISSIONS.get(word) or frozenset(word)
    query = match["query"]
    if query is not None and version == 1:
        raise InvalidScope(f"query restrictions need SMART v2 permissions: {text!r}")
    restriction = _parse_restriction(query, text) if query is not None else ()
    context = ScopeContext(match["context"])
    return Scope(context, match["type"], permissions, restriction, version)


def _parse_restriction(query: str, text: str) -> Restriction:
    try:
        pairs = parse_qsl(query, keep_blank_values=False, strict_parsing=True)
    except ValueError as exc:
        raise InvalidScope(f"malformed query restriction in {text!r}") from exc
    return tuple(pairs)


def parse_scopes(text: str | Iterable[str]) -> tuple[Scope, ...]:
    """Parse a space-separated scope string (or a list), keeping only valid clinical scopes."""
    words = text.split() if isinstance(text, str) else text
    scopes: list[Scope] = []
    for word in words:
        try:
            scopes.append(parse_scope(word))
        except InvalidScope:
            continue
    return tuple(scopes)


def required_permission(interaction: Interaction) -> str:
    """Return the v2 permission letter (c, r, u, d or s) an interaction needs."""
    return _REQUIRED_PERMISSION[interaction]


def _granting(
    scopes: Iterable[Scope],
    context: ScopeContext | None,
    resource_type: str | None,
    interaction: Interaction,
) -> list[Scope]:
    letter = _REQUIRED_PERMISSION[interaction]
    return [
        scope
        for scope in scopes
        if (context is None or scope.context == context)
        and scope.covers(resource_type)
        and letter in scope.permissions
    ]


def allows(
    scopes: Iterable[Scope],
    context: ScopeContext | None,
    resource_type: str | None,
    interaction: Interaction,
) -> bool:
    """Return whether any scope (of ``context``, or any context if ``None``) permits the
    interaction on ``resource_type`` (``None`` for whole-system interactions).

    A restricted scope counts: use :func:`restriction_params` to learn what it limits.
    Compartment rules for ``patient/`` scopes are the policy's job, not this function's.
    """
    return bool(_granting(scopes, context, resource_type, interaction))


def restriction_params(
    scopes: Iterable[Scope],
    resource_type: str | None,
    interaction: Interaction = Interaction.SEARCH_TYPE,
    context: ScopeContext | None = None,
) -> tuple[Restriction, ...] | None:
    """Return the v2 query restrictions that limit the interaction on ``resource_type``.

    ``None`` means unrestricted (some granting scope has no restriction). Otherwise the result
    lists alternatives (OR); each is a tuple of (parameter, value) pairs that must all hold.
    An empty tuple means no scope grants the interaction at all.
    """
    granting = _granting(scopes, context, resource_type, interaction)
    if any(not scope.restriction for scope in granting):
        return None
    return tuple(dict.fromkeys(scope.restriction for scope in granting))


def narrow_scopes(requested: Sequence[Scope], allowed: Sequence[Scope]) -> tuple[Scope, ...]:
    """Return the requested scopes cut down to what the allowed scopes grant (no duplicates)."""
    granted: dict[Scope, None] = {}
    for wanted in requested:
        for permitted in allowed:
            common = wanted.intersect(permitted)
            if common is not None:
                granted[common] = None
    return tuple(granted)
