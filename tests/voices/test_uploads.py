"""Adding and removing voices: validation, the read-only VOICES_DIR fallback, conflicts."""

from __future__ import annotations

import asyncio
import io
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from backend.app.core.errors import ConflictError, ForbiddenError, InvalidAudioError, InvalidInputError
from backend.app.services.voices import VoiceService
from backend.app.voices import library as library_module
from backend.app.voices.library import VoiceLibrary
from tests.conftest import REPO, clip


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


def add(
    service: VoiceService, data: bytes, name: str = "Mei", language: str = "zh", gender: str = "woman"
) -> object:
    return asyncio.run(service.add(data, name, language, gender))


def test_upload_goes_to_a_writable_voices_dir(dirs: tuple[Path, Path]) -> None:
    voices, uploads = dirs
    library = VoiceLibrary(voices, upload_dir=uploads)
    info = add(VoiceService(library), clip("speech.m4a"), name="Mei")  # 3.3 s of speech
    assert info.path == (voices / "zh-Mei_woman.wav").resolve()  # type: ignore[attr-defined]
    assert [v.file for v in library.voices()] == ["en-Joe_man.wav", "zh-Mei_woman.wav"]
    stored, rate = sf.read(voices / "zh-Mei_woman.wav")
    assert rate == 44_100 and 3.2 < len(stored) / rate < 3.4  # re-encoded as WAV, native rate


def test_read_only_voices_dir_sends_uploads_to_data_dir(
    dirs: tuple[Path, Path], read_only_voices: None
) -> None:
    voices, uploads = dirs
    library = VoiceLibrary(voices, upload_dir=uploads)
    service = VoiceService(library)
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
    service = VoiceService(VoiceLibrary(dirs[0], upload_dir=dirs[1]))
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
        add(VoiceService(VoiceLibrary(dirs[0])), tone_wav(5), name, language, gender)


def test_unicode_names_are_fine(dirs: tuple[Path, Path]) -> None:
    library = VoiceLibrary(dirs[0])
    add(VoiceService(library), tone_wav(4), name="欣然", language="zh", gender="woman")
    assert library.by_name("欣然").file == "zh-欣然_woman.wav"


@pytest.mark.parametrize("data", [tone_wav(2.5), tone_wav(61), b"not audio", b""])
def test_clips_too_short_too_long_or_undecodable_are_refused(dirs: tuple[Path, Path], data: bytes) -> None:
    with pytest.raises(InvalidAudioError):
        add(VoiceService(VoiceLibrary(dirs[0])), data)
    assert [p.name for p in dirs[0].iterdir()] == ["en-Joe_man.wav"]  # nothing written


def test_headers_give_duration_and_rate(dirs: tuple[Path, Path]) -> None:
    joe = VoiceLibrary(dirs[0]).by_name("Joe")
    assert joe.header == (5.85, 22_050)
