"""Adding and removing voices: validation, the read-only VOICES_DIR fallback, conflicts."""

from __future__ import annotations

import asyncio
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from backend.app.core.config import VoicesSettings
from backend.app.core.errors import (
    ConflictError,
    ForbiddenError,
    InvalidAudioError,
    InvalidInputError,
    PayloadTooLargeError,
)
from backend.app.core.worker import ModelWorker
from backend.app.services.voices import VoiceService
from backend.app.voices import library as library_module
from backend.app.voices.library import VoiceLibrary
from tests.conftest import REPO, clip

PIPER_RATE = 22_050


def tone_wav(seconds: float, rate: int = 16_000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    buffer = io.BytesIO()
    sf.write(buffer, (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), rate, format="WAV")
    return buffer.getvalue()


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    voices, uploads = tmp_path / "voices", tmp_path / "data" / "voices"
    voices.mkdir()
    (voices / "en-Joe_man.wav").write_bytes((REPO / "voices" / "en-Joe_man.wav").read_bytes())
    return voices, uploads


@pytest.fixture
def read_only_voices(dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """VOICES_DIR behaves as a read-only mount (root ignores chmod, so the check is forced)."""
    voices = dirs[0].resolve()
    real_access = os.access

    def access(path: object, mode: int) -> bool:
        if mode == os.W_OK and Path(str(path)).resolve() == voices:
            return False
        return real_access(path, mode)  # type: ignore[arg-type]

    monkeypatch.setattr(library_module.os, "access", access)


def voice_service(library: VoiceLibrary, **limits: Any) -> VoiceService:
    """The service as the server builds it: decoding on a TTS worker, stored at Piper's rate."""
    if "max_bytes" in limits:
        limits["max_mb"] = limits.pop("max_bytes") / 1024 / 1024
    return VoiceService(library, ModelWorker("tts", 1), PIPER_RATE, VoicesSettings(**limits))


def add(
    service: VoiceService, data: bytes, name: str = "Mei", language: str = "zh", gender: str = "woman"
) -> object:
    return asyncio.run(service.add(data, name, language, gender))


def test_upload_goes_to_a_writable_voices_dir(dirs: tuple[Path, Path]) -> None:
    voices, uploads = dirs
    library = VoiceLibrary(voices, upload_dir=uploads)
    info = add(voice_service(library), clip("speech.m4a"), name="Mei")  # 3.3 s of speech
    assert info.path == (voices / "zh-Mei_woman.wav").resolve()  # type: ignore[attr-defined]
    assert [v.file for v in library.voices()] == ["en-Joe_man.wav", "zh-Mei_woman.wav"]
    stored, rate = sf.read(voices / "zh-Mei_woman.wav")
    # Re-encoded as WAV at the engine's rate (the upload was 44.1 kHz AAC).
    assert rate == PIPER_RATE and 3.2 < len(stored) / rate < 3.4


def test_read_only_voices_dir_sends_uploads_to_data_dir(
    dirs: tuple[Path, Path], read_only_voices: None
) -> None:
    voices, uploads = dirs
    library = VoiceLibrary(voices, upload_dir=uploads)
    service = voice_service(library)
    add(service, tone_wav(5))
    assert (uploads / "zh-Mei_woman.wav").is_file() and not (voices / "zh-Mei_woman.wav").exists()
    listed = {v.file: v for v in library.voices()}
    assert set(listed) == {"en-Joe_man.wav", "zh-Mei_woman.wav"}
    assert not listed["en-Joe_man.wav"].deletable and listed["zh-Mei_woman.wav"].deletable
    # Both directories resolve for requests, by name and by file name.
    assert library.by_path("zh-Mei_woman.wav").path == (uploads / "zh-Mei_woman.wav").resolve()
    assert library.by_name("mei").file == "zh-Mei_woman.wav"
    with pytest.raises(ForbiddenError):
        asyncio.run(service.remove("Joe"))
    asyncio.run(service.remove("Mei"))
    assert not (uploads / "zh-Mei_woman.wav").exists()


def test_a_taken_name_is_a_conflict(dirs: tuple[Path, Path]) -> None:
    service = voice_service(VoiceLibrary(dirs[0], upload_dir=dirs[1]))
    with pytest.raises(ConflictError):
        add(service, tone_wav(5), name="joe", language="en", gender="man")


@pytest.mark.parametrize(
    ("name", "language", "gender"),
    [
        ("", "en", "man"),
        ("a b", "en", "man"),
        ("../x", "en", "man"),
        ("Joe_2", "en", "man"),
        ("x" * 41, "en", "man"),
        ("Ann", "english", "woman"),
        ("Ann", "e1", "woman"),
        ("Ann", "en", "wo man"),
        ("Ann", "en", ""),
    ],
)
def test_fields_that_would_not_make_a_safe_name_are_refused(
    dirs: tuple[Path, Path], name: str, language: str, gender: str
) -> None:
    with pytest.raises(InvalidInputError):
        add(voice_service(VoiceLibrary(dirs[0])), tone_wav(5), name, language, gender)


def test_unicode_names_are_fine(dirs: tuple[Path, Path]) -> None:
    library = VoiceLibrary(dirs[0])
    add(voice_service(library), tone_wav(4), name="欣然", language="zh", gender="woman")
    assert library.by_name("欣然").file == "zh-欣然_woman.wav"


@pytest.mark.parametrize("data", [tone_wav(2.5), tone_wav(61), b"not audio", b""])
def test_clips_too_short_too_long_or_undecodable_are_refused(dirs: tuple[Path, Path], data: bytes) -> None:
    with pytest.raises(InvalidAudioError):
        add(voice_service(VoiceLibrary(dirs[0])), data)
    assert [p.name for p in dirs[0].iterdir()] == ["en-Joe_man.wav"]  # nothing written


def test_headers_give_duration_and_rate(dirs: tuple[Path, Path]) -> None:
    joe = VoiceLibrary(dirs[0]).by_name("Joe")
    assert joe.header == (5.85, 22_050)


def test_a_silent_clip_is_not_a_voice(dirs: tuple[Path, Path]) -> None:
    silence = io.BytesIO()
    sf.write(silence, np.zeros(16_000 * 5, dtype=np.float32), 16_000, format="WAV")
    hiss = io.BytesIO()  # -60 dBFS noise: silence to a listener
    sf.write(
        hiss, np.random.default_rng(0).normal(0, 0.001, 16_000 * 5).astype(np.float32), 16_000, format="WAV"
    )
    for data in (silence.getvalue(), hiss.getvalue()):
        with pytest.raises(InvalidAudioError, match="silent"):
            add(voice_service(VoiceLibrary(dirs[0])), data)
    assert [p.name for p in dirs[0].iterdir()] == ["en-Joe_man.wav"]


def test_a_high_rate_upload_is_stored_at_the_engine_rate(dirs: tuple[Path, Path]) -> None:
    """A small FLAC of a constant tone at 384 kHz would be a 45 MB WAV at its own rate."""
    flac = io.BytesIO()
    t = np.arange(384_000 * 30) / 384_000
    sf.write(flac, (0.3 * np.sign(np.sin(2 * np.pi * 200 * t))).astype(np.float32), 384_000, format="FLAC")
    info = add(voice_service(VoiceLibrary(dirs[0])), flac.getvalue())
    stored = sf.info(str(info.path))  # type: ignore[attr-defined]
    assert stored.samplerate == PIPER_RATE and abs(stored.duration - 30) < 0.01
    assert info.path.stat().st_size < 30 * PIPER_RATE * 2 + 1000  # type: ignore[attr-defined]


def test_the_library_is_capped_in_voices_and_bytes(dirs: tuple[Path, Path]) -> None:
    library = VoiceLibrary(dirs[0])
    with pytest.raises(ConflictError, match="VOICES_MAX_COUNT"):
        add(voice_service(library, max_count=1), tone_wav(4))
    joe = (dirs[0] / "en-Joe_man.wav").stat().st_size
    with pytest.raises(PayloadTooLargeError, match="VOICES_MAX_MB"):
        add(voice_service(library, max_bytes=joe + 4 * PIPER_RATE), tone_wav(4))  # 4 s is 2 bytes/sample
    add(voice_service(library, max_count=2, max_bytes=joe + 4 * PIPER_RATE * 2 + 100), tone_wav(4))
    assert len(library.voices()) == 2


@pytest.mark.parametrize("lookalike", ["Ｊｏｅ", "Јое", "JOE", "Jοe"])  # full-width, Cyrillic, case, Greek
def test_names_that_only_look_like_a_voice_are_that_voice(dirs: tuple[Path, Path], lookalike: str) -> None:
    with pytest.raises(ConflictError):
        add(voice_service(VoiceLibrary(dirs[0])), tone_wav(4), name=lookalike, language="en", gender="man")


def test_a_clip_just_under_the_minimum_says_so(dirs: tuple[Path, Path]) -> None:
    with pytest.raises(InvalidAudioError, match=r"2\.99 s"):
        add(voice_service(VoiceLibrary(dirs[0])), tone_wav(2.995))
