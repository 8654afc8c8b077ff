"""Liveness and readiness."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from backend.app.api.schemas import HealthResponse, ModuleHealth

router = APIRouter(tags=["health"])


def _health(request: Request) -> HealthResponse:
    services = getattr(request.app.state, "services", None)
    failed = getattr(request.app.state, "load_error", None)
    modules: dict[str, ModuleHealth] = {}
    for name in ("stt", "chat", "tts"):
        service = getattr(services, name, None) if services else None
        info = service.backend.info if service else None
        modules[name] = ModuleHealth(
            ready=info is not None,
            model=info.model if info else None,
            device=info.device if info else None,
        )
    vad = services.realtime.vad if services else None
    modules["vad"] = ModuleHealth(ready=vad is not None, model=vad.model if vad else None, device="cpu")
    status: Literal["ok", "loading", "degraded"]
    if all(m.ready for m in modules.values()):
        status = "ok"
    elif failed:
        status = "degraded"
    else:
        status = "loading"
    return HealthResponse(status=status, modules=modules)


@router.get("/health", response_model=HealthResponse)
def health(request: Request) -> HealthResponse:
    """Always 200 while the process serves; `status` tells whether every model is ready."""
    return _health(request)


@router.get("/health/ready", response_model=HealthResponse, responses={503: {"model": HealthResponse}})
def ready(request: Request) -> JSONResponse:
    """200 when every module is ready, else 503 (for load balancers and orchestrators)."""
    body = _health(request)
    return JSONResponse(body.model_dump(), status_code=200 if body.status == "ok" else 503)
