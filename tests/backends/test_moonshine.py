"""Moonshine base on the real model (converted from its wheel), and the router that gives it the
short English clips of the default STT while Whisper keeps the rest."""

from __future__ import annotations

import asyncio
import dataclasses
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from backend.app.audio.decode import resample
from backend.app.audio.types import Audio
from backend.app.backends import embedded, moonshine_convert, registry
from backend.app.backends.moonshine import EDGE_SILENCE_S, MoonshineBackend, speech_pieces
from backend.app.backends.piper import PiperBackend
from backend.app.backends.stt_router import ShortClipRouter
from backend.app.backends.whisper import ByLanguage, WhisperBackend
from backend.app.container import Services
from backend.app.core.config import Settings
from backend.app.core.errors import StageTimeoutError
from backend.app.core.values import SynthesisRequest, TranscribeOptions, Transcription
from backend.app.core.worker import ModelWorker
from backend.app.text.wer import word_error_rate

SENTENCES = [
    "Turn off the lights in the living room.",
    "What time does the train to London leave?",
    "Please book a table for four people at seven thirty.",
    "The children walked slowly along the quiet river bank.",
    "Remind me to buy milk, eggs and fresh bread tomorrow.",
    "Scientists discovered a new species of frog in the mountains of South America.",
]
# Mean word error rate of Moonshine over SENTENCES, each said once by a voice. Measured: 0.00-0.03
# for Piper's joe and hibari's af_heart, clean or with noise at 15 dB SNR (about one word in 60:
# "played" for "play", "walk" for "walked"); Whisper tiny.en made 0.00-0.05 on the same clips. A
# broken path (silence, noise, the wrong rate, a mis-converted graph) scores near 1.
MEAN_WER = 0.15
ENGLISH = TranscribeOptions(language="en")


@pytest.fixture(scope="module")
def router(services: Services) -> ShortClipRouter:
    if registry.cuda_available():
        pytest.skip("with CUDA the default STT is Whisper alone (registry.pairs_moonshine)")
    backend = services.stt.backend
    assert isinstance(backend, ShortClipRouter)
    return backend


@pytest.fixture(scope="module")
def moonshine(router: ShortClipRouter) -> MoonshineBackend:
    assert isinstance(router.moonshine, MoonshineBackend)
    return router.moonshine


@pytest.fixture(scope="module")
def spoken(piper: PiperBackend) -> list[Audio]:
    """Each of SENTENCES said by Piper's joe, at 16 kHz."""
    return [resample(piper.synthesize(SynthesisRequest(text)), 16_000) for text in SENTENCES]


def joined(clips: list[Audio], pause_s: float = 0.3) -> Audio:
    gap = Audio.silence(pause_s, 16_000)
    return Audio.join([piece for clip in clips for piece in (clip, gap)][:-1], 16_000)


def work(moonshine: MoonshineBackend) -> tuple[int, int]:
    return moonshine.frames_encoded, moonshine.tokens_decoded


def test_speech_round_trip_within_a_word_error_rate(moonshine: MoonshineBackend, spoken: list[Audio]) -> None:
    heard = [moonshine.transcribe(audio, ENGLISH) for audio in spoken]
    rates = [word_error_rate(text, result.text) for text, result in zip(SENTENCES, heard, strict=True)]
    assert np.mean(rates) <= MEAN_WER, [result.text for result in heard]
    assert all(result.language == "en" and len(result.segments) == 1 for result in heard)
    assert all(s.tokens and s.avg_logprob < 0 and s.end <= r.duration for r in heard for s in r.segments)


def test_the_cost_grows_with_the_length_of_the_clip(moonshine: MoonshineBackend, spoken: list[Audio]) -> None:
    """Moonshine's encoder reads the clip itself (Whisper's always reads 30 s): four sentences
    cost about four times the encoder frames, and the decoder steps, of one."""
    done = []
    for clip in (spoken[0], joined(spoken[2:6])):
        before = work(moonshine)
        moonshine.transcribe(clip, ENGLISH)
        frames, steps = (after - start for after, start in zip(work(moonshine), before, strict=True))
        read_s = clip.duration + 2 * EDGE_SILENCE_S  # at most: each piece gets silence at its ends
        assert 30 <= frames / read_s <= 42  # one frame per 24 ms read
        done.append((frames, steps, clip.duration))
    (short_frames, short_steps, short_s), (long_frames, long_steps, long_s) = done
    assert long_s > 3 * short_s
    assert long_frames > 3 * short_frames and long_steps > 2.5 * short_steps


@pytest.mark.parametrize("tail", ["zeros", "noise"])
def test_silence_after_the_speech_is_trimmed_not_heard_as_an_end(
    moonshine: MoonshineBackend, spoken: list[Audio], tail: str
) -> None:
    rng = np.random.default_rng(7)
    for seconds in (0.4, 1.0, 3.0):
        rates = []
        for text, audio in zip(SENTENCES[:3], spoken[:3], strict=True):
            quiet = np.zeros(int(seconds * 16_000), np.float32)
            if tail == "noise":  # a room's noise floor, -50 dB
                quiet += rng.normal(0, 0.003, quiet.size).astype(np.float32)
            before = moonshine.frames_encoded
            result = moonshine.transcribe(Audio(np.concatenate([audio.samples, quiet]), 16_000), ENGLISH)
            assert result.text, f"{seconds} s of {tail} after the speech emptied the transcript"
            read_s = (moonshine.frames_encoded - before) / 41.7
            assert read_s < audio.duration + 0.5 and result.segments[-1].end < audio.duration + 0.3
            rates.append(word_error_rate(text, result.text))
        assert np.mean(rates) <= MEAN_WER


def test_speech_from_the_first_sample_to_the_last_is_heard_once(
    moonshine: MoonshineBackend, spoken: list[Audio]
) -> None:
    """A clip cut tight around its speech (a streamed reply, a barge-in) made Moonshine loop on
    it ("I'm glad to help. I'm glad to help. I") until the silence put at its ends."""
    rates = []
    for text, audio in zip(SENTENCES, spoken, strict=True):
        loud = np.flatnonzero(np.abs(audio.samples) > 0.01 * np.abs(audio.samples).max())
        tight = Audio(audio.samples[loud[0] : loud[-1] + 1], 16_000)
        rates.append(word_error_rate(text, moonshine.transcribe(tight, ENGLISH).text))
    assert np.mean(rates) <= MEAN_WER and max(rates) < 1


def test_silence_alone_is_an_empty_transcript_without_decoding(moonshine: MoonshineBackend) -> None:
    before = work(moonshine)
    result = moonshine.transcribe(Audio.silence(2.0, 16_000), ENGLISH)
    assert result.text == "" and result.segments == () and work(moonshine) == before
    assert speech_pieces(np.zeros(16_000, np.float32), use_vad=False) == []


def test_long_audio_is_read_in_pieces_of_at_most_the_window(spoken: list[Audio]) -> None:
    audio = joined(spoken * 4, pause_s=0.6)  # about 70 s
    pieces = speech_pieces(audio.samples)
    assert len(pieces) >= 4
    assert all(sum(b - a for a, b in piece) <= 20 * 16_000 for piece in pieces)
    kept = [span for piece in speech_pieces(audio.samples, use_vad=False) for span in piece]
    assert all(end == start for (_, end), (start, _) in pairwise(kept))  # every sample kept
    assert kept[-1][1] - kept[0][0] > audio.samples.size - 16_000  # but digital silence at the ends


def test_decoding_stops_when_the_work_is_cancelled(moonshine: MoonshineBackend, spoken: list[Audio]) -> None:
    """A stage timeout asks the running transcription to stop: it does, between decoder steps."""
    clip = joined(spoken)
    before = moonshine.tokens_decoded
    moonshine.transcribe(clip, ENGLISH)
    full = moonshine.tokens_decoded - before
    worker = ModelWorker("stt", 0, 0.05)

    async def run() -> int:
        with pytest.raises(StageTimeoutError):
            await worker.run(moonshine.transcribe, clip, ENGLISH)
        for _ in range(200):  # the running call stops at its next step
            if worker.pending == 0:
                break
            await asyncio.sleep(0.05)
        return worker.pending

    before = moonshine.tokens_decoded
    assert asyncio.run(run()) == 0
    worker.shutdown()
    assert moonshine.tokens_decoded - before < full / 2


def test_the_router_gives_moonshine_only_short_english_clips_it_can_serve(
    router: ShortClipRouter, spoken: list[Audio]
) -> None:
    short = spoken[0]
    long = Audio.silence(router.max_seconds + 0.5, 16_000)
    takes = router.moonshine_takes
    assert takes(short, ENGLISH) and takes(short, TranscribeOptions())  # tiny.en hears English only
    assert takes(short, TranscribeOptions(language="en", beam_size=1, vad_filter=False))
    assert not takes(long, ENGLISH)
    for refused in (
        {"word_timestamps": True},
        {"initial_prompt": "Kitchen."},
        {"hotwords": "kitchen"},
        {"beam_size": 5},
        {"temperature": 0.4},
        {"task": "translate"},
        {"language": "de"},
    ):
        assert not takes(short, dataclasses.replace(ENGLISH, **refused)), refused


def test_the_default_stt_sends_each_request_its_way(
    services: Services, router: ShortClipRouter, moonshine: MoonshineBackend, spoken: list[Audio]
) -> None:
    """Through the STT service, as the HTTP routes and the realtime partials reach it."""
    stt = services.stt

    def heard(audio: Audio, options: TranscribeOptions) -> tuple[Transcription, bool]:
        before = work(moonshine)
        result = asyncio.run(stt.transcribe_audio(audio, options))
        return result, work(moonshine) != before

    short, by_moonshine = heard(spoken[2], TranscribeOptions())  # a realtime partial or turn
    assert by_moonshine and word_error_rate(SENTENCES[2], short.text) <= 0.5
    long, by_moonshine = heard(joined(spoken), ENGLISH)  # past the bound: Whisper
    assert long.duration > router.max_seconds
    assert not by_moonshine and word_error_rate(" ".join(SENTENCES), long.text) <= 2 * MEAN_WER
    timed, by_moonshine = heard(spoken[2], TranscribeOptions(word_timestamps=True))
    assert not by_moonshine and len([w for s in timed.segments for w in s.words]) >= 6


def configured(**values: object) -> Settings:
    return Settings(_env_file=None, **values)


@pytest.mark.parametrize(
    ("values", "paired"),
    [
        ({"stt_device": "cpu"}, True),
        ({"stt_device": "cpu", "stt_model_name": "auto"}, True),
        ({"stt_device": "cpu", "stt_model_name": "whisper-tiny.en"}, False),  # tiny.en alone, as before
        ({"stt_device": "cpu", "stt_model_name": "base-multilingual"}, False),
        ({"stt_device": "cpu", "stt_model_name": "moonshine"}, False),  # Moonshine alone
        ({"stt_device": "cpu", "stt_engine": "faster-whisper"}, False),
        ({"stt_device": "cpu", "stt_moonshine_max_seconds": 0}, False),
        ({"stt_device": "cuda"}, False),
    ],
)
def test_which_settings_put_moonshine_in_front(values: dict[str, object], paired: bool) -> None:
    assert registry.pairs_moonshine(configured(**values)) is paired


def test_auto_gives_moonshine_the_short_clips_said_to_be_english(
    settings: Settings, spoken: list[Audio]
) -> None:
    chosen = configured(stt_model_name="auto", stt_device="cpu", models_dir=settings.storage.models_dir)
    loaded = registry.load_stt(chosen)
    assert isinstance(loaded, ShortClipRouter) and isinstance(loaded.whisper, ByLanguage)
    assert loaded.multilingual and loaded.moonshine_takes(spoken[0], ENGLISH)
    assert not loaded.moonshine_takes(spoken[0], TranscribeOptions())  # Whisper base identifies it
    assert not loaded.moonshine_takes(spoken[0], TranscribeOptions(language="de"))


def test_whisper_tiny_en_alone_is_the_old_default(settings: Settings) -> None:
    chosen = configured(stt_model_name="whisper-tiny.en", models_dir=settings.storage.models_dir)
    loaded = registry.load_stt(chosen)
    assert isinstance(loaded, WhisperBackend) and loaded.info.id == "whisper-tiny.en"


def test_the_conversion_is_made_once_and_kept(tmp_path: Path) -> None:
    """From the wheel's ORT files into MODELS_DIR: float weights only, checked against the
    originals (`moonshine_convert.check_same`), and a second call finds the finished copy."""
    import onnx

    directory = embedded.moonshine_base_dir(tmp_path)
    assert sorted(p.name for p in directory.iterdir()) == sorted(embedded.MOONSHINE_FILES)
    stamps = [(directory / name).stat().st_mtime_ns for name in embedded.MOONSHINE_FILES]
    assert embedded.moonshine_base_dir(tmp_path) == directory
    assert [(directory / name).stat().st_mtime_ns for name in embedded.MOONSHINE_FILES] == stamps
    for graph in moonshine_convert.GRAPHS:
        model = onnx.load(str(directory / f"{graph}.onnx"))
        assert {i.data_type for i in model.graph.initializer} <= {
            onnx.TensorProto.FLOAT,
            onnx.TensorProto.INT64,
        }
        assert not [n for n in model.graph.node if n.op_type == "Cast" and n.input[0].endswith("_quantized")]
