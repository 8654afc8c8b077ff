"""GET /v1/models: the models of the three stages."""

from __future__ import annotations

from fastapi import APIRouter, Request

from backend.app.api.v1.compat import ServedModel
from backend.app.api.v1.deps import CatalogDep
from backend.app.api.v1.schemas import OPENAI_ERRORS, ModelList, ModelOut

router = APIRouter(tags=["openai"])


def _out(model: ServedModel, request: Request) -> ModelOut:
    return ModelOut(id=model.id, created=request.app.state.started_at, owned_by=model.owned_by)


@router.get("/models", response_model=ModelList, responses=OPENAI_ERRORS)
def list_models(request: Request, catalog: CatalogDep) -> ModelList:
    """The speech-to-text, chat and text-to-speech models, by their ids. OpenAI's stock names
    (whisper-1, tts-1, gpt-4o-mini, ...) are accepted as aliases of the model of their stage."""
    return ModelList(data=[_out(model, request) for model in catalog.models()])


@router.get("/models/{model:path}", response_model=ModelOut, responses=OPENAI_ERRORS)
def retrieve_model(model: str, request: Request, catalog: CatalogDep) -> ModelOut:
    """One model, by its id or an alias (404 model_not_found otherwise)."""
    return _out(catalog.lookup(model), request)
