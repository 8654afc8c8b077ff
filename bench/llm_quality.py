"""The embedded LLM candidates scored on everyday spoken questions, with the latency each would give
a spoken reply: the figures that choose the default model.

Each question (`bench/llm_questions.py`: English and Chinese, each with the answers that count and
the ones that must not appear) is asked as the server asks a spoken turn: the default system prompt
(with "The user speaks Chinese: answer in Chinese." for a Chinese one), one user turn, greedy, at
most 64 tokens, on the server's llama.cpp engine. Candidates, those on disk: the embedded SmolLM2-135M
(LLM_MODEL=small) and Qwen2.5-Coder 0.5B and 1.5B (Q4_K_M) in MODELS_DIR, one loaded at a time;
the report says how much of the CPU other processes took during each model's run.

The scorer (`score`) is pure: the answer and the forms are normalised (case, punctuation, Traditional
to Simplified, English number words and Chinese numerals to digits), an answer is correct when an
accepted form appears as a whole word or number ("18" does not give "8") and no rejected form does.
It also flags answers not in the question's language (by their script), answers that repeat the
question, and answers that loop (a high share of repeated 3-grams).

Latency per model: time to the first token, decode tokens/s, the time to the first piece the server's
sentence chunker would hand to TTS (`Synthesizer.chunker`), and the **first audio**: that time plus
the time the voice takes to render the piece's first segment, measured right after the reply (so
without the generation still running beside it, as it would in the server). English goes to the
default voice; Chinese to the Mandarin voice (TTS_CHINESE_MODEL_NAME=zh-baker) when it is prepared.
"""

from __future__ import annotations

import gc
import re
import time
import unicodedata
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from pathlib import Path

import psutil

from backend.app.backends.protocols import ChatModel, TextToSpeech
from backend.app.core.config import Settings
from backend.app.core.errors import InvalidInputError
from backend.app.core.values import ChatMessage, GenerationOptions, SynthesisRequest
from backend.app.text.chinese import HAN, script_language, to_simplified
from backend.app.text.normalize import clean_for_speech, has_speakable_content
from backend.app.text.segment import SentenceChunker, segment_text
from bench import machine
from bench.common import median, percentile, pyplot, table
from bench.llm_questions import QUESTIONS, Question

OPTIONS = GenerationOptions(max_tokens=64, temperature=0.0)
QWEN_05B = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
QWEN_15B = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
LOOP_NGRAM = 3
LOOP_RATIO = 0.3
"""An answer loops when at least this share of its 3-grams (words; characters in Chinese) repeat."""
QUIET_CPU = 0.1
"""Timings come from the answers asked while other processes took less than this share of the CPU
(on two cores, a busy neighbour slows llama.cpp's threads tenfold), when there are MIN_QUIET."""
MIN_QUIET = 20

# -- normalisation --------------------------------------------------------------------------------

_SMALL_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen"
)
_TENS_WORDS = "twenty thirty forty fifty sixty seventy eighty ninety"
_SMALL = {word: i for i, word in enumerate(_SMALL_WORDS.split())}
_TENS = {word: 10 * i for i, word in enumerate(_TENS_WORDS.split(), 2)}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 1_000_000}
_ZH_DIGITS = {ch: i for i, ch in enumerate("零一二三四五六七八九")} | {"〇": 0, "两": 2}
_ZH_UNITS = {"十": 10, "百": 100, "千": 1000}
_ZH_NUMERAL = re.compile(f"[{''.join(_ZH_DIGITS)}{''.join(_ZH_UNITS)}万]+")
_EAST = "\u3040-\u9fff\uac00-\ud7af\uf900-\ufaff"
_TOKEN = re.compile(f"[{_EAST}]|[^\\W_{_EAST}]+|[^\\w\\s]")
"""A word, one East Asian character, or one mark: the units of the echo and loop checks."""
_FILLERS = frozenset(("um", "uh", "er", "so", "hey", "well", "ok", "okay", "嗯", "呃", "啊"))


def _read_english_number(words: list[str], start: int) -> tuple[int, int]:
    """(value, words used) of the number spelt from `words[start]` on; (0, 0) when none is."""
    total = current = 0
    last = ""  # the kind of the last word read: unit (0-19), tens, scale or digits
    spelt = False
    i = end = start
    while i < len(words):
        word = words[i]
        following = words[i + 1] if i + 1 < len(words) else ""
        if word == "a" and i == start and following in _SCALES:
            current, last = 1, "unit"
        elif word == "and" and last == "scale" and (following in _SMALL or following in _TENS):
            pass
        elif word in _SMALL:
            if last in ("unit", "digits") or (last == "tens" and _SMALL[word] >= 10):
                break
            current, last, spelt = current + _SMALL[word], "unit", True
        elif word in _TENS:
            if last in ("unit", "tens", "digits"):
                break
            current, last, spelt = current + _TENS[word], "tens", True
        elif word.isdigit() and not last:
            current, last = int(word), "digits"  # "2 thousand"
        elif word in _SCALES and last:
            if word == "hundred":
                current *= 100
            else:
                total, current = total + current * _SCALES[word], 0
            last, spelt = "scale", True
        else:
            break
        i += 1
        if word not in ("a", "and"):
            end = i
    return (total + current, end - start) if spelt else (0, 0)


def english_numbers(text: str) -> str:
    """Spelt-out English numbers as digits ("seven hundred and twenty" -> "720"); words apart."""
    words = text.split()
    out: list[str] = []
    i = 0
    while i < len(words):
        value, used = _read_english_number(words, i)
        out.append(str(value) if used else words[i])
        i += used or 1
    return " ".join(out)


def _chinese_value(numeral: str) -> int:
    if not any(ch in _ZH_UNITS or ch == "万" for ch in numeral):
        return int("".join(str(_ZH_DIGITS[ch]) for ch in numeral))  # digit by digit: 一九四九
    total = section = number = 0
    for ch in numeral:
        if ch in _ZH_DIGITS:
            number = _ZH_DIGITS[ch]
        elif ch in _ZH_UNITS:
            section, number = section + (number or 1) * _ZH_UNITS[ch], 0
        else:  # 万
            total, section, number = total + ((section + number) or 1) * 10_000, 0, 0
    return total + section + number


def chinese_numbers(text: str) -> str:
    """Chinese numerals as digits ("三百六十六" -> "366", "两" -> "2")."""
    return _ZH_NUMERAL.sub(lambda m: str(_chinese_value(m.group())), text)


def normalise(text: str) -> str:
    """Lower case, Simplified, marks as spaces (a decimal point kept), numbers as digits."""
    text = unicodedata.normalize("NFKC", text).lower()
    if HAN.search(text):
        text = to_simplified(text)
    text = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", text)  # 1,000
    kept = []
    for i, ch in enumerate(text):
        decimal = ch == "." and 0 < i < len(text) - 1 and text[i - 1].isdigit() and text[i + 1].isdigit()
        kept.append(" " if unicodedata.category(ch)[0] in "PSZC" and not decimal else ch)
    return english_numbers(chinese_numbers("".join(kept)))


def contains_form(normalised: str, form: str) -> bool:
    """Whether `form` appears in the `normalised` text as a whole word or number: a form that starts
    or ends with a letter or digit must not run on into another one ("8" is not in "18" or "8.5")."""
    wanted = normalise(form)
    if not wanted:
        return False
    word = f"[^\\W_{_EAST}]"
    before = f"(?<!{word})(?<!\\d\\.)" if re.match(word, wanted) else ""
    after = f"(?!{word})(?!\\.\\d)" if re.match(word, wanted[-1]) else ""
    return re.search(before + re.escape(wanted) + after, normalised) is not None


# -- echo and loop checks -------------------------------------------------------------------------


def tokens(text: str) -> list[str]:
    """Words, East Asian characters and marks, in order."""
    return _TOKEN.findall(text.lower())


def repeated_ngram_ratio(text: str, n: int = LOOP_NGRAM) -> float:
    """The share of `text`'s n-grams that repeat an earlier one (0 for text shorter than 2n)."""
    units = tokens(text)
    grams = [tuple(units[i : i + n]) for i in range(len(units) - n + 1)]
    if len(units) < 2 * n:
        return 0.0
    return 1 - len(set(grams)) / len(grams)


def echoes_prompt(answer: str, prompt: str) -> bool:
    """Whether the answer repeats the whole question, its words (characters in Chinese) in a row,
    a filler it opens with ("um", "嗯") aside. A restatement that puts the answer in place of the
    question word ("Neil Armstrong was the first ...", "三加五等于八") is not an echo."""
    asked, said = tokens(normalise(prompt)), tokens(normalise(answer))
    while asked and asked[0] in _FILLERS:
        asked.pop(0)
    if not asked:
        return False
    match = SequenceMatcher(None, asked, said, autojunk=False).find_longest_match()
    return match.size == len(asked)


# -- the verdict ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """How one answer scored: `correct` (an accepted form and no rejected one) and its flags."""

    correct: bool
    off_language: bool
    echoes: bool
    loops: bool
    repeated: float
    """The share of repeated 3-grams."""

    @property
    def label(self) -> str:
        flags = [
            name
            for name, on in (("off-language", self.off_language), ("echo", self.echoes), ("loop", self.loops))
            if on
        ]
        return ("✓" if self.correct else "✗") + (f" *{', '.join(flags)}*" if flags else "")


def score(question: Question, answer: str) -> Verdict:
    """The verdict on `answer` to `question` (pure: text in, verdict out)."""
    text = normalise(answer)
    accepted = any(contains_form(text, form) for form in question.accept)
    rejected = any(contains_form(text, form) for form in question.reject)
    ratio = repeated_ngram_ratio(answer)
    return Verdict(
        correct=accepted and not rejected,
        off_language=bool(answer.strip())
        and (script_language(answer) == "zh") != (question.language == "zh"),
        echoes=echoes_prompt(answer, question.prompt),
        loops=ratio >= LOOP_RATIO,
        repeated=ratio,
    )


# -- asking the models ----------------------------------------------------------------------------


class OtherCPU:
    """The share of the machine's CPU time that other processes (and the hypervisor's steal) took
    since this was made: other work on a small machine slows a model's timings, and this says how
    much there was."""

    def __init__(self) -> None:
        self._me = psutil.Process()
        self._start = self._now()

    def _now(self) -> tuple[float, float, float]:
        total = psutil.cpu_times()  # guest time is counted in user time already; steal is other work
        busy = (
            total.user
            + total.nice
            + total.system
            + sum(getattr(total, name, 0.0) for name in ("irq", "softirq", "steal"))
        )
        own = self._me.cpu_times()
        return time.perf_counter(), busy, own.user + own.system

    def share(self) -> float:
        wall, busy, own = (end - start for end, start in zip(self._now(), self._start, strict=True))
        return max(0.0, (busy - own) / (wall * (psutil.cpu_count() or 1))) if wall > 0 else 0.0


@dataclass
class Answer:
    """One question asked: the reply, its verdict and its timings (seconds from the request)."""

    question: Question
    text: str
    verdict: Verdict
    tokens: int
    first_token_s: float
    decode_tps: float
    first_piece: str
    """The first piece the sentence chunker hands to TTS."""
    first_piece_s: float
    tts_s: float | None = None
    """The voice's time for the piece's first segment (None: no voice, or none that speaks it)."""
    other_cpu: float = 0.0
    """The share of the machine's CPU time other processes took meanwhile."""

    @property
    def first_audio_s(self) -> float | None:
        return None if self.tts_s is None else self.first_piece_s + self.tts_s


@dataclass
class ModelRun:
    """One model's answers to the questions, in order."""

    label: str
    answers: list[Answer] = field(default_factory=list)
    other_cpu: float = 0.0
    """The share of the machine's CPU time other processes took during the run."""

    def of(self, language: str) -> list[Answer]:
        return [a for a in self.answers if a.question.language == language]

    def correct(self, language: str) -> int:
        return sum(a.verdict.correct for a in self.of(language))

    def flagged(self, flag: str) -> int:
        return sum(getattr(a.verdict, flag) for a in self.answers)

    def quiet(self) -> list[Answer]:
        """The answers asked while other processes took under QUIET_CPU of the machine."""
        return [a for a in self.answers if a.other_cpu < QUIET_CPU]

    def timed(self, language: str | None = None) -> list[Answer]:
        """The answers the timings are taken from: the quiet ones, when there are enough, else all."""
        chosen = self.quiet() if len(self.quiet()) >= MIN_QUIET else self.answers
        return [a for a in chosen if language is None or a.question.language == language]


def messages_for(system: str, question: Question) -> list[ChatMessage]:
    """The spoken turn the server sends (services/chat.py `_answer_in`)."""
    if question.language == "zh":
        system = f"{system}\n\nThe user speaks Chinese: answer in Chinese."
    return [ChatMessage("system", system), ChatMessage("user", question.prompt)]


def first_segment(piece: str, threshold: int) -> str:
    """What the voice renders first of a piece, as the server cleans and segments it."""
    cleaned = clean_for_speech(piece)
    return segment_text(cleaned, threshold)[0] if has_speakable_content(cleaned) else ""


def ask(
    engine: ChatModel,
    question: Question,
    system: str,
    segment_chars: int,
    voice: TextToSpeech | None = None,
) -> Answer:
    """Stream one greedy reply, timing its first token and the first piece the chunker hands out;
    then, with a voice, time the rendering of that piece's first segment."""
    chunker = SentenceChunker(max_chars=segment_chars)  # as `Synthesizer.chunker` builds it
    cpu = OtherCPU()
    started = time.perf_counter()
    first_token = 0.0
    piece, piece_at = "", 0.0
    text = ""
    for delta in engine.chat_stream(messages_for(system, question), OPTIONS):
        now = time.perf_counter()
        first_token = first_token or now
        text += delta
        if not piece:
            piece = next((p for p in chunker.feed(delta) if first_segment(p, segment_chars)), "")
            piece_at = now
    ended = time.perf_counter()
    if not piece:  # a reply of one sentence: its piece comes when the reply ends
        piece = next((p for p in chunker.flush() if first_segment(p, segment_chars)), "")
        piece_at = ended
    first_token = first_token or ended
    count = engine.count_text_tokens(text) if text else 0
    answer = Answer(
        question=question,
        text=text.strip(),
        verdict=score(question, text),
        tokens=count,
        first_token_s=first_token - started,
        decode_tps=(count - 1) / (ended - first_token) if count > 1 and ended > first_token else 0.0,
        first_piece=piece,
        first_piece_s=piece_at - started,
    )
    segment = first_segment(piece, segment_chars) if piece else ""
    if voice is not None and segment:
        try:
            started = time.perf_counter()
            voice.synthesize(SynthesisRequest(segment))
            answer.tts_s = time.perf_counter() - started
        except InvalidInputError:  # a language the voice does not speak: no first audio
            pass
    answer.other_cpu = cpu.share()
    return answer


def run(
    engine: ChatModel,
    label: str,
    questions: tuple[Question, ...],
    system: str,
    segment_chars: int = 150,
    voice: TextToSpeech | None = None,
) -> ModelRun:
    """Ask every question of `engine`, one after another, after one warm-up call that also puts
    the system prompt in its prompt cache, as a running server has it."""
    engine.chat(messages_for(system, Question("en", "Hi", ("hi",))), GenerationOptions(2, 0.0))
    result = ModelRun(label)
    cpu = OtherCPU()
    for question in questions:
        answer = ask(engine, question, system, segment_chars, voice)
        result.answers.append(answer)
        print(f"llm quality {label}: {question.prompt} -> {answer.text!r} {answer.verdict.label}", flush=True)
    result.other_cpu = cpu.share()
    return result


def candidates(settings: Settings) -> dict[str, str]:
    """Model label -> LLM_MODEL value (the embedded SmolLM2 by its name, the others by their file
    in MODELS_DIR); only those on disk."""
    from backend.app.backends.embedded import SMALL_LLM

    found = {"SmolLM2-135M-Instruct Q4_1": SMALL_LLM}
    for label, name in (
        ("Qwen2.5-Coder-0.5B-Instruct Q4_K_M", QWEN_05B),
        ("Qwen2.5-Coder-1.5B-Instruct Q4_K_M", QWEN_15B),
    ):
        path = settings.storage.models_dir / name
        if path.is_file():
            found[label] = str(path)
        else:
            print(f"llm quality: {path} missing; left out", flush=True)
    return found


def load_voice(settings: Settings) -> TextToSpeech:
    """The default voice, with the Mandarin one beside it when it is prepared (and none is set)."""
    from backend.app.backends import registry
    from backend.app.backends.baker_zh import model_dir

    if not settings.tts.chinese_model_name and (model_dir(settings) / ".complete").is_file():
        tts = settings.tts.model_copy(update={"chinese_model_name": "zh-baker"})
        settings = settings.model_copy(update={"tts": tts})
    return registry.load_tts(settings)


def measure(settings: Settings) -> dict[str, ModelRun]:
    """Every candidate on every question, one model loaded at a time (an idle llama.cpp engine
    beside a busy one halves its decoding speed on two cores)."""
    from backend.app.backends.llamacpp_llm import LlamaCppChatBackend

    llm = settings.llm
    voice = load_voice(settings)
    for language, text in (("en", "Hello there."), ("zh", "你好。")):  # warm-up
        if language in voice.languages:
            voice.synthesize(SynthesisRequest(text))
    models: dict[str, ModelRun] = {}
    for label, model in candidates(settings).items():
        engine = LlamaCppChatBackend(
            model,
            llm.context_tokens,
            llm.threads,
            llm.prompt_cache_mb,
            models_dir=settings.storage.models_dir,
        )
        try:
            models[label] = run(
                engine, label, QUESTIONS, llm.system_prompt, settings.tts.segment_threshold_chars, voice
            )
        finally:
            engine.close()
        del engine
        gc.collect()
    return models


# -- the report -----------------------------------------------------------------------------------


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ") or "*(nothing)*"


def _spread(values: list[float]) -> str:
    return f"{median(values):.2f} / {percentile(values, 90):.2f}" if values else "n/a"


def _audio(model: ModelRun, language: str) -> list[float]:
    return [a.first_audio_s for a in model.timed(language) if a.first_audio_s is not None]


def _share(model: ModelRun, language: str) -> str:
    total = len(model.of(language))
    return f"{model.correct(language)}/{total} ({100 * model.correct(language) / max(total, 1):.0f}%)"


def section(models: dict[str, ModelRun], out: Path) -> list[str]:
    counts = {lang: sum(q.language == lang for q in QUESTIONS) for lang in ("en", "zh")}
    lines = [
        "## LLM quality: which embedded model answers spoken questions",
        "",
        f"{counts['en']} English and {counts['zh']} Chinese everyday questions "
        "(`bench/llm_questions.py`), each asked as a spoken turn (the default system prompt, which for "
        f"a Chinese turn asks for the answer in Chinese; greedy; at most {OPTIONS.max_tokens} tokens) "
        "on llama.cpp. **Correct**: an accepted answer appears as a whole word or number (number "
        "words and Chinese numerals read as digits) and no rejected one does. Flags: *off-language* "
        "(not written in the question's language), *echo* (repeats the question), *loop* (at least "
        f"{LOOP_RATIO:.0%} of its 3-grams repeat). Times are median / p90 in seconds. *First sentence*: "
        "request to the first piece the server's sentence chunker hands to TTS; *first audio*: that "
        "plus the voice rendering the piece's first segment (English: the default Piper voice; "
        "Chinese: the Mandarin zh-baker voice), measured after the reply, so without the generation "
        "running beside it. One model is loaded at a time; *other processes' CPU* is the share of the "
        "machine's CPU time other processes took during its run. The times are taken from the answers "
        f"asked while other processes took under {QUIET_CPU:.0%} of the CPU (*timed answers*; all of "
        f"them when fewer than {MIN_QUIET} were): on two cores a busy neighbour slows llama.cpp "
        "tenfold, and the medians would measure the neighbour.",
        "",
    ]
    rows = []
    for model in models.values():
        timed = model.timed()
        decode = [a.decode_tps for a in timed if a.decode_tps]
        rows.append(
            (
                model.label,
                _share(model, "en"),
                _share(model, "zh"),
                model.flagged("off_language"),
                model.flagged("echoes"),
                model.flagged("loops"),
                _spread([a.first_token_s for a in timed]),
                f"{median(decode):.1f}" if decode else "n/a",
                _spread([a.first_piece_s for a in timed]),
                _spread(_audio(model, "en")),
                _spread(_audio(model, "zh")),
                f"{len(timed)}/{len(model.answers)}",
                f"{model.other_cpu:.0%}",
            )
        )
    lines += table(
        (
            "model",
            "English correct",
            "Chinese correct",
            "off-language",
            "echo",
            "loop",
            "first token s",
            "decode tok/s",
            "first sentence s",
            "first audio s (en)",
            "first audio s (zh)",
            "timed answers",
            "other processes' CPU",
        ),
        rows,
    )
    lines += ["", f"*Machine: {machine.summary()}.*", "", "![llm quality](llm_quality.png)", ""]
    lines += ["### Every answer", ""]
    labels = list(models)
    answers = []
    for i, question in enumerate(QUESTIONS):
        cells = []
        for label in labels:
            answer = models[label].answers[i]
            cells.append(f"{answer.verdict.label} {_cell(answer.text)}")
        answers.append((_cell(question.prompt), " / ".join(question.accept), *cells))
    lines += table(("question", "accepted", *labels), answers)
    lines.append("")
    plot(models, out / "llm_quality.png")
    return lines


def plot(models: dict[str, ModelRun], path: Path) -> None:
    """Quality against first-audio latency, one bar group per model."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    labels = [label.replace("-Instruct", "\n") for label in models]
    x = range(len(models))
    for offset, language, colour in ((-0.2, "en", "tab:blue"), (0.2, "zh", "tab:red")):
        shares = [100 * r.correct(language) / max(len(r.of(language)), 1) for r in models.values()]
        left.bar([i + offset for i in x], shares, 0.4, label=language, color=colour)
        for i, v in zip(x, shares, strict=True):
            left.text(i + offset, v, f"{v:.0f}", ha="center", va="bottom")
    left.set_xticks(list(x), labels, fontsize=8)
    left.set_ylim(0, 105)
    left.set_title("correct answers (%)")
    left.legend()
    for offset, language, colour in ((-0.2, "en", "tab:blue"), (0.2, "zh", "tab:red")):
        values = [_audio(r, language) for r in models.values()]
        medians = [median(v) if v else 0.0 for v in values]
        p90s = [percentile(v, 90) - median(v) if v else 0.0 for v in values]
        right.bar(
            [i + offset for i in x], medians, 0.4, yerr=[[0] * len(x), p90s], label=language, color=colour
        )
    right.set_xticks(list(x), labels, fontsize=8)
    right.set_title("first audio (s, median; bar to p90)")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
