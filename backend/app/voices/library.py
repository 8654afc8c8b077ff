"""The speaker library: reference clips in VOICES_DIR, their names, and safe path resolution.

A client names a voice; it never gets the server to open a file of its choosing. Every path is
resolved (symlinks followed, without opening anything) and must land inside VOICES_DIR.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from backend.app.core.errors import BadRequestError, NotFoundError

AUDIO_EXTENSIONS = (".wav", ".mp3", ".flac")
_NAME_RE = re.compile(
    r"^(?P<language>[A-Za-z]{2,3}(?:[-_][A-Za-z]{2,4})?)-(?P<name>.+)_(?P<gender>[A-Za-z]+)$"
)


@dataclass(frozen=True)
class VoiceInfo:
    """A reference clip, its name parsed from `{lang}-{name}_{gender}.{ext}`."""

    file: str
    name: str
    language: str | None
    gender: str | None
    path: Path


def parse_voice_name(file_name: str) -> tuple[str, str | None, str | None]:
    """`zh-Xinran_woman.wav` -> ("Xinran", "zh", "woman"); unparsable names keep their stem."""
    stem = Path(file_name).stem
    match = _NAME_RE.match(stem)
    if not match:
        return stem, None, None
    return match["name"], match["language"].lower(), match["gender"].lower()


class VoiceLibrary:
    """Lists and resolves the voices in one directory."""

    def __init__(self, voices_dir: Path, default_voice: str = "") -> None:
        self.root = voices_dir.resolve()
        self._default = default_voice

    def voices(self) -> list[VoiceInfo]:
        if not self.root.is_dir():
            return []
        voices = []
        for path in sorted(self.root.iterdir()):
            if path.suffix.lower() in AUDIO_EXTENSIONS and path.is_file() and self._inside(path):
                name, language, gender = parse_voice_name(path.name)
                voices.append(VoiceInfo(path.name, name, language, gender, path))
        return voices

    @property
    def default(self) -> VoiceInfo | None:
        """DEFAULT_VOICE when it exists, else the first voice found."""
        voices = self.voices()
        if self._default:
            chosen = next((v for v in voices if v.file == self._default), None)
            if chosen:
                return chosen
        return voices[0] if voices else None

    def _inside(self, path: Path) -> bool:
        return path.resolve().is_relative_to(self.root)

    def by_name(self, voice: str) -> VoiceInfo:
        """A voice by file name, stem, or parsed name (case-insensitive)."""
        wanted = voice.strip().lower()
        for info in self.voices():
            if wanted in (info.file.lower(), Path(info.file).stem.lower(), info.name.lower()):
                return info
        raise NotFoundError(f"unknown voice {voice!r}; GET /speaker_info lists the voices")

    def by_path(self, speaker_voice_path: str) -> VoiceInfo:
        """A voice by file name or by a path that resolves inside VOICES_DIR; 400 otherwise."""
        if not speaker_voice_path or "\x00" in speaker_voice_path:
            raise BadRequestError("speaker_voice_path is empty or invalid")
        candidate = Path(speaker_voice_path)
        if not candidate.is_absolute():
            candidate = self.root / candidate
        resolved = candidate.resolve()
        if not resolved.is_relative_to(self.root):
            raise BadRequestError("speaker_voice_path must name a voice inside the voices directory")
        if resolved.suffix.lower() not in AUDIO_EXTENSIONS:
            raise BadRequestError(f"speaker_voice_path must be an audio file ({', '.join(AUDIO_EXTENSIONS)})")
        if not resolved.is_file():
            raise NotFoundError(f"no voice file {resolved.name!r}; GET /speaker_info lists the voices")
        name, language, gender = parse_voice_name(resolved.name)
        return VoiceInfo(resolved.name, name, language, gender, resolved)
