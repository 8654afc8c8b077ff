"""The speaker library: reference clips, their names, safe path resolution, uploads and deletion.

Voices live in VOICES_DIR and, for uploads when VOICES_DIR is read-only (a container mounts it
`:ro`), in DATA_DIR/voices; both are listed. A client names a voice; it never gets the server to
open a file of its choosing. Every path is resolved (symlinks followed, without opening anything)
and must land inside one of the voice directories.
"""

from __future__ import annotations

import os
import re
import threading
import unicodedata
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from backend.app.core.errors import (
    BadRequestError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    storage_error,
)
from backend.app.core.paths import PathOutsideError, is_inside, resolve_inside

AUDIO_EXTENSIONS = (".wav", ".mp3", ".flac")
_NAME_RE = re.compile(r"(?P<language>[A-Za-z]{2,3}(?:[-_][A-Za-z]{2,4})?)-(?P<name>.+)_(?P<gender>[A-Za-z]+)")


@dataclass(frozen=True)
class VoiceInfo:
    """A reference clip, its name parsed from `{lang}-{name}_{gender}.{ext}`."""

    file: str
    name: str
    language: str | None
    gender: str | None
    path: Path
    deletable: bool = False
    """True when the clip's directory is writable (DELETE /voices/{name} can remove it)."""

    @property
    def size(self) -> int:
        """The file's size in bytes (0 when it is gone)."""
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    @property
    def header(self) -> tuple[float | None, int | None]:
        """Duration (s) and sample rate read from the file header; None when unreadable."""
        try:
            info = sf.info(str(self.path))
        except (sf.LibsndfileError, RuntimeError, OSError):
            return None, None
        return round(float(info.duration), 2), int(info.samplerate)


def parse_voice_name(file_name: str) -> tuple[str, str | None, str | None]:
    """`zh-Xinran_woman.wav` -> ("Xinran", "zh", "woman"); unparsable names keep their stem."""
    stem = Path(file_name).stem
    match = _NAME_RE.fullmatch(stem)
    if not match:
        return stem, None, None
    return match["name"], match["language"].lower(), match["gender"].lower()


def name_key(name: str) -> str:
    """What a voice name looks like: NFKC (full-width letters are the ASCII ones), case-folded, and
    each letter that has a Latin look-alike (Cyrillic `о`, Greek `ο`) replaced by it. Two names
    with one key cannot be told apart by a person, so the library holds one of them only."""
    from confusable_homoglyphs import confusables

    folded = unicodedata.normalize("NFKC", name).casefold()
    lookalikes = confusables.is_confusable(folded, greedy=True, preferred_aliases=["latin"]) or []
    swaps = {hit["character"]: hit["homoglyphs"][0]["c"] for hit in lookalikes if hit["homoglyphs"]}
    return "".join(swaps.get(c, c) for c in folded).casefold()


def _writable(directory: Path) -> bool:
    return directory.is_dir() and os.access(directory, os.W_OK)


class VoiceLibrary:
    """Lists, resolves, adds and removes the voices of VOICES_DIR (+ an upload dir)."""

    def __init__(self, voices_dir: Path, default_voice: str = "", upload_dir: Path | None = None) -> None:
        self.root = voices_dir.resolve()
        self._default = default_voice
        self._upload_fallback = upload_dir.resolve() if upload_dir else None
        self._lock = threading.Lock()

    @property
    def roots(self) -> list[Path]:
        """The directories voices are read from: VOICES_DIR first."""
        roots = [self.root]
        if self._upload_fallback and self._upload_fallback != self.root:
            roots.append(self._upload_fallback)
        return roots

    @property
    def upload_dir(self) -> Path:
        """Where new voices go: VOICES_DIR when writable, else the upload directory (created)."""
        if _writable(self.root) or self._upload_fallback is None:
            return self.root
        self._upload_fallback.mkdir(parents=True, exist_ok=True)
        return self._upload_fallback

    def _info(self, path: Path, root: Path) -> VoiceInfo:
        name, language, gender = parse_voice_name(path.name)
        return VoiceInfo(path.name, name, language, gender, path, _writable(root))

    def voices(self) -> list[VoiceInfo]:
        found: dict[str, VoiceInfo] = {}
        for root in self.roots:
            if not root.is_dir():
                continue
            for path in sorted(root.iterdir()):
                if (
                    path.suffix.lower() in AUDIO_EXTENSIONS
                    and path.name not in found
                    and path.is_file()
                    and is_inside(path, root)
                ):
                    found[path.name] = self._info(path, root)
        return list(found.values())

    @property
    def default(self) -> VoiceInfo | None:
        """DEFAULT_VOICE when it exists, else the first voice found."""
        return self.default_among(self.voices())

    def default_among(self, voices: list[VoiceInfo]) -> VoiceInfo | None:
        """The default voice of an already listed set (saves listing the directories twice)."""
        if self._default:
            chosen = next((v for v in voices if v.file == self._default), None)
            if chosen:
                return chosen
        return voices[0] if voices else None

    def by_name(self, voice: str, voices: list[VoiceInfo] | None = None) -> VoiceInfo:
        """A voice by file name, stem, or parsed name (case-insensitive), among `voices` when
        already listed (else the directories are listed now)."""
        wanted = voice.strip().lower()
        for info in self.voices() if voices is None else voices:
            if wanted in (info.file.lower(), Path(info.file).stem.lower(), info.name.lower()):
                return info
        raise NotFoundError(f"unknown voice {voice!r}; GET /voices lists the voices")

    def by_path(self, speaker_voice_path: str) -> VoiceInfo:
        """A voice by file name or by a path that resolves inside a voices dir; 400 otherwise."""
        try:
            resolved, root = resolve_inside(self.roots, speaker_voice_path, "speaker_voice_path")
        except PathOutsideError as e:
            e.message = f"{e.message}: it must name a voice inside the voices directory"
            raise
        if resolved.suffix.lower() not in AUDIO_EXTENSIONS:
            raise BadRequestError(f"speaker_voice_path must be an audio file ({', '.join(AUDIO_EXTENSIONS)})")
        if not resolved.is_file():
            raise NotFoundError(f"no voice file {resolved.name!r}; GET /voices lists the voices")
        return self._info(resolved, root)

    def add(
        self,
        language: str,
        name: str,
        gender: str,
        wav: bytes,
        check: Callable[[list[VoiceInfo]], None] | None = None,
    ) -> VoiceInfo:
        """Store a WAV clip as `{language}-{name}_{gender}.wav`; 409 when the name is taken.

        The caller validates the fields (they become a file name) and the audio; `check` sees the
        voices under the library's lock (to refuse a library that is full) before anything is written.
        """
        file_name = f"{language}-{name}_{gender}.wav"
        with self._lock:
            voices = self.voices()
            if check is not None:
                check(voices)
            key = name_key(name)
            for existing in voices:
                if name_key(existing.name) == key or existing.file == file_name:
                    raise ConflictError(
                        f"a voice named {existing.name!r} exists ({existing.file}); delete it first"
                    )
            directory = self.upload_dir
            if not _writable(directory):
                raise ForbiddenError(
                    "no writable voices directory (VOICES_DIR is read-only and DATA_DIR is not set)"
                )
            tmp = directory / f".{uuid.uuid4().hex}.part"
            try:
                tmp.write_bytes(wav)
                os.replace(tmp, directory / file_name)
            except OSError as e:
                tmp.unlink(missing_ok=True)
                raise storage_error(e, "the voice") from e
        return self._info(directory / file_name, directory)

    def remove(self, voice: str) -> VoiceInfo:
        """Delete a voice by name; voices in a read-only directory cannot be deleted (403)."""
        info = self.by_name(voice)
        if not info.deletable or not _writable(info.path.parent):
            raise ForbiddenError(f"{info.file} is in a read-only voices directory and cannot be deleted")
        with self._lock:
            info.path.unlink(missing_ok=True)
        return info
