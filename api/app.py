"""The app factory: routers, problem details, probes and metrics, the store it shares."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import REGISTRY, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pymongo import ASCENDING, DESCENDING

from api import accounts, letters, managers, notifications, oauth, operators, problems
from api.settings import ApiSettings
from shared.crypto import SecretBox
from shared.health import Readiness, connectivity_problems
from shared.logging import get_logger
from shared.store import Store, store_errors

log = get_logger("mailintake.api")
REQUESTS = Counter(
    "mailintake_api_requests", "API requests answered, by route and status.", ["route", "status"]
)
LATENCY = Histogram(
    "mailintake_api_request_seconds",
    "Time the API took to answer, by route.",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 30),
)
# What the listings sort by, within a tenant (created at start, like Store.ensure_indexes).
INDEXES = [
    ("emails", [("tenant_id", ASCENDING), ("received_at", DESCENDING), ("_id", DESCENDING)]),
    ("emails", [("tenant_id", ASCENDING), ("customer_id", ASCENDING), ("received_at", DESCENDING)]),
    ("emails", [("tenant_id", ASCENDING), ("order_id", ASCENDING), ("received_at", DESCENDING)]),
    (
        "notifications",
        [("tenant_id", ASCENDING), ("user_id", ASCENDING), ("created_at", ASCENDING)],
    ),
]


def open_store(settings: ApiSettings) -> Store:
    store = Store(settings.mongo_url.get_secret_value(), settings.mongo_database)
    with store_errors("ensure the API's indexes"):
        for name, keys in INDEXES:
            store[name].create_index(keys)
    return store


def _route_name(request: Request) -> str:
    """The matched route's path template (never the ids in the URL), set by the router."""
    route = request.scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return str(path) if path else "unmatched"


def create_app(settings: ApiSettings | None = None, store: Store | None = None) -> FastAPI:
    """The API over `store` (opened from `settings` at start when not given)."""
    settings = settings or ApiSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = store is None
        app.state.store = store or await run_in_threadpool(open_store, settings)
        try:
            yield
        finally:
            if own:
                app.state.store.close()

    app = FastAPI(
        title="mailintake",
        version="1",
        summary="The CRM's door to mailboxes, letters, notifications and managers' status.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    key = settings.secret_key.get_secret_value() if settings.secret_key else ""
    app.state.secrets = SecretBox(key) if key else None
    if store is not None:
        app.state.store = store
    problems.install(app)
    for module in (accounts, oauth, letters, notifications, managers, operators):
        app.include_router(module.router)
    _probes(app)
    return app


def _probes(app: FastAPI) -> None:
    readiness = Readiness({"store": lambda: _store_problem(app)})

    @app.middleware("http")
    async def _measure(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = _route_name(request)
        REQUESTS.labels(route, str(response.status_code)).inc()
        LATENCY.labels(route).observe(time.perf_counter() - started)
        return response

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> Response:
        return Response("ok\n", media_type="text/plain")

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> Response:
        found = readiness.problems()
        body = ("\n".join(found) or "ready") + "\n"
        return Response(body, status_code=503 if found else 200, media_type="text/plain")

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


def _store_problem(app: FastAPI) -> str | None:
    store: Store | None = getattr(app.state, "store", None)
    if store is None:
        return "not started"
    found = connectivity_problems({"ping": store.ping})
    return found[0] if found else None
