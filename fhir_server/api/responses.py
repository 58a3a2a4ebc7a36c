"""Rendering of FHIR JSON responses: format negotiation, ``_pretty``, ``_summary``,
``_elements``, and reading request bodies within the size limit.

Only JSON is served (``application/fhir+json`` and ``application/json``). Asking for anything
else answers 406 (``Accept``/``_format``) or 415 (request ``Content-Type``) with an
OperationOutcome that names the supported formats.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.requests import Request
from starlette.responses import Response

from fhir_server import decimals
from fhir_server.conformance import structure
from fhir_server.errors import BadRequest, NotAcceptable, PayloadTooLarge, UnsupportedMediaType

__all__ = [
    "FHIR_JSON",
    "check_accept",
    "fhir_response",
    "read_body",
    "read_form",
    "require_content_type",
    "shape_resource",
]

FHIR_JSON = "application/fhir+json; charset=utf-8"
_JSON_TYPES = {"application/fhir+json", "application/json", "application/json+fhir"}
_FORMAT_ALIASES = {"json", *_JSON_TYPES}
_ACCEPT_ANY = {"*/*", "application/*"}
SUPPORTED = "Supported formats: application/fhir+json, application/json."
SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
             "code": "SUBSETTED"}


def _media_types(header: str) -> list[str]:
    return [part.split(";")[0].strip().lower() for part in header.split(",") if part.strip()]


def wants_html(request: Request) -> bool:
    """True when the client asks for HTML first (``_format=html`` or Accept: text/html)."""
    fmt = request.query_params.get("_format")
    if fmt is not None:
        return fmt.split(";")[0].strip().lower() in ("html", "text/html")
    types = _media_types(request.headers.get("accept", ""))
    return bool(types) and types[0] == "text/html"


def check_accept(request: Request) -> None:
    """Raise ``NotAcceptable`` unless the client accepts JSON (``_format`` wins over Accept).

    Operations that can render HTML check ``wants_html`` before this is called.
    """
    fmt = request.query_params.get("_format")
    if fmt is not None:
        if fmt.split(";")[0].strip().lower() not in _FORMAT_ALIASES:
            raise NotAcceptable(f"_format '{fmt}' is not supported. {SUPPORTED}",
                                message_id="MSG_FORMAT_NOT_SUPPORTED")
        return
    accept = request.headers.get("accept")
    if not accept:
        return
    types = _media_types(accept)
    if any(t in _JSON_TYPES or t in _ACCEPT_ANY for t in types):
        return
    raise NotAcceptable(f"Cannot produce {accept}. {SUPPORTED}",
                        message_id="MSG_FORMAT_NOT_SUPPORTED")


def require_content_type(request: Request, allowed: set[str] | None = None) -> None:
    """Raise ``UnsupportedMediaType`` unless the body's Content-Type is an allowed one."""
    allowed = allowed or _JSON_TYPES
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";")[0].strip().lower()
    if media not in allowed:
        raise UnsupportedMediaType(
            f"Content-Type '{content_type or '(none)'}' is not supported here. "
            f"Send one of: {', '.join(sorted(allowed))}.",
            message_id="MSG_UNSUPPORTED_MEDIA_TYPE",
        )


async def read_body(request: Request, limit: int, required: bool = True) -> bytes:
    """Read the request body, refusing (413) as soon as it exceeds ``limit`` bytes; an empty
    body is a 400 when ``required``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The body exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body and required:
        raise BadRequest("The request has no body", message_id="MSG_BODY_MISSING")
    return body


async def read_form(request: Request, limit: int) -> list[tuple[str, str]]:
    """The name=value pairs of an ``application/x-www-form-urlencoded`` body (UTF-8), in
    order; an empty body has none. Raises 415 for another type, 413 past ``limit`` bytes,
    and 400 (``MSG_FORM_INVALID``) for a body that is not UTF-8."""
    require_content_type(request, {"application/x-www-form-urlencoded"})
    if request.headers.get("content-length", "0") == "0":
        return []
    try:
        text = (await read_body(request, limit)).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"The form body is not UTF-8 (byte {exc.start})",
                         message_id="MSG_FORM_INVALID") from None
    return parse_qsl(text, keep_blank_values=True)


def _pretty(request: Request) -> bool:
    return request.query_params.get("_pretty", "false").lower() == "true"


def _with_subsetted(resource: dict[str, Any], kept: dict[str, Any]) -> dict[str, Any]:
    meta = dict(kept.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), SUBSETTED]
    kept["meta"] = meta
    return kept


def shape_resource(resource: dict[str, Any], summary: str | None,
                   elements: str | None) -> dict[str, Any]:
    """Apply ``_summary`` (true, text, data, false) and ``_elements`` to one resource."""
    rtype = resource.get("resourceType", "")
    if elements:
        wanted = {e.strip() for e in elements.split(",") if e.strip()}
        wanted |= structure.mandatory_elements(rtype) | {"resourceType", "id", "meta"}
        return _with_subsetted(resource, {k: v for k, v in resource.items() if k in wanted})
    if summary in (None, "false"):
        return resource
    keep: set[str]
    if summary == "true":
        keep = set(structure.summary_elements(rtype)) | {"resourceType", "id", "meta"}
    elif summary == "text":
        keep = {"resourceType", "id", "meta", "text"} | set(structure.mandatory_elements(rtype))
    elif summary == "data":
        keep = set(resource) - {"text"}
    else:
        raise BadRequest(f"_summary '{summary}' is not valid here",
                         message_id="MSG_PARAM_INVALID", expression=("_summary",))
    return _with_subsetted(resource, {k: v for k, v in resource.items() if k in keep})


def fhir_response(
    request: Request,
    status: int,
    body: dict[str, Any] | bytes | None,
    headers: dict[str, str] | None = None,
) -> Response:
    """Render ``body`` as FHIR JSON; bytes are sent as stored unless shaping is asked."""
    if body is None:
        return Response(status_code=status, headers=headers)
    params = request.query_params
    summary, elements = params.get("_summary"), params.get("_elements")
    if isinstance(body, bytes) and not (summary or elements or _pretty(request)):
        return Response(body, status, headers, media_type=FHIR_JSON)
    value = decimals.loads(body) if isinstance(body, bytes) else body
    if (summary or elements) and value.get("resourceType") not in ("Bundle", "OperationOutcome"):
        value = shape_resource(value, summary, elements)
    option = orjson.OPT_INDENT_2 if _pretty(request) else 0
    return Response(decimals.dumps(value, option), status, headers, media_type=FHIR_JSON)
