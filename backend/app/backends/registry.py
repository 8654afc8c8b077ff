"""The engines, one registry per stage: engine name -> the module that loads it.

`STT_ENGINE`, `LLM_ENGINE` and `TTS_ENGINE` name an engine; `auto` (the default) takes the first
engine of the stage that claims the settings (Moonshine for `STT_MODEL_NAME=moonshine`, Whisper for
any other STT model; Piper for `embedded` and `.onnx` voices, VibeVoice for any other TTS model; for
`LLM_BACKEND=local`, llama.cpp for a GGUF model on the CPU and transformers for the rest, the OpenAI
client for `openai`). An engine module defines two functions:

- `load(settings: Settings)` -> the engine, implementing its stage's Protocol (`protocols.py`);
- `model_files(settings: Settings)` -> its `ModelFiles` for the manifest, or None when the model
  is not a local file at start-up (a hub download, a remote server).

Adding an engine is that module plus one line in its stage's tuple below. Modules are imported
only when their engine is chosen, so an unused engine's libraries are never loaded. Two stages can
pair engines: STT puts Moonshine in front of Whisper for short English clips (`stt_router.py`),
TTS a Chinese voice beside the main one (`by_language.py`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, cast

from backend.app.backends.model_files import ModelFiles
from backend.app.backends.protocols import ChatModel, SpeechToText, TextToSpeech
from backend.app.core.config import Settings
from backend.app.core.errors import ModelLoadError

Stage = Literal["stt", "llm", "tts"]


@dataclass(frozen=True)
class Engine:
    name: str
    """The value of the stage's `*_ENGINE` setting that selects it."""
    module: str
    claims: Callable[[Settings], bool]
    """Whether `auto` picks this engine for these settings (the stage's first claim wins)."""
    local: bool = True
    """Runs in this process (warmed up at start); False for a model served elsewhere."""

    def _module(self) -> Any:
        return importlib.import_module(self.module)

    def load(self, settings: Settings) -> Any:
        return self._module().load(settings)

    def model_files(self, settings: Settings) -> ModelFiles | None:
        return cast("ModelFiles | None", self._module().model_files(settings))


def cuda_available() -> bool:
    """Whether a CUDA device is there, asked of CTranslate2 (loaded for STT anyway) rather than
    torch, which the default CPU configuration never needs to import."""
    try:
        import ctranslate2
    except ImportError:
        return False
    return bool(ctranslate2.get_cuda_device_count() > 0)


def _is_llamacpp(settings: Settings) -> bool:
    """A GGUF model not to run on CUDA: the embedded Qwen (LLM_MODEL empty or `embedded`: llama.cpp
    only), a `.gguf` file, or the small SmolLM2 unless CUDA is there (transformers runs it there)."""
    llm = settings.llm
    if llm.backend != "local":
        return False
    if llm.model in ("", "embedded"):
        return True
    if llm.model == "small":
        return llm.device == "cpu" or (llm.device == "auto" and not cuda_available())
    return llm.model.lower().endswith(".gguf") and llm.device in ("auto", "cpu")


def _is_piper(settings: Settings) -> bool:
    name = settings.tts.model_name
    return name == "joe" or name.endswith(".onnx")


ENGINES: dict[Stage, tuple[Engine, ...]] = {
    "stt": (
        Engine("moonshine", "backend.app.backends.moonshine", lambda s: s.stt.model_name == "moonshine"),
        Engine("faster-whisper", "backend.app.backends.whisper", lambda s: True),
    ),
    "llm": (
        Engine("llama.cpp", "backend.app.backends.llamacpp_llm", _is_llamacpp),
        Engine("transformers", "backend.app.backends.transformers_llm", lambda s: s.llm.backend == "local"),
        Engine("openai", "backend.app.backends.openai_llm", lambda s: s.llm.backend == "openai", local=False),
    ),
    "tts": (
        Engine("embedded", "backend.app.backends.voice_pair", lambda s: s.tts.model_name == "embedded"),
        Engine("piper", "backend.app.backends.piper", _is_piper),
        Engine("baker-zh", "backend.app.backends.baker_zh", lambda s: s.tts.model_name == "zh-baker"),
        Engine("hibari", "backend.app.backends.hibari", lambda s: s.tts.model_name == "hibari"),
        Engine("vibevoice", "backend.app.backends.vibevoice", lambda s: True),
    ),
}


def engine(stage: Stage, settings: Settings) -> Engine:
    """The engine the settings select for `stage` (its `*_ENGINE`, or `auto`'s pick)."""
    chosen: str = getattr(settings, stage).engine
    for candidate in ENGINES[stage]:
        if candidate.name == chosen or (chosen == "auto" and candidate.claims(settings)):
            return candidate
    names = ", ".join(e.name for e in ENGINES[stage])
    raise ModelLoadError(f"{stage.upper()}_ENGINE={chosen}: no such engine (known: auto, {names})")


def load_stt(settings: Settings) -> SpeechToText:
    """The STT engine, behind Moonshine for short English clips when `pairs_moonshine` says so
    (`stt_router.ShortClipRouter`)."""
    main = cast(SpeechToText, engine("stt", settings).load(settings))
    if not pairs_moonshine(settings):
        return main
    from backend.app.backends.stt_router import ShortClipRouter

    alone = moonshine_settings(settings)
    moonshine = cast(SpeechToText, engine("stt", alone).load(alone))
    return ShortClipRouter(moonshine, main, settings.stt.moonshine_max_seconds)


def pairs_moonshine(settings: Settings) -> bool:
    """Whether Moonshine goes in front of Whisper: for the bundled English Whisper (`embedded`,
    `auto`) chosen by `STT_ENGINE=auto`, on a CPU (on CUDA Whisper is the faster one), unless
    STT_MOONSHINE_MAX_SECONDS is 0."""
    stt = settings.stt
    on_cpu = stt.device == "cpu" or (stt.device == "auto" and not cuda_available())
    return (
        stt.engine == "auto"
        and stt.model_name in ("embedded", "auto")
        and stt.moonshine_max_seconds > 0
        and on_cpu
    )


def moonshine_settings(settings: Settings) -> Settings:
    return _with(settings, "stt", model_name="moonshine", engine="moonshine")


def load_chat(settings: Settings) -> ChatModel:
    return cast(ChatModel, engine("llm", settings).load(settings))


def load_tts(settings: Settings) -> TextToSpeech:
    """The TTS engine, with the Chinese voice beside it when TTS_CHINESE_MODEL_NAME names one and
    the main voice speaks no Chinese (`by_language.LanguageRouter`)."""
    main = cast(TextToSpeech, engine("tts", settings).load(settings))
    chinese = chinese_settings(settings)
    if chinese is None or "zh" in main.languages:
        return main
    from backend.app.backends.by_language import LanguageRouter

    second = cast(TextToSpeech, engine("tts", chinese).load(chinese))
    if "zh" not in second.languages:
        raise ModelLoadError(
            f"TTS_CHINESE_MODEL_NAME={settings.tts.chinese_model_name}: that voice speaks "
            f"{', '.join(second.languages) or 'no language we know'}, not Chinese"
        )
    return LanguageRouter(main, {"zh": second})


def chinese_settings(settings: Settings) -> Settings | None:
    """The settings that select the Chinese voice (TTS_CHINESE_MODEL_NAME), None when none is set."""
    name = settings.tts.chinese_model_name
    return _with(settings, "tts", model_name=name, engine="auto") if name else None


def configured_models(settings: Settings) -> list[ModelFiles]:
    """The local model files the settings select (hub downloads and remote servers excluded):
    with STT_MODEL_NAME=auto both bundled Whisper models, Moonshine when it is paired with them,
    with TTS_CHINESE_MODEL_NAME that voice too."""
    chosen: list[tuple[Stage, Settings]] = [(stage, settings) for stage in ENGINES]
    if settings.stt.model_name == "auto":
        chosen[0:1] = [
            ("stt", _with(settings, "stt", model_name=n)) for n in ("embedded", "base-multilingual")
        ]
    if pairs_moonshine(settings):
        chosen.insert(sum(stage == "stt" for stage, _ in chosen), ("stt", moonshine_settings(settings)))
    chinese = chinese_settings(settings)
    if chinese is not None:
        chosen.append(("tts", chinese))
    found = (engine(stage, chosen_settings).model_files(chosen_settings) for stage, chosen_settings in chosen)
    return [model for model in found if model is not None]


def _with(settings: Settings, section: str, **values: object) -> Settings:
    return settings.model_copy(update={section: getattr(settings, section).model_copy(update=values)})
