"""Chinese on the embedded CPU models, with the README's Chinese configuration (STT_MODEL_NAME=auto,
LLM_MODEL=Qwen2.5 0.5B, TTS_CHINESE_MODEL_NAME=zh-baker), in one run:

1. **What `STT_MODEL_NAME=auto` costs**: the same clips (five English questions spoken by Piper,
   five Chinese ones spoken by the Mandarin voice) transcribed in this process by tiny.en (the
   English default), and by the multilingual base with the language given and unknown (which is
   what `auto` does for a request that names no language): time and word / character error rate.
2. **Chinese stages** by input length (short / medium / long, as the seed's table): POST /stt,
   POST /v1/chat/completions and POST /tts against the raw engine calls in this process
   (faster-whisper's `transcribe`, llama.cpp's completion, the Mandarin voice's `synthesize`),
   interleaved; the speech is the Mandarin voice's rendering of the text.
3. **Chinese WebSocket turns**: each Chinese question streamed over /ws/conversation at real-time
   pace, then silence, from the last loud sample sent to the first reply audio, beside the English
   questions on the same server, interleaved.

Needs the Mandarin voice prepared (`make zh-voice`) and the default Qwen (`make setup`).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from backend.app.audio.decode import decode_audio, resample
from backend.app.audio.encode import encode_audio, to_pcm16
from backend.app.audio.types import Audio
from backend.app.backends.baker_zh import BakerMandarinBackend, model_dir
from backend.app.backends.embedded import SPLIT_MODELS
from backend.app.backends.llamacpp_llm import LlamaCppChatBackend
from backend.app.backends.whisper import WhisperBackend
from backend.app.core.config import Settings
from backend.app.core.values import ChatMessage, GenerationOptions, SynthesisRequest, TranscribeOptions
from backend.app.text.wer import character_error_rate, word_error_rate
from bench import machine
from bench.common import interleaved, median, percentile, pyplot, start_server, stop_server, table, timed
from bench.latency import speech_end_offset, spoken_requests, websocket_turn

QUESTIONS = (
    "请问北京是哪个国家的首都？",
    "今天晚上吃什么比较好？",
    "我晚上睡不着，有什么好办法吗？",
    "一年有几个月？",
    "请推荐一本适合孩子看的书。",
)
TEXTS = {
    "short": "请把客厅的灯关掉，谢谢。",
    "medium": (
        "明天上午十点我要和设计团队开会，中午和朋友在车站附近吃饭，下午还要去取干洗的衣服，"
        "再买一些周末用的菜，所以请提醒我早点离开办公室。"
    ),
    "long": (
        "这座城市的历史要从河北岸的一个小渔村说起。几百年来，商人们从南方带来了香料、布匹和新的思想，"
        "小村子慢慢发展成了热闹的集镇。人们修了一座石桥连接两岸，桥边出现了最早的会馆。到了工业时代，"
        "河边建满了工厂，人口在一代人的时间里增加了两倍。如今，大部分老仓库已经变成了公寓、画廊和餐厅，"
        "曾经挤满货船的河道，现在主要是划船俱乐部和游船在使用。游客们仍然可以走过那座古老的石桥，"
        "看到桥墩上留下的历代洪水的痕迹。"
    ),
}
CHINESE_SETTINGS = {
    "STT_MODEL_NAME": "auto",
    "TTS_CHINESE_MODEL_NAME": "zh-baker",
}


def chinese_env(settings: Settings) -> dict[str, str]:
    return CHINESE_SETTINGS | {"LLM_MODEL": ""}  # the default Qwen2.5-Coder-1.5B


def available(settings: Settings) -> str:
    """Why the section cannot run ('' when it can)."""
    missing = []
    if not (model_dir(settings) / ".complete").is_file():
        missing.append("the Mandarin voice (make zh-voice)")
    if not (settings.storage.models_dir / SPLIT_MODELS["embedded"].filename).is_file():
        missing.append("the default Qwen2.5 1.5B (make setup)")
    return ", ".join(missing)


def _clip(audio: Audio) -> Audio:
    pad = np.zeros(int(0.2 * 16000), dtype=np.float32)
    speech = resample(audio, 16000)
    return Audio(np.concatenate([pad, speech.samples, pad]), 16000)


def stt_cost(settings: Settings, voice: BakerMandarinBackend, repeats: int) -> list[dict[str, Any]]:
    """tiny.en against base (language given, unknown) on the same English and Chinese clips."""
    english = [(text, decode_audio(wav, 16000)) for text, wav in spoken_requests()]
    chinese = [(text, _clip(voice.synthesize(SynthesisRequest(text)))) for text in QUESTIONS]
    models = {
        "tiny.en": WhisperBackend("embedded", settings.storage.models_dir, beam_size=settings.stt.beam_size),
        "base": WhisperBackend(
            "base-multilingual", settings.storage.models_dir, beam_size=settings.stt.beam_size
        ),
    }
    cases = [
        ("en", "tiny.en", "en"),
        ("en", "base", "en"),
        ("en", "base", None),
        ("zh", "base", "zh"),
        ("zh", "base", None),
    ]
    for backend in models.values():
        backend.transcribe(english[0][1], TranscribeOptions(language="en"))  # warm-up
    rows = []
    for language, name, given in cases:
        clips = english if language == "en" else chinese
        times, errors, detected = [], [], []
        for _ in range(repeats):
            for text, audio in clips:
                options = TranscribeOptions(language=given)
                result: dict[str, Any] = {}

                backend = models[name]

                def run(
                    audio: Audio = audio,
                    options: TranscribeOptions = options,
                    out: dict[str, Any] = result,
                    backend: WhisperBackend = backend,
                ) -> None:
                    out["t"] = backend.transcribe(audio, options)

                times.append(timed(run, pause_s=0.1))
                heard = result["t"]
                detected.append(heard.language == language)
                rate = word_error_rate if language == "en" else character_error_rate
                errors.append(rate(text, heard.text))
        rows.append(
            {
                "clips": "English" if language == "en" else "Chinese",
                "model": name,
                "language": given or "unknown (detected)",
                "ms": median(times),
                "error": sum(errors) / len(errors),
                "detected": sum(detected) / len(detected),
            }
        )
        print(f"chinese stt cost: {rows[-1]}", flush=True)
    return rows


def stages(
    http: httpx.Client, settings: Settings, voice: BakerMandarinBackend, repeats: int
) -> list[dict[str, Any]]:
    whisper = WhisperBackend(
        "base-multilingual", settings.storage.models_dir, beam_size=settings.stt.beam_size
    )
    llm = LlamaCppChatBackend("", settings.llm.context_tokens, models_dir=settings.storage.models_dir)
    options = GenerationOptions(settings.llm.max_tokens, 0.0)
    system = f"{settings.llm.system_prompt}\n\nThe user speaks Chinese: answer in Chinese."
    rows = []
    for size, text in TEXTS.items():
        speech = _clip(voice.synthesize(SynthesisRequest(text)))
        wav = encode_audio(speech, "wav")
        messages = [ChatMessage("system", system), ChatMessage("user", text)]
        body = {
            "model": llm.info.id,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "max_tokens": settings.llm.max_tokens,
            "temperature": 0,
        }
        usage: dict[str, Any] = {}

        def srv_stt(wav: bytes = wav) -> None:
            http.post(
                "/stt", files={"file": ("a.wav", wav, "audio/wav")}, data={"language": "zh"}
            ).raise_for_status()

        def srv_llm(body: dict[str, Any] = body, usage: dict[str, Any] = usage) -> None:
            response = http.post("/v1/chat/completions", json=body)
            response.raise_for_status()
            usage.update(response.json()["usage"])

        def srv_tts(text: str = text) -> None:
            http.post("/tts", json={"text": text}).raise_for_status()

        sides = {
            "raw_stt": lambda a=speech: whisper.transcribe(a, TranscribeOptions(language="zh")),
            "srv_stt": srv_stt,
            "raw_llm": lambda m=messages: llm.chat(m, options),
            "srv_llm": srv_llm,
            "raw_tts": lambda t=text: voice.synthesize(SynthesisRequest(t)),
            "srv_tts": srv_tts,
        }
        times = interleaved(sides, ("stt", "llm", "tts"), repeats)
        med = {key: median(values) for key, values in times.items()}
        rows.append(
            {
                "size": size,
                "chars": len(text),
                "audio_s": speech.duration,
                "reply_tokens": usage.get("completion_tokens", "?"),
            }
            | med
        )
        print(f"chinese stages {size}: {rows[-1]}", flush=True)
    return rows


def websocket(port: int, voice: BakerMandarinBackend, runs: int) -> list[dict[str, Any]]:
    url = f"ws://127.0.0.1:{port}/ws/conversation"
    clips = [("zh", _clip(voice.synthesize(SynthesisRequest(text)))) for text in QUESTIONS]
    clips += [("en", decode_audio(wav, 16000)) for _, wav in spoken_requests()]
    prepared = [
        (language, to_pcm16(audio), speech_end_offset(audio.samples, 16000)) for language, audio in clips
    ]
    asyncio.run(websocket_turn(url, prepared[0][1], prepared[0][2]))  # warm-up
    rows = []
    for run in range(runs):
        order = prepared if run % 2 == 0 else prepared[::-1]
        for language, pcm, offset in order:
            time.sleep(1)
            row = asyncio.run(websocket_turn(url, pcm, offset)) | {"language": language}
            rows.append(row)
            print(f"chinese ws {language}: {row['ws_from_speech_over_s']:.2f} s after the speech", flush=True)
    return rows


def measure(settings: Settings, repeats: int) -> dict[str, Any]:
    from bench.common import free_port

    voice = BakerMandarinBackend(model_dir(settings))
    result: dict[str, Any] = {"repeats": repeats, "stt": stt_cost(settings, voice, max(1, repeats // 2))}
    port = free_port()
    server = start_server(port, **chinese_env(settings))
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as http:
            result["stages"] = stages(http, settings, voice, repeats)
        result["ws"] = websocket(port, voice, repeats)
    finally:
        stop_server(server)
    return result


def section(result: dict[str, Any], out: Path) -> list[str]:
    repeats = result["repeats"]
    lines = [
        "## Chinese on the CPU",
        "",
        "The README's Chinese configuration (`make zh`): `STT_MODEL_NAME=auto`, the default LLM "
        "(Qwen2.5-Coder-1.5B-Instruct Q4_K_M), `TTS_CHINESE_MODEL_NAME=zh-baker` beside the English "
        "voices.",
        "",
        "### What STT_MODEL_NAME=auto costs",
        "",
        "The same clips in this process: English ones (the latency section's five questions, spoken by "
        "Piper) and Chinese ones (five questions spoken by the Mandarin voice). `auto` sends a request "
        "that says `en` to tiny.en and every other one, including those that name no language, to base.",
        "",
    ]
    lines += table(
        ("clips", "model", "language", "median ms", "WER / CER", "language detected"),
        [
            (
                r["clips"],
                r["model"],
                r["language"],
                f"{r['ms']:.0f}",
                f"{r['error']:.3f}",
                f"{r['detected']:.0%}",
            )
            for r in result["stt"]
        ],
    )
    english = {(r["model"], r["language"]): r["ms"] for r in result["stt"] if r["clips"] == "English"}
    ratio = english[("base", "unknown (detected)")] / english[("tiny.en", "en")]
    lines += [
        "",
        f"English audio of unknown language costs **{ratio:.2f}x** under `auto` (base) what it costs "
        "on tiny.en.",
        "",
        "### Chinese stages by input length",
        "",
        f"Whole HTTP round trips against the raw engine calls in this process, median of {repeats}, "
        "interleaved. The speech is the Mandarin voice's rendering of the text; the LLM answers the text "
        "(greedy).",
        "",
    ]
    cells = []
    for r in result["stages"]:
        cells.append(
            (
                r["size"],
                r["chars"],
                f"{r['audio_s']:.1f}",
                f"{r['srv_stt']:.0f} / {r['raw_stt']:.0f}",
                f"{r['srv_stt'] / r['raw_stt']:.3f}",
                f"{r['srv_llm']:.0f} / {r['raw_llm']:.0f}",
                r["reply_tokens"],
                f"{r['srv_tts']:.0f} / {r['raw_tts']:.0f}",
                f"{r['srv_tts'] / 1000 / r['audio_s']:.3f}",
            )
        )
    lines += table(
        ("input", "characters", "speech s", "/stt / raw ms", "STT ratio", "LLM / raw ms", "reply tokens",
         "/tts / raw ms", "TTS RTF"),
        cells,
    )  # fmt: skip
    ws = result["ws"]
    summary = []
    for language, label in (("zh", "Chinese"), ("en", "English")):
        over = [r["ws_from_speech_over_s"] for r in ws if r["language"] == language]
        end = [r["ws_from_speech_end_s"] for r in ws if r["language"] == language]
        summary.append(
            (label, len(over), f"{median(over):.2f}", f"{percentile(over, 90):.2f}", f"{median(end):.2f}")
        )
    lines += [
        "",
        "### WebSocket: end of speech -> first reply audio",
        "",
        "Each question streamed over /ws/conversation at real-time pace (20 ms frames), then silence; "
        "a new conversation each time; Chinese and English on the same server, interleaved.",
        "",
    ]
    lines += table(
        (
            "questions",
            "turns",
            "last speech sample -> first audio, median s",
            "p90 s",
            "`speech_end` -> first audio, median s",
        ),
        summary,
    )
    lines += ["", f"*Machine: {machine.summary()}.*", "", "![chinese](chinese.png)", ""]
    plot(ws, out / "chinese.png")
    return lines


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.5))
    data = [[r["ws_from_speech_over_s"] for r in rows if r["language"] == code] for code in ("zh", "en")]
    ax.boxplot(data, orientation="horizontal", tick_labels=["Chinese", "English"])
    ax.invert_yaxis()
    ax.set_xlabel("seconds from the last speech sample to the first reply audio")
    ax.set_title("/ws/conversation, Chinese configuration")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
