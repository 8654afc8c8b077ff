"""Dialogue scripts: who says what, in order.

A script comes either as text in VibeVoice's own layout, one turn per labelled line:

    Speaker 1: Welcome back to the show.
    Speaker 2: Thanks, it's good to be here.
    Alice：你好。          (a full-width colon, for Chinese)

or as items `[{"speaker": "Alice", "text": "..."}]`. Labels are `Speaker <n>` or a name (up to six
words, no sentence punctuation); an ASCII colon must be followed by a space or the line's end, so
`10:30` and `http://` never start a turn.

When text is a script (`parse_script` with `dialogue=None`): some line carries a `Speaker <n>`
label, or a label that names a speaker the request maps to a voice, or at least two lines carry
labels. Anything else is plain text and is spoken as it always was. Inside a script, a line
without a label continues the turn above it; text before the first label is spoken by the
script's first speaker; blank lines only separate; turns with nothing speakable are dropped.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from backend.app.core.errors import InvalidInputError
from backend.app.text.normalize import clean_for_speech, has_speakable_content

MAX_LABEL_CHARS = 64
"""The longest speaker label (a name or `Speaker <n>`)."""
MAX_LABEL_WORDS = 6

_LABELLED = re.compile(r"^[ \t]*(?P<label>[^:：\n]+?)[ \t]*(?:：|:(?=[ \t]|$))[ \t]*(?P<rest>.*)$")
_NUMBERED = re.compile(r"speaker[ \t_-]*(?P<n>\d{1,6})", re.IGNORECASE)
_NOT_IN_LABELS = set('!?。！？;；,，"“”«»「」『』()（）[]{}<>')
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class ScriptTurn:
    speaker: str
    """The speaker's key (`speaker_key` of the label)."""
    label: str
    """The label as first written for this speaker, e.g. `Speaker 1`, `Alice`."""
    text: str


@dataclass(frozen=True)
class Script:
    turns: tuple[ScriptTurn, ...]

    @property
    def speakers(self) -> list[str]:
        """The speakers' keys in order of first appearance."""
        return list(dict.fromkeys(turn.speaker for turn in self.turns))

    def label(self, speaker: str) -> str:
        return next(turn.label for turn in self.turns if turn.speaker == speaker)

    @property
    def chars(self) -> int:
        return sum(len(turn.text) for turn in self.turns)


def speaker_key(label: str) -> str:
    """How a label is compared: `Speaker 01`, `speaker 1` and `1` are all `1`; a name is compared
    NFKC-normalised, case-folded, with its spaces collapsed (`ＡＬＩＣＥ` is `alice`)."""
    text = _SPACES.sub(" ", unicodedata.normalize("NFKC", label)).strip()
    numbered = _NUMBERED.fullmatch(text)
    if numbered:
        return str(int(numbered["n"]))
    if text.isdigit():
        return str(int(text))
    return text.casefold()


def check_label(label: str) -> str:
    """A label fit to name a speaker (stripped); 422 when empty, multi-line or too long."""
    text = label.strip()
    if not text:
        raise InvalidInputError("a speaker label is empty")
    if "\n" in text or "\r" in text:
        raise InvalidInputError("a speaker label must be on one line")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn") for ch in text):
        raise InvalidInputError("a speaker label must not hold control or unassigned characters")
    if len(text) > MAX_LABEL_CHARS:
        raise InvalidInputError(
            f"the speaker label {text[:24]!r}... is {len(text)} characters; the limit is {MAX_LABEL_CHARS}"
        )
    return text


def _label_of(line: str) -> tuple[str, str] | None:
    """(label, rest) when `line` starts with something shaped like a speaker label."""
    match = _LABELLED.match(line)
    if not match:
        return None
    label = match["label"].strip()
    if _NUMBERED.fullmatch(label):
        return label, match["rest"]
    if (
        not any(unicodedata.category(ch)[0] == "L" for ch in label)
        or any(ch in _NOT_IN_LABELS for ch in label)
        or label.endswith(".")
        or len(label.split()) > MAX_LABEL_WORDS
    ):
        return None
    return label, match["rest"]


def parse_script(text: str, known: Collection[str] = (), dialogue: bool | None = None) -> Script | None:
    """The script `text` holds, or None for plain text (see the module docstring).

    `known` are speaker keys the request maps to voices. `dialogue=True` requires a script (422
    when no line is labelled); `dialogue=False` reads any text as plain."""
    if dialogue is False:
        return None
    lines = text.splitlines()
    labelled = [(i, found) for i, line in enumerate(lines) if (found := _label_of(line))]
    keys = {speaker_key(label) for _, (label, _) in labelled}
    is_script = (
        len(labelled) >= 2
        or any(_NUMBERED.fullmatch(label) for _, (label, _) in labelled)
        or bool(keys & set(known))
        or (bool(dialogue) and bool(labelled))
    )
    if not is_script:
        if dialogue:
            raise InvalidInputError(
                "dialogue is true but no line starts with a speaker label such as 'Speaker 1:' or 'Alice:'"
            )
        return None
    starts = dict(labelled)
    turns: list[tuple[str, list[str]]] = []
    leading: list[str] = []
    for i, line in enumerate(lines):
        if i in starts:
            label, rest = starts[i]
            turns.append((check_label(label), [rest]))
        elif turns:
            turns[-1][1].append(line)
        else:
            leading.append(line)
    if leading and turns:
        label, first = turns[0]
        turns[0] = (label, [*leading, *first])
    return script_of([(label, "\n".join(parts)) for label, parts in turns])


def script_of(items: Sequence[tuple[str, str]]) -> Script:
    """A script from (label, text) pairs, turns with nothing speakable dropped; 422 when none is left."""
    labels: dict[str, str] = {}
    turns = []
    for label, text in items:
        label = check_label(label)
        key = speaker_key(label)
        labels.setdefault(key, label)
        spoken = clean_for_speech(text)
        if has_speakable_content(spoken):
            turns.append(ScriptTurn(key, labels[key], text.strip()))
    if not turns:
        raise InvalidInputError("the script has nothing to speak: every turn is empty or only a label")
    return Script(tuple(turns))
