"""Choose and load the engine for each capability from the settings."""

from __future__ import annotations

from backend.app.backends.protocols import ChatModel, SpeechToText, TextToSpeech
from backend.app.core.config import Settings


def load_stt(settings: Settings) -> SpeechToText:
    from backend.app.backends.whisper import WhisperBackend

    return WhisperBackend(
        settings.stt_model_name,
        settings.models_dir,
        device=settings.stt_device,
        compute_type=settings.stt_compute_type,
        beam_size=settings.stt_beam_size,
    )


def load_chat(settings: Settings) -> ChatModel:
    if settings.llm_backend == "openai":
        from backend.app.backends.openai_llm import OpenAIChatBackend

        return OpenAIChatBackend(
            settings.llm_model,
            settings.llm_base_url,
            settings.llm_api_key.get_secret_value(),
            settings.llm_timeout_s,
        )
    from backend.app.backends.transformers_llm import TransformersChatBackend

    return TransformersChatBackend(
        settings.llm_model, settings.models_dir, settings.llm_device, settings.llm_dtype
    )


def is_piper(model_name: str) -> bool:
    """`embedded` and `.onnx` voice files are Piper; anything else is a VibeVoice checkpoint."""
    return model_name == "embedded" or model_name.endswith(".onnx")


def load_tts(settings: Settings) -> TextToSpeech:
    if is_piper(settings.tts_model_name):
        from backend.app.backends.piper import PiperBackend

        return PiperBackend(settings.tts_model_name, settings.tts_device)
    from backend.app.backends.vibevoice import VibeVoiceBackend

    return VibeVoiceBackend(
        settings.tts_model_name,
        settings.models_dir,
        device=settings.tts_device,
        dtype=settings.tts_dtype,
        diffusion_steps=settings.tts_diffusion_steps,
    )
