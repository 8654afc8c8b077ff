"""Chat through any OpenAI-compatible server (Ollama, vLLM, LocalAI, OpenAI) with the `openai` client."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import openai

from backend.app.backends.chat_prompt import COMMON_MARKERS, Markers, engine_messages, engine_tools
from backend.app.core.cancellation import raise_if_cancelled
from backend.app.core.config import Settings
from backend.app.core.errors import ModelLoadError, UpstreamError
from backend.app.core.tools import ToolRequest, check_arguments, new_call
from backend.app.core.values import CallPending, ChatMessage, GenerationOptions, ModelInfo, ToolCall
from backend.app.text.segment import is_cjk


class OpenAIChatBackend:
    """Chat completions against `base_url`; the server does the work, we only wait for it."""

    def __init__(self, model: str, base_url: str, api_key: str, timeout_s: float) -> None:
        if not model:
            raise ModelLoadError("LLM_BACKEND=openai needs LLM_MODEL (the model name the server knows)")
        self._client = openai.OpenAI(
            base_url=base_url or None,
            # Local servers accept any key; the client refuses an empty one.
            api_key=api_key or "not-needed",
            timeout=timeout_s,
            max_retries=1,
        )
        self._model = model
        login = urlsplit(base_url)
        basic = f"{login.username or ''}:{login.password}" if login.password else ""
        # The key, the URL's password, and that login as HTTP Basic sends it (a server may quote it).
        encoded = base64.b64encode(basic.encode()).decode() if basic else ""
        self._secrets = tuple(v for v in (api_key, login.password or "", encoded) if v)
        self.markers = Markers(pattern=COMMON_MARKERS)
        """The remote model's vocabulary is unknown: the common templates' control tokens."""
        self.info = ModelInfo(
            model=model, device=f"remote ({_without_login(base_url) or 'api.openai.com'})", id=model
        )

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """An estimate, as the remote tokenizer is unknown: ~4 characters a token for Latin scripts,
        1.5 tokens per CJK character, and 4 tokens of framing per message. It errs on the high side."""
        return sum(4 + self.count_text_tokens(m.content) for m in messages) + 2

    def count_text_tokens(self, text: str) -> int:
        """The same estimate for plain text."""
        cjk = sum(1 for ch in text if is_cjk(ch))
        return math.ceil((len(text) - cjk) / 4 + cjk * 1.5)

    def _create(
        self,
        messages: Sequence[ChatMessage],
        options: GenerationOptions,
        stream: bool,
        tools: ToolRequest | None = None,
    ) -> Any:
        """One chat.completions call, its failures as UpstreamError (503)."""
        extra: dict[str, Any] = {}
        if tools is not None and tools.tools:
            extra["tools"] = engine_tools(tools.tools, self.markers)
            named = {"type": "function", "function": {"name": tools.choice}}
            extra["tool_choice"] = tools.choice if tools.choice in ("auto", "none", "required") else named
            extra["parallel_tool_calls"] = tools.parallel
        try:
            return self._client.chat.completions.create(
                model=self._model,
                messages=engine_messages(messages, self.markers),
                max_tokens=options.max_tokens,
                temperature=options.temperature,
                stream=stream,
                **extra,
            )
        except openai.APIStatusError as e:
            raise UpstreamError(
                self._scrub(f"the LLM server answered {e.status_code}: {e.message}")
            ) from None
        except openai.APIError as e:
            raise UpstreamError(self._scrub(f"the LLM server could not be reached: {e}")) from None

    def _scrub(self, text: str) -> str:
        """`text` without LLM_API_KEY or the URL's password (a server may quote the key it got)."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def chat(self, messages: Sequence[ChatMessage], options: GenerationOptions) -> str:
        response = self._create(messages, options, stream=False)
        if not response.choices:
            raise UpstreamError("the LLM server returned no choices")
        return (response.choices[0].message.content or "").strip()

    def chat_stream(self, messages: Sequence[ChatMessage], options: GenerationOptions) -> Iterator[str]:
        """Streamed chat completions; closing early closes the HTTP response, which OpenAI-style
        servers (vLLM, Ollama, llama.cpp) take as the signal to abort the generation."""
        stream = self._create(messages, options, stream=True)
        try:
            for chunk in stream:
                raise_if_cancelled()
                if chunk.choices and chunk.choices[0].delta.content:
                    yield chunk.choices[0].delta.content
        except openai.APIError as e:
            raise UpstreamError(self._scrub(f"the LLM stream broke off: {e}")) from None
        finally:
            stream.close()

    def chat_tools_stream(
        self, messages: Sequence[ChatMessage], options: GenerationOptions, tools: ToolRequest
    ) -> Iterator[str | ToolCall | CallPending]:
        """The tools passed on to the server, which runs the model's template and reads its calls;
        the calls' pieces are gathered by index and each call checked against its schema here as
        on the local engine (one that fails is given back as text)."""
        stream = self._create(messages, options, stream=True, tools=tools)
        pieces: dict[int, dict[str, str]] = {}
        try:
            for chunk in stream:
                raise_if_cancelled()
                if not chunk.choices:
                    continue
                delta = chunk.choices[0].delta
                if delta.content:
                    yield delta.content
                if delta.tool_calls and not pieces:
                    yield CallPending()
                for call in delta.tool_calls or ():
                    piece = pieces.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                    piece["id"] = call.id or piece["id"]
                    if call.function is not None:
                        piece["name"] += call.function.name or ""
                        piece["arguments"] += call.function.arguments or ""
        except openai.APIError as e:
            raise UpstreamError(self._scrub(f"the LLM stream broke off: {e}")) from None
        finally:
            stream.close()
        for index in sorted(pieces)[: None if tools.parallel else 1]:
            piece = pieces[index]
            spec = tools.spec(piece["name"])
            if spec is None or check_arguments(spec, piece["arguments"]) is not None:
                yield json.dumps({"name": piece["name"], "arguments": piece["arguments"]})
                continue
            call = new_call(piece["name"], piece["arguments"])
            yield ToolCall(piece["id"] or call.id, call.name, call.arguments)


def _without_login(url: str) -> str:
    """`url` as it may be shown: without a user name or password in it."""
    parts = urlsplit(url)
    if not parts.username and not parts.password:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def load(settings: Settings) -> OpenAIChatBackend:
    llm = settings.llm
    return OpenAIChatBackend(llm.model, llm.base_url, llm.api_key.get_secret_value(), llm.timeout_s)


def model_files(settings: Settings) -> None:
    """A remote server: no local files."""
    return None
