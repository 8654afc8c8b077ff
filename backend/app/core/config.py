"""All configuration, from the environment or a `.env` file (pydantic-settings).

Every setting is an upper-case environment variable (`STT_MODEL_NAME`, `PORT`, ...), flat, as the
README's table lists them. In code they are grouped into sections (`settings.stt.model_name`,
`settings.tts.segment_silence_ms`, ...) that services take whole; `ENV` maps each variable to its
section and field, and is the one place that does. Errors name the variable (lower-cased), not the
field. Settings are built once by the entry point and injected; nothing reads them from a module
global.
"""

from __future__ import annotations

from typing import Any

from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from backend.app.core.sections import (
    DEFAULT_SYSTEM_PROMPT,
    LimitsSettings,
    LLMSettings,
    OpenAISettings,
    RealtimeSettings,
    ServerSettings,
    StorageSettings,
    STTSettings,
    ToolsSettings,
    TTSSettings,
    VADSettings,
    VoicesSettings,
    WyomingSettings,
)

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "ENV",
    "LLMSettings",
    "LimitsSettings",
    "OpenAISettings",
    "RealtimeSettings",
    "STTSettings",
    "ServerSettings",
    "Settings",
    "StorageSettings",
    "TTSSettings",
    "ToolsSettings",
    "VADSettings",
    "VoicesSettings",
    "WyomingSettings",
]


ENV: dict[str, tuple[str, str]] = {
    "HOST": ("server", "host"),
    "PORT": ("server", "port"),
    "API_KEY": ("server", "api_key"),
    "API_KEYS_FILE": ("server", "api_keys_file"),
    "CORS_ORIGINS": ("server", "cors_origins"),
    "LOG_LEVEL": ("server", "log_level"),
    "LOG_FORMAT": ("server", "log_format"),
    "SHUTDOWN_GRACE_S": ("server", "shutdown_grace_s"),
    "MAX_UPLOAD_MB": ("server", "max_upload_mb"),
    "STT_ENGINE": ("stt", "engine"),
    "STT_MODEL_NAME": ("stt", "model_name"),
    "STT_MOONSHINE_MAX_SECONDS": ("stt", "moonshine_max_seconds"),
    "STT_DEVICE": ("stt", "device"),
    "STT_COMPUTE_TYPE": ("stt", "compute_type"),
    "STT_BEAM_SIZE": ("stt", "beam_size"),
    "STT_TIMEOUT_S": ("stt", "timeout_s"),
    "MAX_AUDIO_SECONDS": ("stt", "max_audio_seconds"),
    "LLM_ENGINE": ("llm", "engine"),
    "LLM_BACKEND": ("llm", "backend"),
    "LLM_MODEL": ("llm", "model"),
    "LLM_BASE_URL": ("llm", "base_url"),
    "LLM_API_KEY": ("llm", "api_key"),
    "LLM_DEVICE": ("llm", "device"),
    "LLM_DTYPE": ("llm", "dtype"),
    "LLM_THREADS": ("llm", "threads"),
    "LLM_PROMPT_CACHE_MB": ("llm", "prompt_cache_mb"),
    "LLM_TIMEOUT_S": ("llm", "timeout_s"),
    "SYSTEM_PROMPT": ("llm", "system_prompt"),
    "LLM_MAX_TOKENS": ("llm", "max_tokens"),
    "LLM_TEMPERATURE": ("llm", "temperature"),
    "MAX_HISTORY_MESSAGES": ("llm", "max_history_messages"),
    "LLM_CONTEXT_TOKENS": ("llm", "context_tokens"),
    "TTS_ENGINE": ("tts", "engine"),
    "TTS_MODEL_NAME": ("tts", "model_name"),
    "TTS_CHINESE_MODEL_NAME": ("tts", "chinese_model_name"),
    "TTS_DEVICE": ("tts", "device"),
    "TTS_DTYPE": ("tts", "dtype"),
    "TTS_DIFFUSION_STEPS": ("tts", "diffusion_steps"),
    "DEFAULT_CFG_SCALE": ("tts", "default_cfg_scale"),
    "TTS_TIMEOUT_S": ("tts", "timeout_s"),
    "MAX_TTS_CHARS": ("tts", "max_chars"),
    "MAX_TTS_SPEECH_SECONDS": ("tts", "max_speech_seconds"),
    "SEGMENT_THRESHOLD_CHARS": ("tts", "segment_threshold_chars"),
    "SEGMENT_SILENCE_MS": ("tts", "segment_silence_ms"),
    "MAX_SCRIPT_TURNS": ("tts", "max_script_turns"),
    "DIALOGUE_WINDOW_CHARS": ("tts", "dialogue_window_chars"),
    "TTS_ALIGN_WORDS": ("tts", "align_words"),
    "VOICES_DIR": ("voices", "dir"),
    "DEFAULT_VOICE": ("voices", "default"),
    "SPEAKER_CACHE_SIZE": ("voices", "cache_size"),
    "PRELOAD_VOICES": ("voices", "preload"),
    "VOICES_MAX_COUNT": ("voices", "max_count"),
    "VOICES_MAX_MB": ("voices", "max_mb"),
    "MODELS_DIR": ("storage", "models_dir"),
    "OUTPUTS_DIR": ("storage", "outputs_dir"),
    "DATA_DIR": ("storage", "data_dir"),
    "OUTPUTS_TTL_HOURS": ("storage", "outputs_ttl_hours"),
    "OUTPUTS_MAX_MB": ("storage", "outputs_max_mb"),
    "OUTPUTS_SWEEP_S": ("storage", "outputs_sweep_s"),
    "MIN_FREE_DISK_MB": ("storage", "min_free_disk_mb"),
    "MODEL_VERIFY": ("storage", "model_verify"),
    "DATABASE_URL": ("storage", "database_url"),
    "QUEUE_SIZE": ("limits", "queue_size"),
    "ADMISSION_BUDGETS": ("limits", "admission_budgets"),
    "CONVERSATION_QUEUE_SIZE": ("limits", "conversation_queue_size"),
    "CPU_SLICE_MS": ("limits", "cpu_slice_ms"),
    "VAD_THRESHOLD": ("vad", "threshold"),
    "VAD_MIN_SPEECH_MS": ("vad", "min_speech_ms"),
    "VAD_MIN_SILENCE_MS": ("vad", "min_silence_ms"),
    "VAD_SPEECH_PAD_MS": ("vad", "speech_pad_ms"),
    "TURN_DETECTION": ("vad", "turn_detection"),
    "TURN_PAUSE_MS": ("vad", "turn_pause_ms"),
    "TURN_MAX_SILENCE_MS": ("vad", "turn_max_silence_ms"),
    "TURN_THRESHOLD": ("vad", "turn_threshold"),
    "TURN_WORDS_THRESHOLD": ("vad", "turn_words_threshold"),
    "WS_MAX_UTTERANCE_S": ("vad", "max_utterance_s"),
    "WS_STT_BEAM_SIZE": ("realtime", "stt_beam_size"),
    "WS_PREEMPTIVE_REPLIES": ("realtime", "preemptive_replies"),
    "WS_IDLE_TIMEOUT_S": ("realtime", "idle_timeout_s"),
    "WS_MAX_SESSION_S": ("realtime", "max_session_s"),
    "WS_MAX_FRAME_BYTES": ("realtime", "max_frame_bytes"),
    "WS_MAX_EVENT_BYTES": ("realtime", "max_event_bytes"),
    "WS_PARTIAL_TRANSCRIPT_S": ("realtime", "partial_transcript_s"),
    "WS_MAX_SESSIONS": ("realtime", "max_sessions"),
    "PHONE_STREAM_URL": ("realtime", "phone_stream_url"),
    "WEBRTC_ICE_SERVERS": ("realtime", "webrtc_ice_servers"),
    "MCP_SERVERS": ("tools", "mcp_servers"),
    "TOOL_MAX_STEPS": ("tools", "max_steps"),
    "TOOL_TIMEOUT_S": ("tools", "timeout_s"),
    "TOOL_RESULT_CHARS": ("tools", "result_chars"),
    "MCP_REFRESH_S": ("tools", "refresh_s"),
    "TOOL_ACKNOWLEDGEMENT": ("tools", "acknowledgement"),
    "OPENAI_VOICES": ("openai", "voices"),
    "OPENAI_MODEL_ALIASES": ("openai", "model_aliases"),
    "WYOMING_URI": ("wyoming", "uri"),
    "WYOMING_ZEROCONF": ("wyoming", "zeroconf"),
    "WYOMING_ZEROCONF_NAME": ("wyoming", "zeroconf_name"),
    "WYOMING_MAX_CONNECTIONS": ("wyoming", "max_connections"),
    "WYOMING_MAX_CONNECTIONS_PER_CLIENT": ("wyoming", "max_connections_per_client"),
    "WYOMING_MAX_BUFFERED_MB": ("wyoming", "max_buffered_mb"),
    "WYOMING_PUBLIC": ("wyoming", "public"),
    "WYOMING_IDLE_TIMEOUT_S": ("wyoming", "idle_timeout_s"),
    "WYOMING_MAX_EVENT_BYTES": ("wyoming", "max_event_bytes"),
}
"""Environment variable -> (section, field): the same names as ever, so a user's `.env` keeps working."""

LEGACY_ENV: dict[str, str] = {
    "SEGMENT_LENGTH_THRESHOLD": "SEGMENT_THRESHOLD_CHARS",
    "MAX_CACHE_SIZE": "SPEAKER_CACHE_SIZE",
}
"""The names the backend this server replaces used -> ours: read when ours is not set (README:
Coming from the realtime dialogue backend)."""

_BY_FIELD = {location: name.lower() for name, location in ENV.items()}
_SECRETS = {"api_key", "llm_api_key", "database_url"}


class _FlatVariables(PydanticBaseSettingsSource):
    """The variables of `ENV` found in a mapping of lower-cased names (the environment, a .env)."""

    def __init__(self, settings_cls: type[BaseSettings], variables: Any) -> None:
        super().__init__(settings_cls)
        self.variables = variables

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads the variables by name

    def __call__(self) -> dict[str, Any]:
        names = (name.lower() for name in ENV)
        found = {name: self.variables[name] for name in names if self.variables.get(name) is not None}
        for old, new in LEGACY_ENV.items():
            if self.variables.get(old.lower()) is not None:
                found.setdefault(new.lower(), self.variables[old.lower()])
        return found


class Settings(BaseSettings):
    """The server's configuration, by section. See the README for the table of variables.

    Built from keyword arguments, then the environment, then `.env` (in that order of precedence);
    keyword arguments may use the variables' names (`Settings(tts_model_name=...)`) or sections."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    server: ServerSettings = Field(default_factory=ServerSettings)
    stt: STTSettings = Field(default_factory=STTSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    tts: TTSSettings = Field(default_factory=TTSSettings)
    voices: VoicesSettings = Field(default_factory=VoicesSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    vad: VADSettings = Field(default_factory=VADSettings)
    realtime: RealtimeSettings = Field(default_factory=RealtimeSettings)
    tools: ToolsSettings = Field(default_factory=ToolsSettings)
    openai: OpenAISettings = Field(default_factory=OpenAISettings)
    wyoming: WyomingSettings = Field(default_factory=WyomingSettings)

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as e:
            # Name the variable the user set (`stt_device`), not the field (`stt.device`).
            errors = [{**error, "loc": _variable(error["loc"])} for error in e.errors()]
            for error in errors:
                error.pop("msg", None)
                error.pop("url", None)
                location: tuple[object, ...] = tuple(error["loc"])  # type: ignore[arg-type]
                if location and location[0] in _SECRETS:  # never print a password
                    error["input"] = "**********"
            raise ValidationError.from_exception_data("Settings", errors) from None  # type: ignore[arg-type]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            _FlatVariables(settings_cls, getattr(env_settings, "env_vars", {})),
            _FlatVariables(settings_cls, getattr(dotenv_settings, "env_vars", {})),
        )

    @model_validator(mode="before")
    @classmethod
    def _into_sections(cls, data: Any) -> Any:
        """Flat names (from the environment, a .env or keyword arguments) into their sections."""
        if not isinstance(data, dict):
            return data
        grouped: dict[str, Any] = {}
        for key, value in data.items():  # sections given whole first, then single variables
            if key in cls.model_fields:
                section = value.model_dump(exclude_unset=True) if isinstance(value, BaseModel) else value
                grouped.setdefault(key, {}).update(section)
        for key, value in data.items():
            location = ENV.get(key.upper())
            if location is not None:
                name, field = location
                grouped.setdefault(name, {})[field] = value
        return grouped


def _variable(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """An error location in sections -> the environment variable's name (lower-cased)."""
    if len(loc) >= 2 and (str(loc[0]), str(loc[1])) in _BY_FIELD:
        return (_BY_FIELD[(str(loc[0]), str(loc[1]))], *loc[2:])
    return loc
