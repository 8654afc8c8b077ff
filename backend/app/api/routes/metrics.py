"""GET /metrics: the server's live figures in the Prometheus text format (see core/metrics.py)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client.exposition import choose_encoder

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "content": {"text/plain": {}, "application/openmetrics-text": {}},
            "description": "Prometheus text exposition (OpenMetrics when the Accept header asks for it).",
        }
    },
)
def metrics(request: Request) -> Response:
    """Requests and latency per route and status; per-stage latency (stt, llm_first_token, llm,
    tts_first_audio, tts, first_audio); each model's busy and waiting calls; speaker-cache hits and
    misses; model load times; audio seconds transcribed and synthesised; process memory and CPU.
    Model figures appear once the models are loaded. Needs the API key when API_KEY is set."""
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encoder(request.app.state.metrics.registry), media_type=content_type)
