"""The settings' sections: each a group of related settings that one part of the server takes whole.

Field names are short (`STTSettings.model_name`); the environment variable each is read from is in
`core/config.py`'s `ENV` table (`STT_MODEL_NAME`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import NoDecode

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful voice assistant. Your replies are spoken aloud, so answer in one to three "
    "short sentences of plain text, without lists, markdown or emoji."
)


def _split_list(value: object) -> object:
    """A comma-separated string as a list (blank items dropped); anything else as it is."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Section(BaseModel):
    """A group of settings; unknown fields are an error (a typo in code, not in the environment)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ServerSettings(Section):
    """Where and how the server listens, who may call it, how it logs."""

    host: str = "127.0.0.1"
    """Listen address."""
    port: int = Field(8000, ge=1, le=65535)
    """Listen port."""
    api_key: SecretStr | None = None
    """When set, every route except /health* needs `Authorization: Bearer <key>`."""
    api_keys_file: Path | None = None
    """A TOML file of named keys with scopes and quotas (README: API keys), checked at start-up."""
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Comma-separated allowed origins for CORS; `*` allows any."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Log level of the server."""
    log_format: Literal["json", "text"] = "json"
    """`json`: one JSON object a line (request id, route, status, per-stage ms on access lines);
    `text`: plain lines for reading in a terminal."""
    shutdown_grace_s: int = Field(30, ge=0, le=3600)
    """On SIGTERM/SIGINT: new connections are refused and requests in flight get this long to
    finish before they are cancelled; then the conversation store is flushed and closed."""
    max_upload_mb: float = Field(25, gt=0)
    """Largest accepted request body (413 beyond), counted as it arrives: a larger body is refused
    without being read, whether or not it declares its length."""

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        return _split_list(value)

    @field_validator("api_key", "api_keys_file", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


class STTSettings(Section):
    """Speech to text."""

    engine: Literal["auto", "faster-whisper", "moonshine"] = "auto"
    """The STT engine (`backends/registry.py`); `auto` infers it from STT_MODEL_NAME and, for
    `embedded` and `auto` on a CPU, puts Moonshine in front of Whisper for short English clips."""
    model_name: str = "embedded"
    """`embedded` (bundled Moonshine base for English clips up to STT_MOONSHINE_MAX_SECONDS, bundled
    Whisper tiny.en for the rest), `whisper-tiny.en` (tiny.en alone), `moonshine` (Moonshine alone,
    English), `base-multilingual` (bundled Whisper base, 99 languages), `auto` (Moonshine and tiny.en
    as `embedded` for audio said to be English, base for any other or unknown language), a
    faster-whisper size (`large-v3`, `turbo`, ...) or a local CTranslate2 model directory."""
    moonshine_max_seconds: float = Field(6.0, ge=0, le=60)
    """`embedded` and `auto`: the longest English clip Moonshine transcribes; longer ones go to
    Whisper, which is cheaper past it. 0 = Whisper only."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Device for faster-whisper; `auto` picks CUDA when available."""
    compute_type: str = "auto"
    """CTranslate2 compute type; `auto` = float16 on CUDA, int8 on CPU."""
    beam_size: int = Field(5, ge=1, le=10)
    """Beam size for decoding; 1 is greedy and fastest."""
    timeout_s: float = Field(300.0, gt=0)
    """The longest one transcription may take, queue wait included (504 beyond; decoding stops)."""
    max_audio_seconds: float = Field(600, gt=0)
    """Longest accepted audio, from its decoded duration, before any inference (422 beyond)."""


class LLMSettings(Section):
    """The language model that writes the replies."""

    engine: Literal["auto", "llama.cpp", "transformers", "openai"] = "auto"
    """The LLM engine (`backends/registry.py`); `auto` follows LLM_BACKEND: `local` takes llama.cpp
    for a GGUF model (the embedded one included) unless the LLM is to run on CUDA, and transformers
    otherwise (a model directory or hub id, or LLM_DEVICE=cuda); `openai` takes the OpenAI client."""
    backend: Literal["local", "openai"] = "local"
    """`local` = a model in this process (llama.cpp or transformers); `openai` = any OpenAI-compatible
    server."""
    model: str = ""
    """Model. Local: empty or `embedded` = the embedded Qwen2.5-Coder-1.5B-Instruct (llama.cpp),
    `small` = the embedded SmolLM2-135M-Instruct (fast, often wrong), else a `.gguf` file (llama.cpp)
    or a transformers model dir or hub id. OpenAI: the model name the server knows (required)."""
    base_url: str = ""
    """Base URL of the OpenAI-compatible server, e.g. http://localhost:11434/v1 (empty = OpenAI)."""
    api_key: SecretStr = SecretStr("")
    """API key for the OpenAI-compatible server (many local servers accept any value)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where a local LLM runs; auto = CUDA when available (then on the transformers engine), else
    the CPU (llama.cpp for GGUF models)."""
    threads: int = Field(0, ge=0, le=256)
    """llama.cpp: CPU threads for reading prompts and generating; 0 = one per core."""
    prompt_cache_mb: int = Field(256, ge=0, le=65_536)
    """llama.cpp: host memory kept for the states of earlier prompts, so that a conversation's next
    turn (or another conversation with the same system prompt) reads only its new tokens; the
    oldest are evicted beyond it. 0 keeps only the last prompt."""
    dtype: Literal["auto", "mixed", "float32", "bfloat16", "float16"] = "auto"
    """Weights of the transformers LLM; auto = float16 on CUDA, mixed on CPU. mixed reads the
    prompt with float32 weights and generates with a bfloat16 copy: on a CPU, generation is bound
    by memory bandwidth (bfloat16 is about 2x faster per token) while bfloat16 reads a prompt 3-4x
    slower than float32 without native support (AVX512-BF16/AMX). It holds both copies (1.5x the
    memory of float32)."""
    timeout_s: float = Field(120.0, gt=0)
    """The longest one LLM call may take, queue wait included, on either backend (504 beyond; the
    generation is stopped). Also the HTTP timeout towards the OpenAI-compatible server."""
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    """System prompt; replies are spoken, so it asks for short plain answers."""
    max_tokens: int = Field(256, ge=1, le=8192)
    """Upper bound on generated tokens per reply."""
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    """Sampling temperature; 0 = greedy (deterministic)."""
    max_history_messages: int = Field(40, ge=0, le=1000)
    """At most this many past messages (user + assistant) are considered for the context."""
    context_tokens: int = Field(2048, ge=64, le=1_000_000)
    """Token budget of a request: system prompt + recent turns + new message + LLM_MAX_TOKENS for the
    reply. Older turns are dropped to fit."""


class TTSSettings(Section):
    """Text to speech: the engine, and how text is cut and joined."""

    engine: Literal["auto", "embedded", "piper", "baker-zh", "hibari", "vibevoice"] = "auto"
    """The TTS engine (`backends/registry.py`); `auto` infers it from TTS_MODEL_NAME (`embedded` the
    two bundled voices, `joe` and `.onnx` voice files Piper, `hibari` and `zh-baker` their voices,
    anything else a VibeVoice checkpoint)."""
    model_name: str = "embedded"
    """`embedded` (the bundled voices: hibari's af_heart by default, Piper's joe as `piper:joe`),
    `hibari` or `joe` (one of them alone), `zh-baker` (the opt-in Mandarin voice, prepared by
    `make zh-voice`; non-commercial licence), a local Piper `.onnx` voice file, or a VibeVoice
    checkpoint: `vibevoice/VibeVoice-1.5B-hf` (downloaded into MODELS_DIR), the original release
    `microsoft/VibeVoice-1.5B` (converted once into MODELS_DIR), or a local directory of either."""
    chinese_model_name: str = ""
    """A second voice for Chinese text when TTS_MODEL_NAME's cannot speak Chinese: `zh-baker` (the
    opt-in Mandarin voice) or a Piper Mandarin `.onnx` voice; empty: none (Chinese text for a voice
    without Chinese is refused with a 422)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Device for TTS inference (`auto`: CUDA for VibeVoice when available; Piper runs on the CPU)."""
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    """VibeVoice weights' dtype; `auto` = bfloat16 on CUDA, float32 on CPU."""
    diffusion_steps: int = Field(10, ge=1, le=100)
    """VibeVoice diffusion steps per audio token; fewer is faster, more is cleaner."""
    default_cfg_scale: float = Field(1.0, ge=0.5, le=2.0)
    """Guidance scale used when a request gives none (voice-cloning backends)."""
    timeout_s: float = Field(300.0, gt=0)
    """The longest one synthesis may take, queue wait included (504 beyond; synthesis stops)."""
    max_chars: int = Field(5000, ge=1)
    """Longest accepted text for synthesis, chat or optimisation (413 beyond)."""
    max_speech_seconds: float = Field(600, gt=0)
    """Longest speech one synthesis request may make, estimated from the text before any synthesis
    (413 beyond): bounds the work by what the text costs, not by its characters (an English voice
    spells out each CJK character or digit)."""
    segment_threshold_chars: int = Field(150, ge=20, le=10_000)
    """Text longer than this is synthesised segment by segment."""
    segment_silence_ms: int = Field(200, ge=0, le=5_000)
    """Silence inserted between synthesised segments (and between a script's turns)."""
    max_script_turns: int = Field(500, ge=1, le=100_000)
    """Most turns one dialogue script may have (413 beyond)."""
    dialogue_window_chars: int = Field(600, ge=50, le=20_000)
    """An engine that voices several speakers at once (VibeVoice) speaks a script in windows of
    whole turns up to this many characters, streamed window by window."""
    align_words: bool = True
    """Word timings for an engine without durations (VibeVoice): the STT's Whisper force-aligns
    each synthesised piece's text (one encoder pass a piece on the STT model). false: such an
    engine's words are not timed (empty `words`, cuts by whole pieces)."""


class VoicesSettings(Section):
    """The reference-voice library and its cache."""

    dir: Path = Path("./voices")
    """Reference voices, `{lang}-{name}_{gender}.wav`."""
    default: str = ""
    """File name in VOICES_DIR; empty = the first voice found."""
    cache_size: int = Field(50, ge=0, le=10_000)
    """Entries in the reference-voice cache."""
    preload: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Comma-separated voice names prepared at start-up (the default voice always is)."""
    max_count: int = Field(100, ge=1, le=100_000)
    """At most this many voices in the library; an upload beyond is refused (409)."""
    max_mb: float = Field(256, gt=0)
    """At most this much audio in the voice library; an upload that would pass it is refused (413).
    Uploads are stored as 16-bit WAV at the TTS engine's rate (60 s at 24 kHz is 2.9 MB)."""

    @field_validator("preload", mode="before")
    @classmethod
    def _split_names(cls, value: object) -> object:
        return _split_list(value)

    @property
    def max_bytes(self) -> int:
        return int(self.max_mb * 1024 * 1024)


class StorageSettings(Section):
    """Where models, reply audio and the conversation database live, and how long audio is kept."""

    models_dir: Path = Path("./models")
    """Converted and assembled model copies, and downloads."""
    outputs_dir: Path = Path("./outputs")
    """Synthesised audio kept for download at /outputs/{name}."""
    data_dir: Path = Path("./data")
    """Persistent data: the conversation database (conversations.db) and uploaded voices."""
    outputs_ttl_hours: float = Field(168, gt=0)
    """Synthesised audio older than this is removed (unless a younger stored turn refers to it)."""
    outputs_max_mb: float = Field(1024, gt=0)
    """Beyond this total size, the oldest synthesised audio is removed first."""
    outputs_sweep_s: float = Field(300, gt=0)
    """How often the retention sweep runs."""
    min_free_disk_mb: float = Field(64, ge=0)
    """Below this much free disk under DATA_DIR or OUTPUTS_DIR, requests that store something
    (chat, spoken turns) are refused up front with 507, before any work, and /health says
    `degraded`; 0 turns the check off (a full disk is still a 507, never a 500)."""
    database_url: SecretStr | None = None
    """Unset: conversations in SQLite under DATA_DIR and reply audio in OUTPUTS_DIR (one process).
    `postgresql://user:password@host:5432/dbname`: both in that PostgreSQL database, shared by
    every replica of a scaled-out deployment."""
    model_verify: Literal["sha256", "size", "off"] = "sha256"
    """Start-up pre-flight of the model files against MODELS_DIR/manifest.json (written when the
    models were installed): `sha256` hashes every file, `size` checks sizes only, `off` skips it."""

    @property
    def min_free_disk_bytes(self) -> int:
        return int(self.min_free_disk_mb * 1024 * 1024)

    @field_validator("database_url", mode="before")
    @classmethod
    def _postgres_url(cls, value: object) -> object:
        """A PostgreSQL URL libpq can read; the error never repeats the URL (it holds a password)."""
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return None
        if not isinstance(raw, str):
            raise ValueError("DATABASE_URL must be a string")
        scheme = raw.split(":", 1)[0].lower() if ":" in raw else ""
        if scheme not in ("postgresql", "postgres"):
            raise ValueError(
                "DATABASE_URL must be postgresql://user:password@host:5432/dbname "
                f"(the scheme {scheme or 'is missing'!s} is not PostgreSQL's)"
            )
        try:
            import psycopg

            psycopg.conninfo.conninfo_to_dict(raw)
            urlparse(raw).port  # noqa: B018 - a port that is not a number raises
        except Exception:  # psycopg's message may quote the URL: say only that it does not parse
            raise ValueError("DATABASE_URL is not a URL PostgreSQL's client can read") from None
        return raw.strip()


DEFAULT_BUDGETS = {"turn": 4.0, "stt": 3.0, "chat": 4.0, "tts": 3.0}
"""ADMISSION_BUDGETS' defaults, for the embedded models on two cores: a spoken turn (1.5-2 s idle)
is admitted only while it can be answered within two to three idle turns, which it goes ahead of
single-stage work to keep; a single stage's request (a short answer, a transcription, a sentence)
gets about as much room."""


class LimitsSettings(Section):
    """How much work waits: the per-model and per-conversation queues."""

    queue_size: int = Field(4, ge=0, le=1000)
    """Requests that may wait per model while one runs; beyond, 503 with Retry-After. Spoken turns
    in progress are bounded by the same number (QUEUE_SIZE + 1 at once)."""
    conversation_queue_size: int = Field(4, ge=0, le=1000)
    """Requests that may wait on one conversation while one of its requests runs (they are served
    in order); beyond, 503 with Retry-After."""
    cpu_slice_ms: int = Field(100, ge=0, le=10_000)
    """The engines that run a call on every core on the CPU (Moonshine, Whisper, Piper) take turns
    on the cores, one piece, window or sentence at a time; while the local LLM generates, each unit
    first leaves it the cores for this many milliseconds (more for work admitted after the
    generation's, and hibari's single-stage sentences beside a spoken turn's reply take turns too).
    0: they run at once."""
    admission_budgets: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_BUDGETS))
    """Per route group (`turn`: a spoken turn, `stt`, `chat`, `tts`), the seconds a request may
    expect to take on a busy stage, its wait and its own work: `turn=4,stt=3,chat=4,tts=3`. A
    request that would take longer is refused at once (503, Retry-After: when it would fit); on an
    idle stage a request is always taken. A group left out, or 0, is bounded by QUEUE_SIZE only."""

    @field_validator("admission_budgets", mode="before")
    @classmethod
    def _budgets(cls, raw: object) -> object:
        if not isinstance(raw, str):
            return raw
        budgets: dict[str, float] = {}
        for pair in filter(None, (p.strip() for p in raw.split(","))):
            group, _, seconds = pair.partition("=")
            group = group.strip()
            if group not in DEFAULT_BUDGETS:
                raise ValueError(f"unknown route group {group!r} (known: {', '.join(DEFAULT_BUDGETS)})")
            try:
                budgets[group] = float(seconds)
            except ValueError:
                raise ValueError(f"{group}={seconds!r}: the budget is a number of seconds") from None
            if budgets[group] < 0:
                raise ValueError(f"{group}: the budget cannot be negative")
        return budgets


class VADSettings(Section):
    """Realtime mode's voice activity detection (silero-vad)."""

    threshold: float = Field(0.5, gt=0.0, lt=1.0)
    """Realtime mode: silero-vad speech probability above which a 32 ms window counts as speech."""
    min_speech_ms: int = Field(200, ge=32, le=5_000)
    """Realtime mode: speech this long starts a turn (and interrupts a reply being spoken)."""
    min_silence_ms: int = Field(500, ge=64, le=10_000)
    """Realtime mode: silence this long ends the user's turn (TURN_DETECTION=silence, or when the
    end-of-turn model cannot be used)."""
    turn_detection: Literal["semantic", "silence"] = "semantic"
    """Realtime mode: how a turn ends. `semantic`: an end-of-turn model (Smart Turn) judges each
    pause and ends the turn as soon as the speaker sounds finished; `silence`: VAD_MIN_SILENCE_MS."""
    turn_pause_ms: int = Field(200, ge=32, le=5_000)
    """Realtime mode, semantic turns: silence after which the end-of-turn model first judges."""
    turn_max_silence_ms: int = Field(3000, ge=64, le=30_000)
    """Realtime mode, semantic turns: silence that ends the turn even when the speaker sounded
    unfinished (a thinking pause is waited out up to this)."""
    turn_threshold: float = Field(0.5, gt=0.0, lt=1.0)
    """Realtime mode, semantic turns: the end-of-turn model's probability above which the speaker
    has finished (lower ends turns sooner, higher waits more)."""
    turn_words_threshold: float = Field(0.005, ge=0.0, lt=1.0)
    """Realtime mode, semantic turns: English words whose end-of-message probability (read by the
    embedded SmolLM2) is below this leave the sentence hanging, and the turn waits for more speech
    or the silence ceiling; 0 leaves the words to the word list alone."""
    speech_pad_ms: int = Field(300, ge=0, le=2_000)
    """Realtime mode: audio kept before speech starts and after it ends."""
    max_utterance_s: float = Field(30, gt=0, le=600)
    """Realtime mode: a turn longer than this is ended and answered."""


class RealtimeSettings(Section):
    """Realtime mode's sessions (the WebSocket)."""

    stt_beam_size: int = Field(1, ge=1, le=10)
    """Realtime mode: STT beam size for turns (1 = greedy, fastest; STT_BEAM_SIZE applies elsewhere)."""
    preemptive_replies: bool = True
    """Realtime mode: begin the reply during the trailing silence, on the transcript so far, and
    throw it away (cancelled, nothing stored) if the user goes on speaking."""
    idle_timeout_s: float = Field(60, gt=0)
    """Realtime mode: a session that sends nothing for this long, with no reply under way, is closed."""
    max_session_s: float = Field(1800, gt=0)
    """Realtime mode: the longest a session may last."""
    max_frame_bytes: int = Field(65_536, ge=1024, le=16 * 1024 * 1024)
    """Realtime mode: the largest message a client may send (64 KiB is 2 s of 16 kHz PCM16)."""
    max_event_bytes: int = Field(1_048_576, ge=1024, le=16 * 1024 * 1024)
    """/v1/realtime: the largest client event (1 MiB of JSON carries 16 s of base64 24 kHz PCM16);
    a larger one is answered with an error event and ignored."""
    partial_transcript_s: float = Field(1.0, ge=0, le=10)
    """Realtime mode: while the user speaks, the utterance so far is transcribed again after each
    this many seconds of new speech (`transcript_delta` events); only while speech is heard and
    the STT model is idle. 0 turns live partial transcripts off."""
    max_sessions: int = Field(8, ge=1, le=10_000)
    """Realtime mode: sessions open at once; more are refused (close code 1013, try again later)."""
    phone_stream_url: str | None = Field(None, pattern=r"^wss?://[^\s<>\"']+$")
    """Phone calls: the public `wss://` URL of the media stream (/phone/twilio) that the TwiML of
    /phone/twilio/twiml points a call at (unset: this server's URL as the request reached it)."""
    webrtc_ice_servers: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """WebRTC calls: STUN/TURN servers for ICE, comma-separated (`stun:host:3478`,
    `turn:user:password@host:3478`); empty: the host's own addresses only, which is enough on a LAN."""

    @field_validator("webrtc_ice_servers", mode="before")
    @classmethod
    def _servers(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value


class McpServer(BaseModel):
    """One MCP server: a command started on stdio, or a streamable-HTTP URL (with headers)."""

    model_config = ConfigDict(extra="forbid")

    command: str | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is not None and urlparse(value).scheme not in ("http", "https"):
            raise ValueError("an MCP server's url must be http:// or https://")
        return value

    def model_post_init(self, context: object) -> None:
        if (self.command is None) == (self.url is None):
            raise ValueError("an MCP server has either a command (stdio) or a url (streamable HTTP)")


class ToolsSettings(Section):
    """Server-side tools: MCP servers whose tools the model may call in a spoken or typed turn."""

    mcp_servers: Annotated[dict[str, McpServer], NoDecode] = Field(default_factory=dict)
    """JSON: `{"name": {"command": "...", "args": [...], "env": {...}}, "other": {"url": "...",
    "headers": {...}}}` (the `mcpServers` object of other MCP clients' configuration, which is
    accepted whole too). Empty: no server-side tools."""
    max_steps: int = Field(3, ge=1, le=16)
    """Rounds of tool calls one reply may make before it must answer."""
    timeout_s: float = Field(10.0, gt=0, le=300)
    """The longest one tool call may take; a slower server is told to the user as not reached."""
    result_chars: int = Field(4000, ge=100, le=1_000_000)
    """A tool's result is cut to this many characters before the model reads it (and it is stored)."""
    refresh_s: float = Field(300.0, ge=5, le=86_400)
    """How often each MCP server's tool list is read again (and a server that was down retried)."""
    acknowledgement: str = Field("One moment, please.", max_length=200)
    """Said as soon as a reply in a Latin script begins a tool call before it has said anything
    (empty: nothing)."""

    @field_validator("mcp_servers", mode="before")
    @classmethod
    def _json(cls, value: object) -> object:
        if isinstance(value, str):
            import json

            if not value.strip():
                return {}
            try:
                value = json.loads(value)
            except ValueError as e:
                raise ValueError(f"MCP_SERVERS is not JSON: {e}") from None
        if isinstance(value, dict) and isinstance(value.get("mcpServers"), dict):
            value = value["mcpServers"]
        if isinstance(value, dict):
            for name in value:
                if not isinstance(name, str) or not name or len(name) > 64:
                    raise ValueError(f"an MCP server's name must be 1-64 characters, got {name!r}")
        return value


class OpenAISettings(Section):
    """The OpenAI-compatible /v1 routes."""

    voices: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    """/v1/audio/speech: comma-separated `openai_name=library_voice` pairs (`alloy=en-Eve_woman.wav,
    onyx=Joe`) that override the built-in table mapping OpenAI's stock voice names to library voices."""
    model_aliases: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    """/v1 routes: extra model names to accept, comma-separated `name=stage` pairs (stage = stt, tts
    or chat), on top of each stage's own model id and OpenAI's stock names (whisper-1, tts-1, ...)."""

    @field_validator("voices", "model_aliases", mode="before")
    @classmethod
    def _split_pairs(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        pairs: dict[str, str] = {}
        for item in (part.strip() for part in value.split(",")):
            if not item:
                continue
            name, sep, target = (piece.strip() for piece in item.partition("="))
            if not sep or not name or not target:
                raise ValueError(f"expected name=value pairs separated by commas, got {item!r}")
            pairs[name.lower()] = target
        return pairs

    @field_validator("model_aliases")
    @classmethod
    def _known_stages(cls, value: dict[str, str]) -> dict[str, str]:
        for name, stage in value.items():
            if stage not in ("stt", "tts", "chat"):
                raise ValueError(f"the alias {name!r} names the stage {stage!r}; use stt, tts or chat")
        return value


class WyomingSettings(Section):
    """The Wyoming protocol server (Home Assistant's speech services), in this process beside HTTP."""

    uri: str = ""
    """Where the Wyoming server listens: `tcp://HOST:PORT` (Home Assistant's default port is 10300)
    or `unix:///path/to/socket`. Empty: no Wyoming server."""
    zeroconf: bool = False
    """Announce the Wyoming server on the local network (mDNS `_wyoming._tcp`) for Home Assistant
    to discover; TCP only."""
    zeroconf_name: str = Field("voice-dialogue-server", min_length=1, max_length=63)
    """The name the zeroconf announcement uses."""
    max_connections: int = Field(32, ge=1, le=10_000)
    """Connections open at once; one more gets an `error` event and is closed."""
    max_connections_per_client: int = Field(8, ge=1, le=10_000)
    """Connections open at once from one address: one client cannot hold every slot."""
    idle_timeout_s: float = Field(60, gt=0)
    """A connection that makes no request this long (a `ping` is no request) while none of its own
    is under way, or that reads nothing we send this long, is closed."""
    max_buffered_mb: float = Field(64, gt=0, le=4096)
    """Audio all connections hold for transcription, as held (float32 at the STT's rate, whatever
    the client declares); the stream that would pass it gets an `overloaded` error."""
    public: bool = False
    """Listen where WYOMING_URI says even when HTTP needs a key (else 127.0.0.1: no authentication)."""
    max_event_bytes: int = Field(4 * 1024 * 1024, ge=65_536, le=256 * 1024 * 1024)
    """The largest event a client may send (its data and payload together; 4 MiB is 2 minutes of
    16 kHz 16-bit audio in one chunk); a larger one is refused before it is read."""

    @field_validator("uri")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        value = value.strip()
        if not value:
            return value
        parsed = urlparse(value)
        if parsed.scheme == "tcp":
            try:
                port = parsed.port
            except ValueError:
                port = None
            if not parsed.hostname or port is None:
                raise ValueError(f"{value!r} needs a host and a port: tcp://0.0.0.0:10300")
        elif parsed.scheme != "unix" or not parsed.path:
            raise ValueError(f"{value!r} is not tcp://HOST:PORT or unix:///path")
        return value
