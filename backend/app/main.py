"""The FastAPI app: `create_app(settings)` builds it; the lifespan loads the models once.

`app` is the default ASGI app (settings from the environment); nothing heavy happens on import.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from backend.app import __version__
from backend.app.api.routes import chat, conversation, conversations, health, speakers, stt, tts
from backend.app.core.config import Settings
from backend.app.core.errors import ModelLoadError, install_error_handlers
from backend.app.core.middleware import BearerAuthMiddleware, BodySizeLimitMiddleware
from backend.app.services.container import Services, build_services

logger = logging.getLogger("backend.app")


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    """Build the app. Pass `services` already built (and owned by the caller) to skip loading."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for directory in (settings.outputs_dir, settings.data_dir, settings.models_dir):
            directory.mkdir(parents=True, exist_ok=True)
        if app.state.services is not None:
            yield  # built by the caller, who owns them and shuts them down
            return
        try:
            app.state.services = await anyio.to_thread.run_sync(build_services, settings)
        except ModelLoadError as e:
            app.state.load_error = str(e)
            logger.error("cannot start: %s", e)
            raise
        try:
            yield
        finally:
            app.state.services.shutdown()

    app = FastAPI(
        title="Voice dialogue server",
        version=__version__,
        description="Speech in, spoken answer out: STT -> LLM -> TTS, each stage also callable alone.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.services = services
    app.state.load_error = None
    install_error_handlers(app)
    routers = (health, stt, chat, tts, conversation, conversations, speakers)
    for router in (module.router for module in routers):
        app.include_router(router)

    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_upload_bytes)
    if settings.api_key is not None:
        app.add_middleware(BearerAuthMiddleware, api_key=settings.api_key.get_secret_value())
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["X-Segments", "X-Sample-Rate", "X-Voice", "Retry-After"],
        )
    return app


def __getattr__(name: str) -> FastAPI:
    # `uvicorn backend.app.main:app` works, yet importing this module builds nothing.
    if name == "app":
        return create_app()
    raise AttributeError(name)
