"""Text to speech with Microsoft VibeVoice (transformers-native), with zero-shot voice cloning.

Loads `VibeVoiceForConditionalGeneration` + its processor from a hub id (`vibevoice/VibeVoice-1.5B-hf`,
cached under MODELS_DIR) or a local directory. The reference clip is the speaker prompt: it goes into
the chat template as an audio item of its speaker's role, and the feature extractor turns it into
`input_values` plus one audio placeholder token per 3,200 samples. That prepared prompt is what the
speaker cache keeps, so a voice is decoded, resampled and feature-extracted once.

A dialogue (`synthesize_dialogue`) is one generation with up to four roles, "0" to "3": the
template's "Voice input" block holds each role's prompt once, in order of first appearance, and the
"Text input" block one line per turn. Plain text is a dialogue of one turn by role "0".
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from backend.app.audio.types import Audio
from backend.app.backends import vibevoice_convert
from backend.app.backends.model_files import ModelFiles, local_dir
from backend.app.core.config import Settings
from backend.app.core.errors import InvalidInputError, ModelLoadError
from backend.app.core.values import DialogueLine, DialogueRequest, ModelInfo, SynthesisRequest
from backend.app.text.segment import is_cjk

SAMPLE_RATE = 24_000
# Each audio token is 3,200 samples (0.133 s). English is spoken at roughly 15 characters a second
# (half a token per character), Chinese at 4-5 characters a second (about 1.7 tokens per character);
# the budgets below add a margin for slow speakers and pauses.
_TOKENS_PER_CHAR = 0.75
_TOKENS_PER_CJK_CHAR = 2.5
_MIN_NEW_TOKENS = 40
_SPECIAL_TOKEN = re.compile(r"<\|[A-Za-z0-9_]+\|>")
MAX_SPEAKERS = 4
"""Roles one VibeVoice generation voices (the model was trained on up to four speakers)."""


@dataclass(frozen=True)
class VibeVoicePrompt:
    """A reference voice as the processor prepares it: normalised, padded samples and their mask."""

    input_values: Any  # torch.Tensor (1, 1, samples)
    padding_mask: Any  # torch.Tensor (1, samples)
    audio_tokens: int


def _resolve_dtype(dtype: str, device: str) -> Any:
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device == "cuda" else torch.float32
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]


class VibeVoiceBackend:
    """VibeVoice on CUDA (bfloat16) in production; any device and dtype for tests."""

    supports_cloning = True
    supports_speed = False
    sample_rate = SAMPLE_RATE
    speakers: tuple[str, ...] = ()
    max_dialogue_speakers = MAX_SPEAKERS
    languages = ("en", "zh")  # what VibeVoice-1.5B was trained on

    def __init__(
        self,
        model_name: str,
        models_dir: Path,
        device: str = "auto",
        dtype: str = "auto",
        diffusion_steps: int = 10,
    ) -> None:
        import torch
        from transformers import AutoProcessor, VibeVoiceForConditionalGeneration

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        torch_dtype = _resolve_dtype(dtype, device)
        cache_dir = str(models_dir)
        try:
            # The original release format (microsoft/VibeVoice-1.5B) is converted once into MODELS_DIR.
            path = vibevoice_convert.checkpoint(model_name, models_dir)
            self._processor = AutoProcessor.from_pretrained(path, cache_dir=cache_dir)
            self._model = VibeVoiceForConditionalGeneration.from_pretrained(
                path, dtype=torch_dtype, cache_dir=cache_dir
            ).to(device)
        except ModelLoadError:
            raise
        except Exception as e:  # missing/corrupt files, or a hub id not cached while offline
            raise ModelLoadError(
                f"could not load the VibeVoice model {model_name!r}: {e}. TTS_MODEL_NAME must be a "
                "local model directory, or a hub id already downloaded into MODELS_DIR when offline"
            ) from e
        self._model.eval()
        self._device = device
        self._diffusion_steps = diffusion_steps
        extractor = self._processor.feature_extractor
        if extractor.sampling_rate != SAMPLE_RATE:
            raise ModelLoadError(
                f"{model_name}: the processor expects {extractor.sampling_rate} Hz, not {SAMPLE_RATE}"
            )
        self._hop = int(extractor.pad_to_multiple_of)
        self._audio_token = self._processor.audio_token
        cap = getattr(self._model.generation_config, "max_new_tokens", None)
        self._max_new_tokens_cap = int(cap) if cap else 4096
        label = Path(model_name).name if Path(model_name).is_dir() else model_name
        self.info = ModelInfo(
            model=f"vibevoice {label}", device=f"{device} ({str(torch_dtype)[6:]})", id=label
        )

    def prepare_voice(self, audio: Audio) -> VibeVoicePrompt:
        """Feature-extract a reference clip once (the result is cached by the TTS service)."""
        if audio.sample_rate != SAMPLE_RATE:
            raise ValueError(f"reference audio must be at {SAMPLE_RATE} Hz")
        features = self._processor.feature_extractor(
            [audio.samples], sampling_rate=SAMPLE_RATE, return_tensors="pt"
        )
        samples = int(features["padding_mask"].sum())
        return VibeVoicePrompt(
            input_values=features["input_values"],
            padding_mask=features["padding_mask"],
            audio_tokens=math.ceil(samples / self._hop),
        )

    def build_inputs(self, text: str, voice: VibeVoicePrompt | None) -> dict[str, Any]:
        """Tokenised prompt (+ the speaker prompt tensors) for one segment of text."""
        return self.build_dialogue_inputs([DialogueLine(0, text)], [voice])

    def build_dialogue_inputs(
        self, lines: Sequence[DialogueLine], voices: Sequence[VibeVoicePrompt | None]
    ) -> dict[str, Any]:
        """The prompt for turns by roles 0..len(voices)-1: each role with a voice has its prompt in
        the "Voice input" block once (its first turn carries the audio item), and the prompts'
        tensors are batched in that order, padded to the longest."""
        import torch

        if not lines:
            raise ValueError("a dialogue needs at least one line")
        if len(voices) > MAX_SPEAKERS or any(not 0 <= line.role < len(voices) for line in lines):
            raise ValueError(f"a VibeVoice dialogue has roles 0-{MAX_SPEAKERS - 1}, each with a voice entry")
        messages: list[dict[str, Any]] = []
        voiced: list[VibeVoicePrompt] = []
        seen: set[int] = set()
        for line in lines:
            # One line per turn, and no special token a text could smuggle in (an audio slot).
            text = " ".join(_SPECIAL_TOKEN.sub(" ", line.text).split())
            content: list[dict[str, Any]] = [{"type": "text", "text": text}]
            voice = voices[line.role]
            if voice is not None and line.role not in seen:
                if not isinstance(voice, VibeVoicePrompt):
                    raise TypeError("VibeVoice needs voices prepared by its own prepare_voice")
                # The template only needs to know that the role has audio; the tensors are attached below.
                content.append({"type": "audio", "audio": "cached"})
                voiced.append(voice)
            seen.add(line.role)
            messages.append({"role": str(line.role), "content": content})
        prompt = self._processor.apply_chat_template(messages, tokenize=False)
        pieces = prompt.split(self._audio_token)
        if len(pieces) != len(voiced) + 1:
            raise RuntimeError("the checkpoint's chat template does not place one audio slot per voiced role")
        expanded = pieces[0]
        for voice, rest in zip(voiced, pieces[1:], strict=True):
            expanded += self._audio_token * voice.audio_tokens + rest
        inputs = dict(self._processor.tokenizer(expanded, return_tensors="pt", add_special_tokens=False))
        if voiced:
            longest = max(v.input_values.shape[-1] for v in voiced)

            def padded(tensor: Any) -> Any:
                return torch.nn.functional.pad(tensor, (0, longest - tensor.shape[-1]))

            inputs["input_values"] = torch.cat([padded(v.input_values) for v in voiced])
            inputs["padding_mask"] = torch.cat([padded(v.padding_mask) for v in voiced])
        return {k: v.to(self._device) for k, v in inputs.items()}

    def _token_budget(self, text: str) -> int:
        cjk = sum(1 for ch in text if is_cjk(ch))
        budget = (len(text) - cjk) * _TOKENS_PER_CHAR + cjk * _TOKENS_PER_CJK_CHAR
        return _MIN_NEW_TOKENS + math.ceil(budget)

    def max_new_tokens(self, text: str) -> int:
        return min(self._max_new_tokens_cap, self._token_budget(text))

    def estimate_seconds(self, text: str) -> float:
        """The audio tokens `text` may generate (the same budget that caps generation), in seconds."""
        return self._token_budget(text) * self._hop / SAMPLE_RATE

    def synthesize(self, request: SynthesisRequest) -> Audio:
        if request.speed != 1.0:
            # VibeVoice has no rate control; resampling would shift the pitch of the cloned voice.
            raise InvalidInputError("speed is not supported by the VibeVoice engine; omit it or use 1.0")
        voice = request.voice
        if voice is not None and not isinstance(voice, VibeVoicePrompt):
            raise TypeError("VibeVoice needs a voice prepared by its own prepare_voice")
        return self._generate(self.build_inputs(request.text, voice), request.cfg_scale, request.text)

    def synthesize_dialogue(self, request: DialogueRequest) -> Audio:
        """Every line of `request` in one generation, each role in its own voice."""
        voices = [v if isinstance(v, VibeVoicePrompt) or v is None else _wrong(v) for v in request.voices]
        inputs = self.build_dialogue_inputs(request.lines, voices)
        return self._generate(inputs, request.cfg_scale, "\n".join(line.text for line in request.lines))

    def _generate(self, inputs: dict[str, Any], cfg_scale: float, text: str) -> Audio:
        import torch

        with torch.inference_mode():
            outputs = self._model.generate(
                **inputs,
                guidance_scale=cfg_scale,
                num_diffusion_steps=self._diffusion_steps,
                max_new_tokens=self.max_new_tokens(text),
            )
        audio = outputs[0] if outputs else None
        if audio is None:  # the model ended without speaking
            return Audio(np.zeros(0, dtype=np.float32), SAMPLE_RATE)
        samples = audio.detach().to(torch.float32).cpu().numpy().reshape(-1)
        return Audio(np.clip(samples, -1.0, 1.0).astype(np.float32), SAMPLE_RATE)


def _wrong(voice: object) -> VibeVoicePrompt:
    raise TypeError(f"VibeVoice needs voices prepared by its own prepare_voice, not {type(voice).__name__}")


def load(settings: Settings) -> VibeVoiceBackend:
    tts = settings.tts
    return VibeVoiceBackend(
        tts.model_name,
        settings.storage.models_dir,
        device=tts.device,
        dtype=tts.dtype,
        diffusion_steps=tts.diffusion_steps,
    )


def model_files(settings: Settings) -> ModelFiles | None:
    """A local checkpoint directory; None for a hub id (downloaded into MODELS_DIR at load)."""
    return local_dir("tts", settings.tts.model_name)
