"""Who speaks a script in which voice (the cast), and how the script is cut for synthesis.

- **Cast.** Each speaker of a script gets a voice: the one the request's `speakers` (or a stored
  cast) maps it to, else the next voice of the default cast. The default cast is the library's
  voices in order, the default voice first, each used once (a cloning engine), or the engine's own
  voices (a multi-speaker Piper model, `piper:<name>`). An engine with a single voice speaks every
  speaker in it, and says so (`Cast.shared_voice`). A cloning engine whose library has too few
  unused voices for the unmapped speakers is a 422: the script would otherwise put two speakers in
  one voice without anyone asking for it.
- **Pieces.** An engine that voices several speakers in one generation (VibeVoice) gets windows:
  whole turns, packed up to DIALOGUE_WINDOW_CHARS and at most its speaker limit per window; a turn
  is cut (at sentence boundaries) only when it alone is longer than a window. Any other engine
  speaks the script turn by turn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from backend.app.core.errors import AppError, InvalidInputError, NotFoundError
from backend.app.text.normalize import clean_for_speech
from backend.app.text.script import Script, check_label, speaker_key
from backend.app.text.segment import segment_text
from backend.app.voices.library import AUDIO_EXTENSIONS, VoiceInfo, VoiceLibrary

ENGINE_VOICE_PREFIX = "piper:"
"""How the library names an engine's own voices (a multi-speaker Piper model's speakers)."""
MAX_SPEAKERS = 32
"""Distinct speakers in one script, and entries in one `speakers` mapping or cast."""
MAX_VOICE_REF_CHARS = 512


@dataclass(frozen=True)
class CastMember:
    speaker: str
    """The speaker's key (`speaker_key`)."""
    label: str
    voice: VoiceInfo | None = None
    """The reference clip imitated (engines that clone)."""
    engine_voice: str | None = None
    """One of the engine's own voices (a multi-speaker Piper model)."""
    source: str = "default"
    """Where the voice came from: `speakers` (the request or cast mapped it) or `default`."""

    @property
    def applied(self) -> str:
        """The voice this speaker is heard in: a library file, `piper:<name>`, or `builtin`."""
        if self.voice is not None:
            return self.voice.file
        if self.engine_voice is not None:
            return ENGINE_VOICE_PREFIX + self.engine_voice
        return "builtin"


@dataclass(frozen=True)
class Cast:
    members: dict[str, CastMember]
    """By speaker key, in order of first appearance."""

    @property
    def shared_voice(self) -> bool:
        """True when every speaker of a script with several is heard in one voice."""
        return len(self.members) > 1 and len({m.applied for m in self.members.values()}) == 1


@dataclass(frozen=True)
class VoiceRef:
    """A voice a client named: a library clip, or one of the engine's own voices."""

    clip: VoiceInfo | None = None
    engine_voice: str | None = None


def check_mapping(speakers: Mapping[str, str]) -> dict[str, str]:
    """`speakers` keyed by speaker key; 422 for bad labels, empty values or too many entries."""
    if len(speakers) > MAX_SPEAKERS:
        raise InvalidInputError(f"speakers maps {len(speakers)} speakers; the limit is {MAX_SPEAKERS}")
    checked: dict[str, str] = {}
    for label, value in speakers.items():
        key = speaker_key(check_label(label))
        if not value.strip():
            raise InvalidInputError(f"speakers[{label!r}] is empty; give a voice name or a voice file")
        if len(value) > MAX_VOICE_REF_CHARS:
            raise InvalidInputError(f"speakers[{label!r}] is longer than {MAX_VOICE_REF_CHARS} characters")
        checked[key] = value.strip()
    return checked


def resolve_voice(
    library: VoiceLibrary, engine_voices: Sequence[str], value: str, label: str | None = None
) -> VoiceRef:
    """A voice by name (`voice` rules), by file or path inside the voices dirs (`speaker_voice_path`
    rules: 400 outside them), or `piper:<name>` for one of the engine's own voices (404 unknown).
    An error names the speaker `label` it was for."""
    try:
        return _resolve_voice(library, engine_voices, value)
    except AppError as e:
        if label is not None:
            e.message = f"speakers[{label!r}]: {e.message.replace('speaker_voice_path ', 'the voice path ')}"
        raise


def engine_voice_name(value: str | None, engine_voices: Sequence[str]) -> str | None:
    """The engine voice `value` names (`piper:<name>`), None for any other name; 404 unknown."""
    if not value or not value.startswith(ENGINE_VOICE_PREFIX):
        return None
    name = value[len(ENGINE_VOICE_PREFIX) :]
    if name not in engine_voices:
        raise NotFoundError(f"unknown voice {value!r}; GET /voices lists the voices")
    return name


def default_order(library: VoiceLibrary, listed: list[VoiceInfo]) -> list[VoiceInfo]:
    """The library's voices as the default cast takes them: the default voice first."""
    default = library.default_among(listed)
    return ([default] if default else []) + [v for v in listed if v is not default]


def _resolve_voice(library: VoiceLibrary, engine_voices: Sequence[str], value: str) -> VoiceRef:
    name = engine_voice_name(value, engine_voices)
    if name is not None:
        return VoiceRef(engine_voice=name)
    if "/" in value or "\\" in value or value.lower().endswith(AUDIO_EXTENSIONS):
        return VoiceRef(clip=library.by_path(value))
    return VoiceRef(clip=library.by_name(value))


def choose_cast(
    script: Script,
    mapping: Mapping[str, str],
    library: VoiceLibrary,
    *,
    clones: bool,
    engine_voices: Sequence[str],
) -> Cast:
    """Every speaker of `script` with its voice (see the module docstring). Blocking (lists files)."""
    speakers = script.speakers
    if len(speakers) > MAX_SPEAKERS:
        raise InvalidInputError(f"the script has {len(speakers)} speakers; the limit is {MAX_SPEAKERS}")
    checked = check_mapping(mapping)
    listed = library.voices()
    members: dict[str, CastMember] = {}
    labels = {speaker_key(label): label for label in mapping}
    for key, value in checked.items():
        ref = resolve_voice(library, engine_voices, value, labels[key])
        if key in speakers:
            clip = ref.clip if clones else None  # a fixed-voice engine cannot imitate a clip
            members[key] = CastMember(key, script.label(key), clip, ref.engine_voice, "speakers")
        # A mapping may name speakers this script does not have (a cast); each is still checked.
    unmapped = [key for key in speakers if key not in members]
    if clones:
        used = {m.voice.file for m in members.values() if m.voice is not None}
        free = [v for v in default_order(library, listed) if v.file not in used]
        if len(free) < len(unmapped):
            raise InvalidInputError(
                f"the script has {len(unmapped)} speaker(s) without a voice in `speakers` "
                f"({', '.join(script.label(k) for k in unmapped)}) and the library has "
                f"{len(free)} unused voice(s) left for them; map each speaker to a voice"
            )
        for key, voice in zip(unmapped, free, strict=False):
            members[key] = CastMember(key, script.label(key), voice=voice)
    elif engine_voices:
        used_names = {m.engine_voice for m in members.values()}
        # Unused voices first; only a script with more speakers than the engine has voices repeats one.
        ordered_names = [v for v in engine_voices if v not in used_names] or list(engine_voices)
        for i, key in enumerate(unmapped):
            name = ordered_names[i % len(ordered_names)]
            members[key] = CastMember(key, script.label(key), engine_voice=name)
    else:
        for key in unmapped:
            members[key] = CastMember(key, script.label(key))
    return Cast({key: members[key] for key in speakers})


@dataclass(frozen=True)
class WindowTurn:
    """A turn (or, for a turn longer than a window, a part of it) inside a window."""

    turn: int
    speaker: str
    text: str


def turn_texts(script: Script, max_chars: int) -> list[WindowTurn]:
    """The script's turns, cleaned for speech, each on one line; a turn longer than `max_chars`
    is cut at sentence boundaries into parts of at most `max_chars`."""
    parts = []
    for i, turn in enumerate(script.turns):
        cleaned = " ".join(clean_for_speech(turn.text).split())
        for part in segment_text(cleaned, max_chars):
            parts.append(WindowTurn(i, turn.speaker, part))
    return parts


def windows(parts: Sequence[WindowTurn], max_chars: int, max_speakers: int) -> list[tuple[WindowTurn, ...]]:
    """Consecutive parts packed into windows of at most `max_chars` characters and `max_speakers`
    distinct speakers; a window closes before a part that would pass either."""
    packed: list[tuple[WindowTurn, ...]] = []
    current: list[WindowTurn] = []
    chars = 0
    for part in parts:
        speakers = {p.speaker for p in current} | {part.speaker}
        if current and (chars + len(part.text) > max_chars or len(speakers) > max_speakers):
            packed.append(tuple(current))
            current, chars = [], 0
        current.append(part)
        chars += len(part.text)
    if current:
        packed.append(tuple(current))
    return packed
