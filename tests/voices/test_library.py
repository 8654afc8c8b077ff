from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from backend.app.core.errors import BadRequestError, NotFoundError
from backend.app.voices.cache import SpeakerCache
from backend.app.voices.library import VoiceLibrary, parse_voice_name


@pytest.fixture
def library(tmp_path: Path) -> VoiceLibrary:
    voices = tmp_path / "voices"
    voices.mkdir()
    for name in ("zh-Xinran_woman.wav", "en-Alice_woman.flac", "odd name.mp3", "notes.txt"):
        (voices / name).write_bytes(b"RIFF")
    (tmp_path / "secret.wav").write_bytes(b"RIFF")
    os.symlink(tmp_path / "secret.wav", voices / "en-Escape_man.wav")
    return VoiceLibrary(voices)


def test_names_are_parsed() -> None:
    assert parse_voice_name("zh-Xinran_woman.wav") == ("Xinran", "zh", "woman")
    assert parse_voice_name("en-Mary_Ann_woman.wav") == ("Mary_Ann", "en", "woman")
    assert parse_voice_name("pt-br-Ana_woman.wav") == ("Ana", "pt-br", "woman")
    assert parse_voice_name("random.wav") == ("random", None, None)


def test_listing_skips_non_audio_and_symlinks_out(library: VoiceLibrary) -> None:
    files = [v.file for v in library.voices()]
    assert files == ["en-Alice_woman.flac", "odd name.mp3", "zh-Xinran_woman.wav"]


def test_default_is_first_or_configured(library: VoiceLibrary) -> None:
    assert library.default is not None and library.default.file == "en-Alice_woman.flac"
    chosen = VoiceLibrary(library.root, "zh-Xinran_woman.wav").default
    assert chosen is not None and chosen.file == "zh-Xinran_woman.wav"
    assert VoiceLibrary(library.root / "missing").default is None


def test_by_name_matches_file_stem_or_name(library: VoiceLibrary) -> None:
    for query in ("xinran", "zh-Xinran_woman", "zh-Xinran_woman.wav"):
        assert library.by_name(query).file == "zh-Xinran_woman.wav"
    with pytest.raises(NotFoundError, match="/voices"):
        library.by_name("nobody")


def test_by_path_accepts_names_and_paths_inside(library: VoiceLibrary) -> None:
    assert library.by_path("zh-Xinran_woman.wav").language == "zh"
    assert library.by_path(str(library.root / "zh-Xinran_woman.wav")).name == "Xinran"
    assert library.by_path("./sub/../zh-Xinran_woman.wav").name == "Xinran"


@pytest.mark.parametrize(
    "path", ["../secret.wav", "../../etc/passwd", "/etc/passwd", "en-Escape_man.wav", "", "a\x00.wav"]
)
def test_by_path_refuses_anything_outside(library: VoiceLibrary, path: str) -> None:
    with pytest.raises(BadRequestError):
        library.by_path(path)


def test_by_path_unknown_inside_is_404_and_non_audio_is_400(library: VoiceLibrary) -> None:
    with pytest.raises(NotFoundError):
        library.by_path("en-Nobody_man.wav")
    with pytest.raises(BadRequestError):
        library.by_path("notes.txt")


def test_cache_is_lru_keyed_by_content() -> None:
    cache: SpeakerCache[int] = SpeakerCache(2)
    calls: list[bytes] = []

    def create(data: bytes) -> int:
        calls.append(data)
        return len(data)

    assert cache.get_or_create(b"a", create) == 1
    assert cache.get_or_create(b"a", create) == 1  # hit
    cache.get_or_create(b"bb", create)
    cache.get_or_create(b"a", create)  # hit; "bb" is now the oldest
    cache.get_or_create(b"ccc", create)  # evicts "bb"
    cache.get_or_create(b"bb", create)  # miss again
    stats = cache.stats()
    assert (stats.size, stats.hits, stats.misses, stats.evictions) == (2, 2, 4, 2)
    assert calls == [b"a", b"bb", b"ccc", b"bb"]


def test_cache_of_size_zero_never_stores() -> None:
    cache: SpeakerCache[int] = SpeakerCache(0)
    cache.get_or_create(b"a", len)
    cache.get_or_create(b"a", len)
    assert cache.stats().hits == 0 and cache.stats().size == 0


def test_cache_is_thread_safe() -> None:
    cache: SpeakerCache[int] = SpeakerCache(8)
    keys = [bytes([i]) * 4 for i in range(16)]

    def hammer() -> None:
        for _ in range(200):
            for key in keys:
                assert cache.get_or_create(key, len) == 4

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = cache.stats()
    assert stats.size == 8
    assert stats.hits + stats.misses == 4 * 200 * 16
