"""Liveness and readiness, and each module's state: its model, device and load."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from backend.app.api.schemas import HealthResponse, ModuleHealth, ToolServerHealth
from backend.app.container import ServiceGate, StageLoad
from backend.app.core.values import ModelInfo

router = APIRouter(tags=["health"])


def _module(info: ModelInfo | None, load: StageLoad | None) -> ModuleHealth:
    return ModuleHealth(
        ready=info is not None and load is not None,
        model=info.model if info else None,
        device=info.device if info else None,
        in_progress=load.pending if load else None,
        capacity=load.capacity if load else None,
    )


async def _health(request: Request) -> HealthResponse:
    gate: ServiceGate = request.app.state.gate
    services, failed = gate.services, gate.load_error
    # While the models load, a module whose model is up reports it (not yet ready for requests).
    loaded = gate.loaded
    stages = services.stages() if services else {}
    modules: dict[str, ModuleHealth] = {}
    for name in ("stt", "chat", "tts"):
        load = stages.get(name)
        modules[name] = _module(load.info if load else loaded.get(name), load)
    vad = services.realtime.vad if services else None
    modules["vad"] = ModuleHealth(ready=vad is not None, model=vad.model if vad else None, device="cpu")
    # The store is asked now (a database server down is seen without a request failing first).
    storage_problem = await services.history.check_storage() if services else None
    if services is not None:
        store = services.history.store
        modules["storage"] = ModuleHealth(
            ready=storage_problem is None,
            model=store.engine,
            device=store.where,
            error=storage_problem,
        )
    status: Literal["ok", "loading", "degraded"]
    if services is not None and all(m.ready for m in modules.values()):
        status = "ok"
    elif failed or storage_problem:
        status = "degraded"
        failed = failed or storage_problem
    else:
        status = "loading"
    tools = getattr(request.app.state, "tools", None)
    servers = {name: ToolServerHealth(**state) for name, state in tools.status().items()} if tools else {}
    return HealthResponse(status=status, modules=modules, error=failed, tools=servers)


@router.get("/health", response_model=HealthResponse)
@router.head("/health", include_in_schema=False)
async def health(request: Request) -> HealthResponse:
    """Always 200 while the process serves; `status` tells whether every model is ready
    (`loading` while they load, `degraded` with `error` when loading failed, or when the
    conversation store cannot be used: a database is asked on each call, 2 s at most)."""
    return await _health(request)


@router.get("/health/ready", response_model=HealthResponse, responses={503: {"model": HealthResponse}})
@router.head("/health/ready", include_in_schema=False)
async def ready(request: Request) -> JSONResponse:
    """200 when every module is ready, else 503 (for load balancers and orchestrators)."""
    body = await _health(request)
    return JSONResponse(
        body.model_dump(),
        status_code=200 if body.status == "ok" else 503,
        headers=None if body.status == "ok" else {"Retry-After": "5"},
    )
