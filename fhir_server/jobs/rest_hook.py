"""The rest-hook channel (Backport IG, channels.html "REST-Hook"): POST the notification
Bundle to ``channel.endpoint`` with the subscription's ``channel.payload`` as Content-Type
and each ``channel.header`` as a header. A 2xx answer is a delivery; anything else (another
status, a timeout, a refused connection, an endpoint that now resolves into a refused range)
is a failed attempt with its reason. Redirects are not followed (the endpoint was checked,
its redirect target was not)."""

from __future__ import annotations

import httpx

from fhir_server.settings import Settings
from fhir_server.subscriptions.endpoints import EndpointRefused, check_resolved
from fhir_server.subscriptions.plans import Plan

__all__ = ["post_notification"]


async def post_notification(client: httpx.AsyncClient, plan: Plan, body: bytes,
                            settings: Settings) -> str | None:
    """POST ``body``; return None when the endpoint accepted it, else why not."""
    endpoint = str(plan.endpoint)
    try:
        await check_resolved(endpoint, settings)
        headers = {"Content-Type": plan.mime, **dict(plan.headers)}
        response = await client.post(endpoint, content=body, headers=headers,
                                     timeout=plan.timeout_s)
    except EndpointRefused as exc:
        return exc.diagnostics
    except (httpx.HTTPError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if 200 <= response.status_code < 300:
        return None
    return f"the endpoint answered HTTP {response.status_code}"
