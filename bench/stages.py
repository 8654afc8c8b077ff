"""Per-stage latency (STT, LLM, TTS x short/medium/long) and server-over-raw-library ratios.

For each input size it times, interleaved (raw, server, raw, server, ...) so that both sides see the
same machine state:
- STT: faster-whisper's `transcribe` on a decoded 16 kHz array (the least the library must do; its
  own file path, with its decode, is shown too) vs POST /stt with the WAV;
- LLM: the same model generating the same greedy reply in this process (the engine call the
  server makes; plain transformers `generate` on the same weights is shown too; for
  LLM_BACKEND=openai, the `openai` client calling the same server) vs POST /v1/chat/completions
  with the same messages;
- TTS: `PiperVoice.synthesize` (or the engine's own call for other engines) vs POST /tts.
STT input is the TTS rendering of the same text.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from backend.app.audio.decode import decode_audio, resample
from backend.app.audio.encode import encode_audio
from backend.app.backends import embedded, registry
from backend.app.core.config import Settings
from backend.app.core.values import ChatMessage, GenerationOptions, SynthesisRequest
from bench import machine
from bench.common import interleaved, median, pyplot, table

TEXTS = {
    "short": "Turn off the lights in the living room, please.",
    "medium": (
        "Tomorrow I have a meeting with the design team at ten, then lunch with Sarah near the "
        "station. After that I need to pick up the dry cleaning and buy groceries for the weekend, "
        "so remind me to leave the office early."
    ),
    "long": (
        "The history of the city begins with a small fishing village on the northern bank of the "
        "river. Over the centuries, merchants arrived from the south, bringing spices, cloth and "
        "new ideas, and the village grew into a busy market town. A stone bridge was built to "
        "connect the two banks, and around it the first guild halls appeared. During the industrial "
        "period, factories lined the water, and the population tripled in a single generation. "
        "Today most of the old warehouses have become apartments, galleries and restaurants, and "
        "the river, once crowded with barges, is used mostly by rowing clubs and tourist boats. "
        "Visitors can still walk across the original bridge and see the marks left by the floods "
        "of past centuries on its pillars."
    ),
}


SEED_RTX_4090_S = {
    "short": {"stt": 0.5, "llm": 0.8, "tts": 3.0},
    "medium": {"stt": 1.0, "llm": 1.2, "tts": 8.0},
    "long": {"stt": 2.0, "llm": 2.5, "tts": 15.0},
}
"""The seed's published stage times on an RTX 4090 (production models), for --gpu runs."""


@dataclass
class Raw:
    """The libraries called directly, on the models the server is configured with."""

    settings: Settings
    transcribe: Callable[[Any, str], object] = field(init=False)
    synthesize: Callable[[str], object] = field(init=False)
    chat: Callable[[list[ChatMessage]], str] = field(init=False)
    library_chat: Callable[[list[ChatMessage]], object] | None = field(init=False, default=None)
    labels: dict[str, str] = field(init=False, default_factory=dict)
    chat_model_id: str = field(init=False, default="")

    def __post_init__(self) -> None:
        settings = self.settings
        whisper = registry.load_stt(settings)
        library_model = whisper._model  # type: ignore[attr-defined]  # faster_whisper.WhisperModel
        beam = settings.stt.beam_size

        def transcribe(audio: Any, language: str) -> object:
            segments, _ = library_model.transcribe(audio, language=language, beam_size=beam, vad_filter=True)
            return list(segments)

        self.transcribe = transcribe
        self.labels["stt"] = "faster-whisper `WhisperModel.transcribe`"
        if registry.engine("tts", settings).name == "piper":
            from piper import PiperVoice

            name = settings.tts.model_name
            voice = PiperVoice.load(embedded.piper_voice_file() if name == "embedded" else name)
            self.synthesize = lambda text: [c.audio_float_array for c in voice.synthesize(text)]
            self.labels["tts"] = "piper-tts `PiperVoice.synthesize`"
        else:
            engine = registry.load_tts(settings)
            self.synthesize = lambda text: engine.synthesize(SynthesisRequest(text))
            self.labels["tts"] = f"the engine's call in-process ({engine.info.model})"
        llm = registry.load_chat(settings)
        options = GenerationOptions(settings.llm.max_tokens, 0.0)
        self.chat = lambda messages: llm.chat(messages, options)
        self.chat_model_id = llm.info.id
        self.labels["llm"] = f"the same generation in-process ({llm.info.model})"
        model = getattr(llm, "_model", None)
        tokenizer = getattr(llm, "_tokenizer", None)
        if model is not None and tokenizer is not None:
            import torch

            def generate(messages: list[ChatMessage]) -> object:
                inputs = tokenizer.apply_chat_template(
                    [{"role": m.role, "content": m.content} for m in messages],
                    add_generation_prompt=True,
                    return_tensors="pt",
                    return_dict=True,
                ).to(model.device)
                with torch.inference_mode():
                    return model.generate(
                        **inputs, max_new_tokens=settings.llm.max_tokens, do_sample=False, top_k=None
                    )

            self.library_chat = generate
            self.labels["llm_library"] = "transformers `generate`, the model's own dtype"


def measure(http: httpx.Client, raw: Raw, repeats: int) -> list[dict[str, Any]]:
    settings = raw.settings
    rows: list[dict[str, Any]] = []
    for size, text in TEXTS.items():
        speech = decode_audio(http_tts(http, text), 16_000)
        wav = encode_audio(speech, "wav")
        audio16 = resample(decode_audio(wav), 16_000).samples
        messages = [ChatMessage("system", settings.llm.system_prompt), ChatMessage("user", text)]
        body = {
            "model": raw.chat_model_id,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "max_tokens": settings.llm.max_tokens,
            "temperature": 0,
        }
        reply: dict[str, Any] = {}

        def server_stt(wav: bytes = wav) -> None:
            files = {"file": ("a.wav", wav, "audio/wav")}
            http.post("/stt", files=files, data={"language": "en"}).raise_for_status()

        def server_llm(body: dict[str, Any] = body, reply: dict[str, Any] = reply) -> None:
            response = http.post("/v1/chat/completions", json=body)
            response.raise_for_status()
            reply.update(response.json())

        def server_tts(text: str = text) -> None:
            http.post("/tts", json={"text": text}).raise_for_status()

        sides: dict[str, Callable[[], object]] = {
            "raw_stt": lambda a=audio16: raw.transcribe(a, "en"),
            "lib_stt": lambda w=wav: raw.transcribe(io.BytesIO(w), "en"),
            "srv_stt": server_stt,
            "raw_llm": lambda m=messages: raw.chat(m),
            "srv_llm": server_llm,
            "raw_tts": lambda t=text: raw.synthesize(t),
            "srv_tts": server_tts,
        }
        if raw.library_chat is not None:
            sides["lib_llm"] = lambda m=messages: raw.library_chat(m)  # type: ignore[misc]
        times = interleaved(sides, ("stt", "llm", "tts"), repeats)
        med = {key: round(median(values), 1) for key, values in times.items()}
        usage = reply.get("usage", {})
        rows.append(
            {
                "size": size,
                "words": len(text.split()),
                "audio_s": round(speech.duration, 1),
                "reply_tokens": usage.get("completion_tokens", "?"),
                **med,
                "stt_ratio": round(med["srv_stt"] / med["raw_stt"], 3),
                "llm_ratio": round(med["srv_llm"] / med["raw_llm"], 3),
                "tts_ratio": round(med["srv_tts"] / med["raw_tts"], 3),
            }
        )
        print(f"stages {size}: {rows[-1]}", flush=True)
    return rows


def http_tts(http: httpx.Client, text: str) -> bytes:
    response = http.post("/tts", json={"text": text})
    response.raise_for_status()
    return response.content


def section(rows: list[dict[str, Any]], raw: Raw, repeats: int, out: Path, gpu: bool) -> list[str]:
    settings = raw.settings
    lines = [
        "## Per-stage latency by input length",
        "",
        f"Models: STT `{settings.stt.model_name}` (beam {settings.stt.beam_size}), LLM "
        f"`{settings.llm.backend}` {settings.llm.model or '(embedded)'} (at most {settings.llm.max_tokens} "
        f"tokens, greedy), TTS `{settings.tts.model_name}`. Whole HTTP round trips, median of {repeats}.",
        "",
    ]
    headers = ["input", "words", "speech s", "STT s", "STT RTF", "LLM s", "reply tokens", "TTS s", "TTS RTF"]
    cells = [
        [
            r["size"], r["words"], r["audio_s"], f"{r['srv_stt'] / 1000:.2f}",
            f"{r['srv_stt'] / 1000 / r['audio_s']:.3f}", f"{r['srv_llm'] / 1000:.2f}", r["reply_tokens"],
            f"{r['srv_tts'] / 1000:.2f}", f"{r['srv_tts'] / 1000 / r['audio_s']:.3f}",
        ]
        for r in rows
    ]  # fmt: skip
    lines += table(headers, cells)
    if gpu:
        lines += ["", "Row for row against the seed's RTX 4090 table (seconds; production models):", ""]
        seed_cells = []
        for r in rows:
            seed = SEED_RTX_4090_S[r["size"]]
            seed_cells.append(
                [r["size"]] + [f"{r[f'srv_{s}'] / 1000:.2f} / {seed[s]:.1f}" for s in ("stt", "llm", "tts")]
            )
        lines += table(["input", "STT ours / seed", "LLM ours / seed", "TTS ours / seed"], seed_cells)
    lines += ["", f"*Machine: {machine.summary()}.*", "", "## Server over raw library", ""]
    headers = [
        "input", "raw STT ms", "faster-whisper file path ms", "/stt ms", "/stt ratio",
        "raw LLM ms", "plain `generate` ms", "/v1/chat/completions ms", "LLM ratio",
        "raw TTS ms", "/tts ms", "/tts ratio",
    ]  # fmt: skip
    cells = [
        [
            r["size"], r["raw_stt"], r["lib_stt"], r["srv_stt"], f"**{r['stt_ratio']}**",
            r["raw_llm"], r.get("lib_llm", "n/a"), r["srv_llm"], f"**{r['llm_ratio']}**",
            r["raw_tts"], r["srv_tts"], f"**{r['tts_ratio']}**",
        ]
        for r in rows
    ]  # fmt: skip
    lines += table(headers, cells)
    lines += [
        "",
        f"Raw STT: {raw.labels['stt']} on a decoded 16 kHz array; /stt adds the upload, decoding "
        f"(PyAV), resampling (soxr) and JSON. Raw LLM: {raw.labels['llm']}, the call the server "
        "makes; "
        + (
            f"the plain `generate` column is {raw.labels['llm_library']} (the transformers engine's "
            "CPU default reads the prompt in float32 and generates with a bfloat16 copy). "
            if "llm_library" in raw.labels
            else "the engine's call is the library's (llama.cpp's chat completion in-process), so there "
            "is no plainer call to set beside it. "
        )
        + f"Raw TTS: {raw.labels['tts']}; /tts adds text cleaning, segmentation (the medium and long "
        "texts are over SEGMENT_THRESHOLD_CHARS, so the server makes several calls and inserts "
        "silences) and WAV encoding. Each timed call starts after a 0.3 s pause; the sides alternate "
        "order. **Goal: ratio <= 1.05.**",
        "",
        f"*Machine: {machine.summary()}.*",
        "",
        "![stages](stages.png)",
        "",
    ]
    plot(rows, out / "stages.png")
    return lines


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    plt = pyplot()
    sizes = [str(r["size"]) for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.27
    xs = range(len(sizes))
    for offset, stage in ((-width, "stt"), (0, "llm"), (width, "tts")):
        left.bar(
            [x + offset for x in xs], [r[f"srv_{stage}"] / 1000 for r in rows], width, label=stage.upper()
        )
    left.set_xticks(list(xs), sizes)
    left.set_ylabel("seconds (median)")
    left.set_title("Stage latency through the server")
    left.legend()
    for offset, stage in ((-width, "stt"), (0, "llm"), (width, "tts")):
        right.bar(
            [x + offset for x in xs], [r[f"{stage}_ratio"] for r in rows], width, label=f"{stage.upper()}"
        )
    right.axhline(1.05, color="red", linestyle="--", linewidth=1, label="goal 1.05")
    right.axhline(1.0, color="grey", linewidth=0.8)
    right.set_xticks(list(xs), sizes)
    right.set_ylim(0.5, max(1.3, *(r[f"{s}_ratio"] for r in rows for s in ("stt", "llm", "tts"))) + 0.05)
    right.set_title("Server time / raw library time")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
