"""The FastAPI app: `create_app(settings)` builds it; the lifespan loads the models once.

`app` is the default ASGI app (settings from the environment); nothing heavy happens on import.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from backend.app import __version__
from backend.app.api.protocols.calls import Calls
from backend.app.api.protocols.wyoming.server import WyomingServer
from backend.app.api.router import router
from backend.app.api.routes.page import load_site
from backend.app.api.routes.ququ import QuquStats
from backend.app.backends import manifest
from backend.app.container import ServiceGate, Services, build_services
from backend.app.core.auth import ApiKeyMiddleware
from backend.app.core.config import Settings
from backend.app.core.errors import AppError, StorageUnavailableError, install_error_handlers
from backend.app.core.keys import KeyRing, load_keys
from backend.app.core.logs import redact_credentials
from backend.app.core.metrics import HttpMetrics
from backend.app.core.middleware import (
    BodySizeLimitMiddleware,
    CancelOnDisconnectMiddleware,
    JSONGuardMiddleware,
    RequestContextMiddleware,
)
from backend.app.core.quotas import KeyLedger
from backend.app.core.shedding import AdmissionBudgetMiddleware, EarlyRefusalMiddleware, EarlyReturnMiddleware
from backend.app.services.mcp_tools import McpTools

logger = logging.getLogger("backend.app")

STORAGE_WATCH_S = 10.0
"""How often the conversation store is asked whether it can be used, requests or not: a database
server that goes away is logged when it goes (and when it is back), not at the next request."""


async def _sweep_outputs(app: FastAPI, every_s: float) -> None:
    """Apply the OUTPUTS_DIR retention now and then, for as long as the app runs."""
    while True:
        services: Services | None = app.state.gate.services
        try:
            if services is not None:
                removed = await anyio.to_thread.run_sync(services.sweep_outputs)
                if removed:
                    logger.info("removed %d expired reply audio files", removed)
        except StorageUnavailableError as e:
            # A database server that is down was logged by its store, once, when it went; a local
            # store's failure is said here. The next sweep retries.
            shared = services is not None and services.history.store.shared
            (logger.debug if shared else logger.warning)("output sweep skipped: %s", e.message)
        except Exception:  # a failed sweep must not end the loop; the next one retries
            logger.exception("output sweep failed")
        await asyncio.sleep(every_s if services is not None else 1.0)


async def _watch_storage(app: FastAPI, every_s: float = STORAGE_WATCH_S) -> None:
    """Ask the conversation store now and then whether it can be used (`ping`): its outages are
    noticed, and logged, while no request needs it."""
    while True:
        services: Services | None = app.state.gate.services
        if services is not None:
            try:
                await services.history.check_storage()
            except Exception:  # the watch must not end; /health asks again anyway
                logger.exception("storage check failed")
        await asyncio.sleep(every_s if services is not None else 1.0)


def _load_in_background(app: FastAPI, settings: Settings) -> threading.Thread:
    """Load the models on a daemon thread while the server already answers /health (`loading`,
    then `ok`; `degraded` with the reason when loading fails). Routes answer 503 until then."""

    def load() -> None:
        try:
            services = build_services(settings, gate.loaded)
        except Exception as e:  # ModelLoadError, or an engine's own error (CUDA out of memory, ...)
            gate.load_error = str(e) or type(e).__name__
            logger.error("the models failed to load: %s", gate.load_error)
            return
        try:
            manifest.record(settings.storage.models_dir, manifest.configured_models(settings))
        except Exception as e:  # the record is a convenience: never keep a loaded server from serving
            logger.warning("could not record the models in the manifest: %s", e)
        services.chat.tools = getattr(app.state, "tools", None)
        gate.services = services

    gate: ServiceGate = app.state.gate
    thread = threading.Thread(target=load, name="model-loader", daemon=True)
    thread.start()
    return thread


async def _start_wyoming(app: FastAPI, settings: Settings) -> WyomingServer | None:
    """The Wyoming server on the app's own services (WYOMING_URI), listening at once: while the
    models load it answers `error` (not_ready), as HTTP answers 503."""
    if not settings.wyoming.uri:
        return None
    metrics: HttpMetrics = app.state.metrics
    server = WyomingServer(settings, app.state.gate, metrics.observe_wyoming, metrics.wyoming_connections)
    try:
        await server.start()
    except OSError as e:  # the port is taken, the socket's directory is missing, ...
        logger.error("cannot listen on WYOMING_URI=%s: %s", settings.wyoming.uri, e)
        raise
    app.state.wyoming = server
    return server


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    """Build the app. Pass `services` already built (and owned by the caller) to skip loading;
    otherwise the lifespan loads them in the background and owns them."""
    settings = settings or Settings()
    api_key = settings.server.api_key
    # A bad key file ends start-up here (KeyFileError), before the port opens.
    keys = load_keys(api_key.get_secret_value() if api_key else None, settings.server.api_keys_file)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for directory in (
            settings.storage.outputs_dir,
            settings.storage.data_dir,
            settings.storage.models_dir,
        ):
            directory.mkdir(parents=True, exist_ok=True)
        gate: ServiceGate = app.state.gate
        owned = gate.services is None  # services passed in are shut down by their owner
        # Server-side tools (MCP_SERVERS): connected beside the models' loading, handed to the chat
        # service as soon as both are there.
        tools = app.state.tools = McpTools(settings.tools) if settings.tools.mcp_servers else None
        if tools is not None:
            asyncio.create_task(tools.start())  # noqa: RUF006 - close() ends what it starts
            if gate.services is not None:
                gate.services.chat.tools = tools
        if owned:
            _load_in_background(app, settings)
        sweeper = asyncio.create_task(_sweep_outputs(app, settings.storage.outputs_sweep_s))
        watcher = asyncio.create_task(_watch_storage(app))
        wyoming = await _start_wyoming(app, settings)
        try:
            yield
        finally:
            await app.state.calls.close_all()  # WebRTC calls: their sessions end before the models go
            if wyoming is not None:
                await wyoming.stop()
            if tools is not None:
                await tools.close()
            # Runs after the server has stopped accepting and in-flight requests have finished
            # (or SHUTDOWN_GRACE_S ran out): the conversation store is flushed and closed here.
            sweeper.cancel()
            watcher.cancel()
            if owned and gate.services is not None:
                gate.services.shutdown()
                logger.info("shut down: models released, conversation store closed")

    app = FastAPI(
        title="Voice dialogue server",
        version=__version__,
        description="Speech in, spoken answer out: STT -> LLM -> TTS, each stage also callable alone.",
        lifespan=lifespan,
    )
    redact_credentials()  # websockets prints handshake headers (a key among them) at DEBUG
    app.state.settings = settings
    app.state.gate = ServiceGate(services)
    app.state.wyoming = None
    app.state.started_at = int(time.time())
    app.state.metrics = HttpMetrics()
    app.state.ququ_stats = QuquStats()  # QuQu's /api/status counts
    app.state.keys = KeyLedger(keys)  # each API key's usage against its quotas
    app.state.calls = Calls()  # WebRTC calls open now
    app.state.metrics.include(
        lambda: app.state.gate.services.metrics.registry if app.state.gate.ready else None
    )
    install_error_handlers(app)
    app.state.site = load_site()  # the browser page's files, read once
    app.include_router(router)

    # Added innermost first: a request meets RequestContext, its admission budget, CORS, auth, the
    # early refusal, the body limit, the JSON guard, then the disconnect watcher. CORS sits outside
    # auth so that a 401 still carries its headers.
    app.add_middleware(CancelOnDisconnectMiddleware)
    app.add_middleware(JSONGuardMiddleware)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.server.max_upload_bytes)
    app.add_middleware(EarlyRefusalMiddleware, refuse_early=lambda group: _refuse_early(app, group))
    if keys:
        app.add_middleware(ApiKeyMiddleware, ring=KeyRing(keys), ledger=app.state.keys)
        app.state.metrics.watch_keys(app.state.keys)
        logger.info("API keys: %s", ", ".join(key.name for key in keys))  # names only
    if settings.server.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.server.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["X-Segments", "X-Sample-Rate", "X-Voice", "Retry-After", "X-Request-ID"],
        )
    app.add_middleware(AdmissionBudgetMiddleware, budgets=settings.limits.admission_budgets)
    app.add_middleware(EarlyReturnMiddleware)
    app.add_middleware(RequestContextMiddleware, metrics=app.state.metrics)
    return app


def _refuse_early(app: FastAPI, group: str) -> AppError | None:
    services: Services | None = app.state.gate.services
    return services.refuse_early(group) if services is not None else None


def __getattr__(name: str) -> FastAPI:
    # `uvicorn backend.app.main:app` works, yet importing this module builds nothing.
    if name == "app":
        return create_app()
    raise AttributeError(name)
