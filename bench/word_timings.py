"""Word timings: where the TTS engines say each word is, against where Whisper hears it.

Each engine speaks the sentences below (32 English, 12 Chinese) and reports its words' times (from
its own durations: hibari's and Piper's duration predictors, FastSpeech2's for the Mandarin voice).
The same audio is transcribed by the raw faster-whisper library with `word_timestamps=True`
(tiny.en, the server's STT, for English; base, multilingual, for both; the language given, no VAD)
and the two are paired: the words are matched letter by letter (a Chinese character is a word), and
each Whisper word is paired with the engine's word it begins in, when it begins at that word's first
letter. The measure is the difference of their starts (and ends), per engine and reference: median
and 90th percentile of the absolute difference; the goal is a median of at most 60 ms. Words that
begin after a pause give a reference independent of Whisper: where the signal rises again.

Another row measures the path an engine without durations takes (VibeVoice on a GPU): the
server's forced alignment (`WhisperBackend.align`, tiny.en as in the default configuration) of the
known text on hibari's speech, against Whisper base, and against hibari's own durations.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

import numpy as np

from backend.app.audio.decode import resample
from backend.app.audio.types import Audio, SpokenWord
from backend.app.core.config import Settings
from backend.app.core.values import SynthesisRequest
from bench import machine
from bench.common import median, percentile, pyplot, table

ENGLISH = (
    "The quick brown fox jumps over the lazy dog.",
    "Turn off the lights in the living room, please.",
    "What time does the pharmacy on Main Street close today?",
    "Remind me to call my sister at half past six.",
    "It will be sunny tomorrow, with a high of twenty three degrees.",
    "I have added milk, eggs and two loaves of bread to your list.",
    "Your next appointment is on Thursday at nine in the morning.",
    "Set a timer for fifteen minutes.",
    "The train to Boston leaves from platform four.",
    "Please speak a little more slowly so that everyone can follow.",
    "A spider has eight legs, and an insect has six.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "I could not find a song with that name in your library.",
    "The meeting has been moved to the small conference room.",
    "Take two tablets with water after breakfast.",
    "Good morning! You have three new messages.",
    "The museum opens at ten and closes at five on weekends.",
    "Would you like me to read the recipe again?",
    "Our flight was delayed by almost two hours.",
    "She bought a red umbrella and a pair of warm gloves.",
    "The library will be closed for the holidays.",
    "Do not forget to water the plants before you leave.",
    "My favourite season is autumn, when the leaves turn gold.",
    "The doctor said the results look perfectly normal.",
    "Can you recommend a quiet restaurant near the station?",
    "The children played in the garden until it got dark.",
    "Every evening he walks the dog along the river.",
    "The package should arrive between noon and four o'clock.",
    "I am sorry, but I did not catch that. Could you repeat it?",
    "Mount Everest is the highest mountain on Earth.",
    "Please lock the front door and close the windows.",
    "The concert tickets sold out in less than an hour.",
)
CHINESE = (
    "今天天气很好，我们去公园散步吧。",
    "请把客厅的灯关掉。",
    "明天早上八点提醒我开会。",
    "这家餐厅的菜很好吃，价格也不贵。",
    "火车站离这里大约有两公里。",
    "我已经把牛奶和鸡蛋加到购物清单里了。",
    "下午可能会下雨，出门记得带伞。",
    "你想听一首轻松的音乐吗？",
    "图书馆周末上午九点开门。",
    "医生说检查结果一切正常。",
    "孩子们在花园里玩到天黑。",
    "请帮我把窗户关上，谢谢。",
)
REFERENCE = "base-multilingual"
GOAL_S = 0.060
INTRO = (
    "{en} English sentences (hibari, Piper) and {zh} Chinese (zh-baker, when prepared), each "
    "synthesised once in-process; the engine's word times against the raw faster-whisper's word "
    "timestamps on the same audio (tiny.en, the server's STT, for English; base, multilingual, for "
    "both; language given, beam 5, no VAD). A "
    "pair is a Whisper word that begins at the first letter of one of the engine's words (a Chinese "
    "character is a word). Milliseconds; bias is the median signed start difference (engine minus "
    "Whisper). Goal: median |start difference| <= {goal:.0f} ms."
)


@dataclass
class Pairs:
    """Start and end differences (engine minus Whisper), seconds, for paired words, and against
    the energy onsets of words after a pause (engine minus onset, Whisper minus onset)."""

    starts: list[float] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)
    words: int = 0
    """The engine's words (pairs are those Whisper heard as beginning at one of them)."""
    ours_onset: list[float] = field(default_factory=list)
    whisper_onset: list[float] = field(default_factory=list)

    def add(self, audio: Audio, ours: Sequence[SpokenWord], heard: Sequence[Any]) -> None:
        starts, ends = differences(ours, heard)
        self.starts += starts
        self.ends += ends
        self.words += len(ours)
        paired = dict(pair_words(ours, heard))
        for index, onset in onsets(audio, ours):
            if index in paired:
                self.ours_onset.append(ours[index].start - onset)
                self.whisper_onset.append(float(heard[paired[index]].start) - onset)


def _letters(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKC", text).lower() if c.isalnum())


def pair_words(ours: Sequence[SpokenWord], heard: Sequence[Any]) -> list[tuple[int, int]]:
    """(our index, Whisper's index) for each word Whisper heard (`heard`: objects with `word`,
    `start`, `end`) that begins at the first letter of one of `ours`, matched letter by letter."""
    mine, owner, first = [], [], []
    for index, word in enumerate(ours):
        letters = _letters(word.word)
        first.append(len(mine))
        mine += letters
        owner += [index] * len(letters)
    theirs, their_first = [], []
    for word in heard:
        their_first.append(len(theirs))
        theirs += _letters(word.word)
    matched: dict[int, int] = {}
    for a, b, size in SequenceMatcher(
        None, "".join(mine), "".join(theirs), autojunk=False
    ).get_matching_blocks():
        for k in range(size):
            matched[b + k] = a + k
    pairs = []
    for index, position in enumerate(their_first):
        at = matched.get(position)
        if at is not None and first[owner[at]] == at and position < len(theirs):
            pairs.append((owner[at], index))
    return pairs


def differences(ours: Sequence[SpokenWord], heard: Sequence[Any]) -> tuple[list[float], list[float]]:
    """Start and end differences (ours minus Whisper's) of the paired words; an end counts when the
    two words are the same word (same letters)."""
    starts, ends = [], []
    for mine, theirs in pair_words(ours, heard):
        starts.append(ours[mine].start - float(heard[theirs].start))
        if _letters(ours[mine].word) == _letters(heard[theirs].word):
            ends.append(ours[mine].end - float(heard[theirs].end))
    return starts, ends


def onsets(audio: Audio, ours: Sequence[SpokenWord]) -> list[tuple[int, float]]:
    """(word index, true start) for the words that begin after 100 ms of silence or more: where
    the signal's 10 ms envelope first passes 3 % of its peak after the silence, within 0.25 s of the
    word's given start. An independent reference for those words."""
    rate = audio.sample_rate
    window = max(1, rate // 100)
    envelope = np.convolve(np.abs(audio.samples), np.ones(window) / window, mode="same")
    loud = envelope > 0.03 * float(envelope.max() or 1.0)
    starts, quiet = [], 0
    for i, is_loud in enumerate(loud):
        if is_loud and quiet >= rate // 10:
            starts.append(i / rate)
        quiet = 0 if is_loud else quiet + 1
    found = []
    for index, word in enumerate(ours):
        near = [s for s in starts if abs(s - word.start) <= 0.25]
        if near and (index == 0 or word.start - ours[index - 1].end >= 0.05):
            found.append((index, min(near, key=lambda s: abs(s - word.start))))
    return found


def whisper_words(model: Any, audio: Audio, language: str) -> list[Any]:
    """The raw library's word timestamps for `audio`."""
    samples = resample(audio, 16_000).samples
    segments, _ = model.transcribe(
        samples, language=language, word_timestamps=True, vad_filter=False, beam_size=5
    )
    return [w for s in segments for w in (s.words or ())]


def measure(settings: Settings) -> dict[str, Any]:
    from faster_whisper import WhisperModel

    from backend.app.backends import embedded
    from backend.app.backends.hibari import HibariBackend
    from backend.app.backends.piper import PiperBackend
    from backend.app.backends.whisper import WhisperBackend

    models = settings.storage.models_dir
    references = {
        "Whisper tiny.en": WhisperModel(
            str(embedded.whisper_tiny_en_dir()), device="cpu", compute_type="int8"
        ),
        "Whisper base": WhisperModel(
            str(embedded.whisper_base_dir(models)), device="cpu", compute_type="int8"
        ),
    }
    aligner = WhisperBackend("embedded", models)
    engines: list[tuple[str, Any, Sequence[str], str]] = [
        ("hibari af_heart (durations)", HibariBackend(), ENGLISH, "en"),
        ("Piper joe (durations)", PiperBackend("joe"), ENGLISH, "en"),
    ]
    zh_dir = models / "zh-baker"
    if (zh_dir / "fastspeech2_quan.onnx").is_file():
        from backend.app.backends.baker_zh import BakerMandarinBackend

        engines.append(("zh-baker (FastSpeech2 durations)", BakerMandarinBackend(zh_dir), CHINESE, "zh"))
    forced_label = "forced alignment (VibeVoice's path) on hibari's speech"
    rows: dict[tuple[str, str], Pairs] = {}
    against_own = Pairs()
    for label, engine, texts, language in engines:
        for text in texts:
            audio = engine.synthesize(SynthesisRequest(text))
            forced = aligner.align(audio, text) if label.startswith("hibari") else None
            for name, model in references.items():
                if language != "en" and name.endswith(".en"):
                    continue
                heard = whisper_words(model, audio, language)
                rows.setdefault((label, name), Pairs()).add(audio, audio.words or (), heard)
                if forced is not None and not name.endswith(".en"):  # tiny.en is the aligner itself
                    rows.setdefault((forced_label, name), Pairs()).add(audio, forced, heard)
            if forced is not None:
                own = audio.words or ()
                against_own.starts += [f.start - o.start for f, o in zip(forced, own, strict=True)]
                against_own.words += len(forced)
        print(f"{label}: done", flush=True)
    return {"rows": rows, "against_own": against_own, "counts": {"en": len(ENGLISH), "zh": len(CHINESE)}}


def _stats(values: list[float]) -> tuple[str, str]:
    if not values:
        return "–", "–"
    absolute = [abs(v) * 1000 for v in values]
    return f"{median(absolute):.0f}", f"{percentile(absolute, 90):.0f}"


def section(result: dict[str, Any], out: Path) -> list[str]:
    rows: dict[tuple[str, str], Pairs] = result["rows"]
    cells = []
    for (label, reference), pairs in rows.items():
        start_median, start_p90 = _stats(pairs.starts)
        end_median, end_p90 = _stats(pairs.ends)
        bias = f"{median(pairs.starts) * 1000:+.0f}" if pairs.starts else "–"
        met = "met" if pairs.starts and median([abs(v) for v in pairs.starts]) <= GOAL_S else "not met"
        cells.append(
            [
                label,
                reference,
                pairs.words,
                len(pairs.starts),
                start_median,
                start_p90,
                bias,
                end_median,
                end_p90,
                met,
            ]
        )
    onset_cells = []
    for (label, reference), pairs in rows.items():
        if pairs.ours_onset and reference == "Whisper base":
            ours_median, ours_p90 = _stats(pairs.ours_onset)
            theirs_median, theirs_p90 = _stats(pairs.whisper_onset)
            onset_cells.append(
                [
                    label,
                    len(pairs.ours_onset),
                    ours_median,
                    ours_p90,
                    f"{median(pairs.ours_onset) * 1000:+.0f}",
                    theirs_median,
                    theirs_p90,
                    f"{median(pairs.whisper_onset) * 1000:+.0f}",
                ]
            )
    own = result["against_own"]
    own_median, own_p90 = _stats(own.starts)
    _plot(rows, out)
    counts = result["counts"]
    return [
        "## Word timings: the engines' against Whisper's",
        "",
        INTRO.format(en=counts["en"], zh=counts["zh"], goal=GOAL_S * 1000),
        "",
        *table(
            [
                "engine",
                "reference",
                "words",
                "pairs",
                "median |Δstart|",
                "p90 |Δstart|",
                "bias",
                "median |Δend|",
                "p90 |Δend|",
                "goal",
            ],
            cells,
        ),
        "",
        "Against an independent reference: the words that begin after a pause (100 ms of silence or "
        "more), whose true start is where the signal rises again (10 ms envelope past 3 % of the peak). "
        "Milliseconds, median and p90 of the absolute difference, and the signed median (bias):",
        "",
        *table(
            [
                "engine",
                "words after a pause",
                "engine median",
                "engine p90",
                "engine bias",
                "Whisper base median",
                "Whisper base p90",
                "Whisper base bias",
            ],
            onset_cells,
        ),
        "",
        f"The forced alignment against hibari's own durations (same words, {own.words}): median |Δstart| "
        f"{own_median} ms, p90 {own_p90} ms.",
        "",
        "![word timing differences](word_timings.png)",
        "",
        f"*Machine: {machine.summary()}.*",
    ]


def _plot(rows: dict[tuple[str, str], Pairs], out: Path) -> None:
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(8, 4))
    for (label, reference), pairs in rows.items():
        if pairs.starts:
            values = [v * 1000 for v in pairs.starts]
            axis.hist(values, bins=40, range=(-300, 300), histtype="step", label=f"{label} vs {reference}")
    axis.axvspan(-GOAL_S * 1000, GOAL_S * 1000, color="green", alpha=0.08)
    axis.set_xlabel("engine start − Whisper start (ms)")
    axis.set_ylabel("words")
    axis.legend(fontsize=6)
    figure.tight_layout()
    figure.savefig(out / "word_timings.png", dpi=110)
    plt.close(figure)
