"""The Ray Serve application: the FastAPI app as the ingress, over the three model deployments.

    serve run backend/serve/config.yaml          # a local Ray, or RAY_ADDRESS=ray://head:10001
    serve deploy backend/serve/config.yaml       # onto a running cluster (its dashboard address)

`build_app` is the application builder that the config file names. Its arguments set each stage's
replicas and resources, and the server's settings for every replica (the same variables as
`python -m backend.app`; any variable already in a replica's environment applies too). The ingress
serves every route of the server, the page and the realtime WebSocket included; STT, chat and TTS
calls go to their deployments through deployment handles, and streamed replies stay streamed (the
LLM's deltas travel as a stream, speech goes sentence by sentence).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from typing import Any, cast

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field, model_validator
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from backend.app.container import Backends, StageConcurrency, assemble_services
from backend.app.main import create_app
from backend.serve.deployments import (
    ChatDeployment,
    EngineInfo,
    STTDeployment,
    TTSDeployment,
    replica_settings,
)
from backend.serve.remote import RemoteChatModel, RemoteSpeechToText, RemoteTextToSpeech

logger = logging.getLogger(__name__)


class StageOptions(BaseModel):
    """One model deployment's scale."""

    model_config = ConfigDict(extra="forbid")

    num_replicas: int = Field(1, ge=1, le=1024)
    """Copies of the model; the ingress runs as many of this stage's calls at once."""
    num_gpus: float = Field(0.0, ge=0.0)
    """GPUs each replica reserves; fractions share a GPU (0.5: two replicas on one)."""
    num_cpus: float = Field(1.0, ge=0.0)
    """CPUs each replica reserves."""


class ServeArgs(BaseModel):
    """The arguments of `build_app` (the `args` of the config file's application)."""

    model_config = ConfigDict(extra="forbid")

    stt: StageOptions = StageOptions()
    chat: StageOptions = StageOptions()
    tts: StageOptions = StageOptions()
    ingress_cpus: float = Field(1.0, ge=0.0)
    """CPUs the ingress reserves (audio decoding and encoding, the VAD of realtime sessions)."""
    ingress_replicas: int = Field(1, ge=1, le=256)
    """Copies of the ingress (the HTTP routes, sessions and storage); more than one needs a
    shared database (`DATABASE_URL` in `env`), or each would keep conversations of its own."""
    env: dict[str, str] = {}
    """Server settings for every replica, by variable name (STT_MODEL_NAME, MODELS_DIR, ...)."""

    @model_validator(mode="after")
    def _shared_storage(self) -> ServeArgs:
        shared = {name.upper() for name in self.env} & {"DATABASE_URL"} or "DATABASE_URL" in os.environ
        if self.ingress_replicas > 1 and not shared:
            raise ValueError(
                f"ingress_replicas is {self.ingress_replicas}: set DATABASE_URL (postgresql://...) in env, "
                "or each ingress replica keeps a conversation database and reply audio of its own"
            )
        return self


@serve.deployment(name="ingress", max_ongoing_requests=1000)
@serve.ingress()
class VoiceIngress:
    """Every HTTP and WebSocket route of the server, with the services over remote engines."""

    async def __init__(  # type: ignore[misc]  # Serve awaits an async constructor
        self,
        stt: DeploymentHandle,
        chat: DeploymentHandle,
        tts: DeploymentHandle,
        concurrency: StageConcurrency,
    ) -> None:
        self.settings = replica_settings()
        described: list[EngineInfo] = await asyncio.gather(
            stt.describe.remote(), chat.describe.remote(), tts.describe.remote()
        )
        replicas = (concurrency.stt, concurrency.chat, concurrency.tts)
        described = [_on_replicas(d, n) for d, n in zip(described, replicas, strict=True)]
        backends = Backends(
            RemoteSpeechToText(stt, described[0]),
            RemoteChatModel(chat, described[1]),
            RemoteTextToSpeech(tts, described[2]),
        )
        # Preparing the preloaded voices calls the TTS deployment: blocking, so off the loop.
        self.services = await asyncio.to_thread(assemble_services, self.settings, backends, None, concurrency)
        logger.info("ingress ready: stt x%d, chat x%d, tts x%d", *replicas)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_app(self.settings, self.services)

    def __del__(self) -> None:
        services = getattr(self, "services", None)
        if services is not None:
            services.shutdown()


def _on_replicas(described: EngineInfo, replicas: int) -> EngineInfo:
    """As /health shows it: the model's device, and on how many replicas it runs."""
    device = f"{described.info.device}, Ray Serve x{replicas}"
    return dataclasses.replace(described, info=dataclasses.replace(described.info, device=device))


def build_app(args: ServeArgs | dict[str, Any]) -> Application:
    """The application: three model deployments and the ingress composing them. `args` as the
    config file gives them (validated here: a wrong name or value is a clear error at deploy)."""
    args = ServeArgs.model_validate(args) if isinstance(args, dict) else args
    env = {name.upper(): value for name, value in args.env.items()}

    def deployed(options: StageOptions) -> dict[str, object]:
        return {
            "num_replicas": options.num_replicas,
            "ray_actor_options": {
                "num_cpus": options.num_cpus,
                "num_gpus": options.num_gpus,
                "runtime_env": {"env_vars": env},
            },
        }

    concurrency = StageConcurrency(
        args.stt.num_replicas, args.chat.num_replicas, args.tts.num_replicas, args.ingress_replicas
    )
    # The decorated classes are Serve deployments (mypy sees the classes).
    ingress, stt, chat, tts = cast(
        tuple[Any, ...], (VoiceIngress, STTDeployment, ChatDeployment, TTSDeployment)
    )
    application: Application = ingress.options(
        num_replicas=args.ingress_replicas,
        ray_actor_options={"num_cpus": args.ingress_cpus, "runtime_env": {"env_vars": env}},
    ).bind(
        stt.options(**deployed(args.stt)).bind(),
        chat.options(**deployed(args.chat)).bind(),
        tts.options(**deployed(args.tts)).bind(),
        concurrency,
    )
    return application
