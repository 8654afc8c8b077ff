"""The engines of the Ray Serve deployments, seen from the ingress: each class implements the
Protocol of its capability (`backends/protocols.py`) by calling its deployment's handle, so the
services run unchanged over models in other processes or on other nodes.

Calls block, as every engine's do: the services make them on their stage's worker threads, never
on the event loop. A call waits in short steps and checks between them whether its request has
gone (a client that disconnected, a stage past its timeout); then the remote call is cancelled and
the worker's slot is freed. A stream is checked between items. An engine's own error (an
unreachable LLM server, say) reaches the services as it was raised, not wrapped by Ray.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, cast

from ray.exceptions import RayTaskError
from ray.serve.handle import DeploymentHandle

from backend.app.audio.types import Audio
from backend.app.core.cancellation import raise_if_cancelled
from backend.app.core.tools import ToolRequest
from backend.app.core.values import (
    CallPending,
    ChatMessage,
    DialogueRequest,
    GenerationOptions,
    SynthesisRequest,
    ToolCall,
    TranscribeOptions,
    Transcription,
    TranscriptSegment,
)
from backend.serve.deployments import EngineInfo

POLL_S = 0.1
"""How often a waiting call checks whether its request has gone."""


class RemoteEngine:
    """Blocking calls of one deployment's methods, cancelled when their request goes away."""

    def __init__(self, handle: DeploymentHandle, described: EngineInfo) -> None:
        self.handle = handle
        self.info = described.info

    def call(self, method: str, *args: Any) -> Any:
        response = getattr(self.handle, method).remote(*args)
        try:
            while True:
                raise_if_cancelled()
                try:
                    return response.result(timeout_s=POLL_S)
                except TimeoutError:
                    continue
                except RayTaskError as e:
                    raise _unwrapped(e) from None
        except BaseException:
            response.cancel()  # a no-op once the call has finished
            raise

    def stream(self, method: str, *args: Any) -> Iterator[Any]:
        """The items of a generator method as they are produced; closing this ends the remote one."""
        generator = getattr(self.handle.options(stream=True), method).remote(*args)
        try:
            for item in generator:
                raise_if_cancelled()
                yield item
        except RayTaskError as e:
            raise _unwrapped(e) from None
        finally:
            generator.cancel()  # a no-op once it has finished


def _unwrapped(error: RayTaskError) -> BaseException:
    """The exception the engine raised in its replica (Ray wraps it with the remote traceback)."""
    cause = getattr(error, "cause", None)
    return cause if isinstance(cause, Exception) else error


class RemoteSpeechToText(RemoteEngine):
    def __init__(self, handle: DeploymentHandle, described: EngineInfo) -> None:
        super().__init__(handle, described)
        self.sample_rate = described.sample_rate
        self.multilingual = described.multilingual

    def transcribe(self, audio: Audio, options: TranscribeOptions) -> Transcription:
        return cast(Transcription, self.call("transcribe", audio, options))

    def transcribe_stream(
        self, audio: Audio, options: TranscribeOptions
    ) -> Iterator[TranscriptSegment | Transcription]:
        return cast(
            Iterator[TranscriptSegment | Transcription], self.stream("transcribe_stream", audio, options)
        )


class RemoteChatModel(RemoteEngine):
    def chat(self, messages: Sequence[ChatMessage], options: GenerationOptions) -> str:
        return cast(str, self.call("chat", list(messages), options))

    def chat_stream(self, messages: Sequence[ChatMessage], options: GenerationOptions) -> Iterator[str]:
        return cast(Iterator[str], self.stream("chat_stream", list(messages), options))

    def chat_tools_stream(
        self, messages: Sequence[ChatMessage], options: GenerationOptions, tools: ToolRequest
    ) -> Iterator[str | ToolCall | CallPending]:
        return cast(
            Iterator[str | ToolCall | CallPending],
            self.stream("chat_tools_stream", list(messages), options, tools),
        )

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return cast(int, self.call("count_tokens", list(messages)))

    def count_text_tokens(self, text: str) -> int:
        return cast(int, self.call("count_text_tokens", text))


class RemoteTextToSpeech(RemoteEngine):
    def __init__(self, handle: DeploymentHandle, described: EngineInfo) -> None:
        super().__init__(handle, described)
        self.sample_rate = described.sample_rate
        self.supports_cloning = described.supports_cloning
        self.supports_speed = described.supports_speed
        self.speakers = described.speakers
        self.max_dialogue_speakers = described.max_dialogue_speakers
        self.languages = described.languages

    def prepare_voice(self, audio: Audio) -> object:
        return self.call("prepare_voice", audio)

    def synthesize(self, request: SynthesisRequest) -> Audio:
        return cast(Audio, self.call("synthesize", request))

    def synthesize_dialogue(self, request: DialogueRequest) -> Audio:
        return cast(Audio, self.call("synthesize_dialogue", request))

    def estimate_seconds(self, text: str) -> float:
        return cast(float, self.call("estimate_seconds", text))
