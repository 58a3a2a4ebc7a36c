"""Turn failures into OperationOutcome responses.

A ``FhirError`` renders with its own status and issues. Starlette's own 404/405 (no route,
wrong method) become OperationOutcomes too. Anything else is a 500 whose client message is
generic; the stack trace goes to the log only, tagged with the request id.
"""

from __future__ import annotations

import logging

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from fhir_server.api.responses import FHIR_JSON
from fhir_server.errors import FhirError, Issue, MethodNotAllowed, NotFound
from fhir_server.outcomes import operation_outcome

__all__ = ["fhir_error_response", "http_exception_handler", "unexpected_error_handler"]

log = logging.getLogger("fhir_server.errors")


def fhir_error_response(error: FhirError) -> Response:
    """Render a ``FhirError`` as its status and OperationOutcome."""
    body = orjson.dumps(operation_outcome(error.issues))
    return Response(body, error.status, error.headers or None, media_type=FHIR_JSON)


async def fhir_error_handler(request: Request, exc: Exception) -> Response:
    """Exception handler for ``FhirError``."""
    assert isinstance(exc, FhirError)
    return fhir_error_response(exc)


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    """Map Starlette's routing errors to OperationOutcomes."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        error: FhirError = MethodNotAllowed(
            f"{request.method} is not allowed on {request.url.path}",
            headers=dict(exc.headers or {}),
        )
    elif exc.status_code == 404:
        error = NotFound(f"No FHIR endpoint at {request.url.path}", message_id="MSG_NO_ENDPOINT")
    else:
        error = FhirError(str(exc.detail))
        error.status = exc.status_code
    return fhir_error_response(error)


async def unexpected_error_handler(request: Request, exc: Exception) -> Response:
    """Log the stack trace and answer 500 with a generic OperationOutcome."""
    request_id = request.headers.get("x-request-id", "-")
    log.exception("unexpected error (request %s)", request_id, exc_info=exc)
    issue = Issue("fatal", "exception", "MSG_INTERNAL_ERROR",
                  "An internal error occurred; it has been logged.")
    body = orjson.dumps(operation_outcome([issue]))
    return Response(body, 500, media_type=FHIR_JSON)
