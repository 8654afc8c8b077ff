"""POST /optimize: clean up a transcript with the LLM."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from backend.app.api.deps import ChatServiceDep, require_json
from backend.app.api.schemas import ERROR_RESPONSES
from backend.app.services.optimize import OptimizeMode, TranscriptOptimizer

router = APIRouter(tags=["stt"])


class OptimizeRequest(BaseModel):
    text: str = Field(..., description="A transcript.")
    mode: OptimizeMode = Field(
        "optimize",
        description="optimize: remove fillers and false starts; format: formal written text; "
        "punctuate: punctuation only, words unchanged (verified); custom: apply custom_prompt.",
    )
    custom_prompt: str | None = Field(None, description="The instruction for mode=custom.")


class OptimizeResponse(BaseModel):
    text: str
    optimized_text: str
    mode: OptimizeMode
    warnings: list[str]
    timings: dict[str, float]


@router.post(
    "/optimize",
    response_model=OptimizeResponse,
    responses=ERROR_RESPONSES,
    dependencies=[Depends(require_json)],
)
async def optimize(body: OptimizeRequest, chat: ChatServiceDep) -> OptimizeResponse:
    """Rewrite a transcript; returns the original and the optimised text."""
    started = time.perf_counter()
    result = await TranscriptOptimizer(chat).optimize(body.text, body.mode, body.custom_prompt)
    return OptimizeResponse(
        text=body.text,
        optimized_text=result.text,
        mode=body.mode,
        warnings=result.warnings,
        timings={"llm_ms": round((time.perf_counter() - started) * 1000, 1)},
    )
