"""Speech to text with Moonshine base (English; Useful Sensors, MIT) on ONNX Runtime.

Moonshine's encoder reads the raw 16 kHz samples, so its cost follows the length of the clip,
where Whisper always encodes a 30 s window: up to about 6 s it answers up to 2.9x sooner than
Whisper tiny.en, and mishears about as often (the README's figures). It hears English only, and
has no word timestamps, prompt, hotwords, beam or sampling: the default STT pairs it with Whisper
(`stt_router.py`), which takes every request it cannot serve, and long audio.

Decoding is greedy over the merged decoder's key/value cache, at most `TOKENS_PER_SECOND` tokens
a second of audio (Moonshine's own bound: a decoder still writing past it is looping). Before
that the clip is cut to its speech with the Silero VAD Whisper's `vad_filter` uses (silence costs
encoder and decoder work), and `EDGE_SILENCE_S` of digital silence is put at either end: on
speech cut tight Moonshine repeats itself, and after half a second of silence before the speech
and none after it returns nothing (measured on cut-out replies of the embedded voices). Long audio
is transcribed in pieces of at most `MAX_PIECE_S` of speech, one segment each.
"""

from __future__ import annotations

import math
import os
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from backend.app.audio.types import Audio
from backend.app.backends import embedded
from backend.app.backends.model_files import ModelFiles
from backend.app.backends.protocols import final_transcription
from backend.app.core.cancellation import raise_if_cancelled
from backend.app.core.config import Settings
from backend.app.core.cpu import CpuTurns, taking_turn
from backend.app.core.errors import ModelLoadError
from backend.app.core.values import ModelInfo, TranscribeOptions, Transcription, TranscriptSegment
from backend.app.text.segment import join_pieces

SAMPLE_RATE = 16_000
TOKENS_PER_SECOND = 6.5
MIN_TOKENS = 8
"""A piece may produce `MIN_TOKENS` plus `TOKENS_PER_SECOND` a second of the audio it spans
(Moonshine's own bound; brisk synthetic English took 5.4 a second, conversational speech fewer)."""
START_TOKEN, END_TOKEN = 1, 2
MAX_PIECE_S = 20.0
"""The most speech one encoder call reads; longer audio is cut at pauses the VAD finds."""
SPEECH_PAD_MS = 200
"""Audio kept around each stretch of speech the VAD finds (Whisper's filter keeps 400 ms)."""
MIN_SILENCE_MS = 300
"""A pause this long ends a stretch of speech: shorter ones stay as they are, longer ones are cut
to `2 * SPEECH_PAD_MS`; silence after the speech is cut once it is this long (the VAD runs a
stretch still open at the end of the clip to the clip's last sample)."""
EDGE_SILENCE_S = 0.1
"""Digital silence put before and after each piece. On the embedded voices' sentences cut tight
around their speech, Moonshine mistook 6.3% of the words (a sentence looped: "I'm glad to help.
I'm glad to help. I"); with 0.1 s at each end, 0.3%; 0.1-0.3 s all did as well."""
DIGITAL_SILENCE = 1e-4
"""With the VAD off, samples this quiet at either end are still trimmed."""
_OLD_HYPHENS = re.compile(r"\b([Tt])o-(day|night|morrow)\b")
"""Moonshine learnt `to-morrow`, `to-night` from old books; nobody writes them so now."""


def _session(path: Path, threads: int) -> Any:
    """An ONNX Runtime session whose idle threads sleep instead of spinning (the server shares
    its cores with the LLM and the voice)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def speech_pieces(samples: np.ndarray, use_vad: bool = True) -> list[list[tuple[int, int]]]:
    """The stretches of `samples` to transcribe, grouped into pieces of at most `MAX_PIECE_S`
    each: sample ranges, read joined. [] when there is no speech. With `use_vad` off every sample
    is kept except digital silence at either end."""
    limit = int(MAX_PIECE_S * SAMPLE_RATE)
    if use_vad:
        from faster_whisper.vad import VadOptions, get_speech_timestamps

        vad = VadOptions(
            min_silence_duration_ms=MIN_SILENCE_MS,
            speech_pad_ms=SPEECH_PAD_MS,
            max_speech_duration_s=MAX_PIECE_S - 2 * SPEECH_PAD_MS / 1000,
        )
        spans = [(s["start"], s["end"]) for s in get_speech_timestamps(samples, vad, SAMPLE_RATE)]
    else:
        loud = np.flatnonzero(np.abs(samples) > DIGITAL_SILENCE)
        if loud.size == 0:
            return []
        start, end = int(loud[0]), int(loud[-1]) + 1
        count = math.ceil((end - start) / limit)
        cuts = np.linspace(start, end, count + 1).astype(int)
        spans = list(zip(cuts[:-1].tolist(), cuts[1:].tolist(), strict=True))
    pieces: list[list[tuple[int, int]]] = []
    length = 0
    for start, end in spans:
        if pieces and length + end - start <= limit:
            pieces[-1].append((start, end))
            length += end - start
        else:
            pieces.append([(start, end)])
            length = end - start
    return pieces


def compression_ratio(text: str) -> float:
    """Whisper's measure of repetition (text bytes over their zlib size), for verbose_json."""
    data = text.encode()
    return len(data) / len(zlib.compress(data)) if data else 0.0


class MoonshineBackend:
    """The bundled Moonshine base, converted once into MODELS_DIR (`embedded.moonshine_base_dir`)."""

    sample_rate = SAMPLE_RATE
    multilingual = False

    def __init__(self, models_dir: Path, threads: int = 0) -> None:
        import tokenizers

        threads = threads or os.cpu_count() or 1
        directory = embedded.moonshine_base_dir(models_dir)
        try:
            self._encoder = _session(directory / "encoder_model.onnx", threads)
            self._decoder = _session(directory / "decoder_model_merged.onnx", threads)
            self._tokenizer = tokenizers.Tokenizer.from_file(str(directory / "tokenizer.json"))
        except Exception as e:  # onnxruntime and tokenizers raise their own types
            raise ModelLoadError(
                f"could not load Moonshine from {directory}: {e}. Delete that directory to have it "
                f"converted again, or {embedded.SETUP_HINT}"
            ) from e
        self._caches = {
            i.name: i.shape[1::2] for i in self._decoder.get_inputs() if i.name.startswith("past_key_values.")
        }
        """Each key/value cache input and its (heads, head size)."""
        self._outputs = [o.name for o in self._decoder.get_outputs()]
        self._updates = [name.replace("present.", "past_key_values.", 1) for name in self._outputs[1:]]
        """The cache input each decoder output after the logits feeds at the next step."""
        self.info = ModelInfo(
            model="moonshine base.en (embedded)",
            device=f"cpu (onnxruntime, {threads} threads)",
            id="moonshine-base-en",
        )
        self.cpu: CpuTurns | None = None
        """Set by the server: each piece takes its turn on the cores (core/cpu.py)."""
        self.frames_encoded = 0
        """Encoder output frames so far (one per 24 ms of audio read): what the encoder did."""
        self.tokens_decoded = 0
        """Decoder steps so far: what the decoder did."""

    def transcribe(self, audio: Audio, options: TranscribeOptions) -> Transcription:
        return final_transcription(self.transcribe_stream(audio, options))

    def transcribe_stream(
        self, audio: Audio, options: TranscribeOptions
    ) -> Iterator[TranscriptSegment | Transcription]:
        """Each piece's segment as it is decoded, then the whole transcription. Options Moonshine
        has no use for (a prompt, hotwords, word timestamps, a beam) are ignored: the router
        sends such requests to Whisper."""
        if audio.sample_rate != self.sample_rate:
            raise ValueError(f"audio must be at {self.sample_rate} Hz")
        samples = np.ascontiguousarray(audio.samples, dtype=np.float32)
        segments = []
        for index, piece in enumerate(speech_pieces(samples, options.vad_filter is not False)):
            raise_if_cancelled()
            start, end = piece[0][0] / SAMPLE_RATE, piece[-1][1] / SAMPLE_RATE
            edge = np.zeros(round(EDGE_SILENCE_S * SAMPLE_RATE), np.float32)
            speech = np.concatenate([edge, *(samples[a:b] for a, b in piece), edge])
            with taking_turn(self.cpu):
                tokens, logprob = self.generate(
                    speech, MIN_TOKENS + math.ceil(TOKENS_PER_SECOND * (end - start))
                )
            text = _OLD_HYPHENS.sub(r"\1o\2", self._tokenizer.decode(tokens)).strip()
            segment = TranscriptSegment(
                start=round(start, 3),
                end=round(end, 3),
                text=text,
                id=index,
                seek=round(start * 100),
                tokens=tuple(tokens),
                avg_logprob=round(logprob, 4),
                compression_ratio=round(compression_ratio(text), 4),
            )
            segments.append(segment)
            yield segment
        yield Transcription(
            text=join_pieces([s.text for s in segments if s.text]),
            language="en",
            language_probability=1.0,
            duration=round(audio.duration, 3),
            segments=tuple(segments),
        )

    def generate(self, samples: np.ndarray, limit: int) -> tuple[list[int], float]:
        """Greedy decoding of one piece, at most `limit` steps: its text tokens (no start or end
        token) and their mean log-probability. Stops between steps when the work is cancelled."""
        hidden = self._encoder.run(None, {"input_values": samples[None]})[0]
        self.frames_encoded += hidden.shape[1]
        caches = {
            name: np.zeros((1, heads, 0, size), np.float32) for name, (heads, size) in self._caches.items()
        }
        token, tokens, logprobs = START_TOKEN, [], []
        for step in range(limit):
            raise_if_cancelled()
            outputs = self._decoder.run(
                self._outputs,
                {
                    "input_ids": np.array([[token]], np.int64),
                    "encoder_hidden_states": hidden,
                    "use_cache_branch": np.array([step > 0]),
                    **caches,
                },
            )
            self.tokens_decoded += 1
            logits = outputs[0][0, -1]
            token = int(logits.argmax())
            peak = float(logits[token])
            logprobs.append(-float(np.log(np.exp(logits - peak).sum())))
            if token == END_TOKEN:
                break
            tokens.append(token)
            for name, value in zip(self._updates, outputs[1:], strict=True):
                if step == 0 or ".decoder." in name:  # the encoder's keys and values are made once
                    caches[name] = value
        return tokens, float(np.mean(logprobs)) if logprobs else 0.0


def load(settings: Settings) -> MoonshineBackend:
    name = settings.stt.model_name
    if name not in ("moonshine", "embedded"):
        raise ModelLoadError(
            f"STT_ENGINE=moonshine runs the bundled Moonshine base only (STT_MODEL_NAME=moonshine), "
            f"not {name!r}"
        )
    return MoonshineBackend(settings.storage.models_dir)


def model_files(settings: Settings) -> ModelFiles:
    """The converted files in MODELS_DIR (made at load, or by `make setup`)."""
    directory = settings.storage.models_dir / embedded.MOONSHINE_DIRNAME
    files = tuple(directory / name for name in embedded.MOONSHINE_FILES)
    return ModelFiles("moonshine-base-en", "stt", files if all(f.is_file() for f in files) else (), True)
