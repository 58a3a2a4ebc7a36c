"""create_app(settings): the ASGI application. Wiring only: the store is opened in the
lifespan, routes come from ``api.routes``, endpoints from ``api.endpoints`` and
``api.fhir``."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.exceptions import HTTPException

from fhir_server.api.cors import cors_middleware
from fhir_server.api.endpoints import ENDPOINTS
from fhir_server.api.errors import http_exception_handler
from fhir_server.api.fhir import fhir_endpoint
from fhir_server.api.middleware import RequestLogMiddleware
from fhir_server.api.routes import FHIR_BASE_PATH, OTHER_ROUTES, WEBSOCKET_ROUTES
from fhir_server.api.websocket import subscription_websocket
from fhir_server.conformance.seeding import seed_conformance
from fhir_server.facilities.known import load_known_facilities
from fhir_server.heap import keep_frozen
from fhir_server.interactions.context import Services
from fhir_server.jobs import subscription_delivery
from fhir_server.jobs.setup import start_jobs, stop_jobs
from fhir_server.jobs.websocket_hub import WebSocketHub
from fhir_server.logs import configure_logging
from fhir_server.metrics.exposition import process_ended
from fhir_server.router.door import handle
from fhir_server.search.setup import prepare_search
from fhir_server.security.setup import audit_trail_for, token_verifier
from fhir_server.settings import Settings
from fhir_server.storage.factory import open_store
from fhir_server.supervision import follow_supervisor
from fhir_server.warmup import warm_up

__all__ = ["create_app"]

log = logging.getLogger("fhir_server")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Return the FHIR server application for ``settings`` (default: from the environment)."""
    settings = settings or Settings()
    # In each worker process (see fhir_server.logs).
    configure_logging(settings.log_level, settings.log_format)
    follow_supervisor()  # a worker of `serve --workers N` ends with its supervisor

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        registry = prepare_search(settings)
        store = open_store(settings, registry)
        await store.open()
        services = Services(store=store, settings=settings, registry=registry, handle=handle,
                            verifier=token_verifier(settings))
        services.audit_trail = audit_trail_for(services)
        if settings.auth == "off":
            log.warning("access control is OFF: every request is served without a token")
        app.state.services = services
        await seed_conformance(services)
        await load_known_facilities(services)  # the facility registry's codes
        app.state.subscription_hub = WebSocketHub()
        delivery = (await subscription_delivery.start(services, app.state.subscription_hub)
                    if settings.subscriptions else None)
        app.state.subscription_delivery = delivery
        # Before the first request: what the first push would build (fhir_server.warmup).
        warm_up(services)
        # What start-up built (search registry, profiles, code systems: ~70,000 objects) lives
        # as long as the process; frozen, the full collections stop walking it each time
        # (one took ~20 ms, a pause for every request in flight).
        gc.freeze()
        refreezing = asyncio.get_running_loop().create_task(keep_frozen())
        services.jobs = start_jobs(services)
        try:
            yield
        finally:
            await stop_jobs(services.jobs)
            refreezing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refreezing
            if delivery is not None:
                await delivery.stop()
            if services.audit_trail is not None:
                await services.audit_trail.close()
            await store.close()
            process_ended()

    app = FastAPI(title="fhir-server", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    for method, path, name in OTHER_ROUTES:
        app.add_route(path, ENDPOINTS[name], methods=[method], name=name)
    every_method = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]
    app.add_route(FHIR_BASE_PATH, fhir_endpoint, methods=every_method, name="fhir-base")
    app.add_route(FHIR_BASE_PATH + "/{path:path}", fhir_endpoint, methods=every_method,
                  name="fhir")
    for path in WEBSOCKET_ROUTES:
        app.router.add_websocket_route(path, subscription_websocket)
    app.add_exception_handler(HTTPException, http_exception_handler)
    if settings.cors_origins:
        app.add_middleware(cors_middleware, origins=settings.cors_origins)
    app.add_middleware(RequestLogMiddleware)
    return app
