"""The benchmark suite: `make bench` (embedded models, CPU) or `make bench-gpu` (production models).

Runs every section against the real server (`python -m backend.app`) and writes
bench/results/README.md (bench/results/gpu/README.md with --gpu): tables and PNG charts for
- per-stage latency by input length, and server-over-raw-library ratios (STT, LLM, TTS);
- the LLM engines side by side in-process (llama.cpp, transformers): first sentence, tokens/s,
  prompt reuse across turns;
- the LLM candidates scored on 88 everyday spoken questions, English and Chinese (SmolLM2, Qwen2.5
  0.5B and 1.5B), with the first-audio latency each gives;
- the same candidates on tool calling: 50 spoken requests over ten functions (right function, right
  arguments, no call when none is needed), with the time to the decision and to the answer;
- spoken turns that call a server-side (MCP) tool against plain ones: end of speech to first audio,
  with the spoken acknowledgement and without;
- the embedded English voices side by side (hibari af_heart, Piper joe): speed, round-trip errors;
- Chinese: what STT_MODEL_NAME=auto costs, the stages by input length, WebSocket turns
  (needs `make zh-voice zh-llm`);
- STT decoding for turns: beam 1 against beam 5 (time and word error rate);
- word timings: where the voices say each word is, against Whisper's word timestamps (English
  and Chinese) and against the signal where a word follows a pause;
- what a transcription costs by what is in the audio: crafted repetition loops against speech of the
  same length, the raw library against the server's bounded decoding;
- dialogue scripts (two speakers, 1,250-1,500 characters): time to the first audio and real-time
  factor, against the same words as plain text;
- streamed vs non-streamed time to first audio (and the realtime WebSocket);
- OpenAI's Realtime protocol (/v1/realtime, through the SDK) against our own WebSocket, same turns;
- turn-taking: turns ended by meaning against turns ended by silence (requests with a pause to
  think, cut off or not; complete questions, last speech to first audio);
- the server against the raw libraries on an idle CPU and beside a CPU hog;
- a concurrency sweep (1, 2, 8 clients on spoken questions: throughput, p50/p90/max), the models
  taking turns on the cores and not, and a short answer beside a long Piper synthesis;
- overload: 1, 2, 8 and 50 clients on every route mixed, honouring Retry-After and not, admission
  by expected wait against the queues' length only (served per minute, refusals, latencies);
- cold start to ready, and resident memory with every model loaded;
- our Wyoming endpoint against wyoming-faster-whisper and wyoming-piper, protocol against protocol;
- a stored turn on SQLite and on PostgreSQL (DATABASE_URL), 1,000 turns each;
- Ray Serve (backend/serve) against one process: start-up, memory, turn latency, 2 clients.
Every table names the machine (CPU, cores, GPU) and the README lists the library versions.

--gpu needs CUDA. It runs the production models unless the environment (or .env) names others:
STT_MODEL_NAME=large-v3, TTS_MODEL_NAME=vibevoice/VibeVoice-1.5B-hf, and the LLM as configured
(LLM_BACKEND=openai + LLM_BASE_URL for a vLLM/Ollama server, or a local LLM_MODEL on CUDA); the
models must already be in MODELS_DIR (or the hub cache) when the machine is offline. Its stage
table is set row for row beside the seed's RTX 4090 figures.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import httpx

from bench import machine
from bench.common import RESULTS, free_port, start_server, stop_server

SECTIONS = (
    "stages",
    "llm",
    "llm_quality",
    "tool_calls",
    "tool_turns",
    "voices",
    "chinese",
    "beam",
    "stt_cost",
    "dialogue",
    "latency",
    "realtime",
    "transports",
    "word_timings",
    "turns",
    "cpu",
    "concurrency",
    "overload",
    "startup",
    "wyoming",
    "storage",
    "serve",
)
GPU_DEFAULTS = {
    "STT_MODEL_NAME": "large-v3",
    "STT_DEVICE": "cuda",
    "TTS_MODEL_NAME": "vibevoice/VibeVoice-1.5B-hf",
    "TTS_DEVICE": "cuda",
    "LLM_DEVICE": "cuda",
}
QUEUE_SIZE = 8  # >= the sweep's largest level: it measures queueing, not refusals


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gpu", action="store_true", help="run the production models on CUDA")
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections (default: all of {','.join(SECTIONS)})",
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed runs per measurement (median; default 5)"
    )
    parser.add_argument("--quick", action="store_true", help="one or two runs of everything: a smoke test")
    args = parser.parse_args(argv)
    args.sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))} (choose from {', '.join(SECTIONS)})")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    out = RESULTS / "gpu" if args.gpu else RESULTS
    if args.gpu:
        if machine.gpu() is None:
            print(
                "--gpu needs a CUDA GPU (torch.cuda.is_available() is False here); `make bench` runs on CPU"
            )
            return 2
        for name, value in GPU_DEFAULTS.items():
            os.environ.setdefault(name, value)
    else:
        for name in GPU_DEFAULTS:  # the CPU suite is the embedded default, whatever the shell says
            os.environ.pop(name, None)
    os.environ["QUEUE_SIZE"] = str(QUEUE_SIZE)
    out.mkdir(parents=True, exist_ok=True)
    repeats = 1 if args.quick else args.repeats
    from backend.app.core.config import Settings

    settings = Settings()
    device = "cuda" if args.gpu else "cpu"
    started = time.perf_counter()

    if "startup" in args.sections:
        from bench import startup

        rows = startup.measure(1 if args.quick else 3)
        write(out, "startup", startup.section(rows))

    if "overload" in args.sections and not args.gpu:  # servers of its own, one per admission rule
        from bench import overload

        window = 30.0 if args.quick else overload.WINDOW_S
        write(out, "overload", overload.section(overload.measure(window), out))

    if "serve" in args.sections and not args.gpu:  # the GPU layout is config.yaml's, on a cluster
        from bench import serve

        runs = 2 if args.quick else repeats  # the median of one run would be no median
        write(out, "serve", serve.section(serve.measure(runs), runs, out))

    if "llm" in args.sections and not args.gpu:  # in-process, the two CPU engines
        from bench import llm_engines

        result = llm_engines.measure(settings, 1 if args.quick else max(2, repeats // 2))
        write(out, "llm", llm_engines.section(result, out))

    if "llm_quality" in args.sections and not args.gpu:
        from bench import llm_quality

        write(out, "llm_quality", llm_quality.section(llm_quality.measure(settings), out))

    if "tool_calls" in args.sections and not args.gpu:
        from bench import tool_calls

        write(out, "tool_calls", tool_calls.section(tool_calls.measure(settings)))

    if "tool_turns" in args.sections and not args.gpu:
        from bench import tool_turns

        write(out, "tool_turns", tool_turns.section(tool_turns.measure(1 if args.quick else 2)))

    if "voices" in args.sections and not args.gpu:
        from bench import voices

        write(out, "voices", voices.section(voices.measure(settings)))

    if "chinese" in args.sections and not args.gpu:
        from bench import chinese

        missing = chinese.available(settings)
        if missing:
            print(f"chinese section skipped: {missing} not prepared", flush=True)
        else:
            write(
                out, "chinese", chinese.section(chinese.measure(settings, 2 if args.quick else repeats), out)
            )

    if "storage" in args.sections and not args.gpu:  # in-process, against a local PostgreSQL
        from bench import storage

        count = 200 if args.quick else storage.TURNS
        write(out, "storage", storage.section(storage.measure(count), out, count))

    if "beam" in args.sections and not args.gpu:
        from bench import stt_beam

        write(out, "beam", stt_beam.section(stt_beam.measure(1 if args.quick else 2)))

    if "word_timings" in args.sections and not args.gpu:  # in-process, the CPU voices
        from bench import word_timings

        write(out, "word_timings", word_timings.section(word_timings.measure(settings), out))

    if "stt_cost" in args.sections and not args.gpu:
        from bench import stt_cost

        write(out, "stt_cost", stt_cost.section(stt_cost.measure(1 if args.quick else 2)))

    if "dialogue" in args.sections:  # in-process, the configured TTS engine
        from bench import dialogue

        runs = 1 if args.quick else repeats
        write(out, "dialogue", dialogue.section(dialogue.measure(settings, runs), runs))

    own_process = (
        "startup", "serve", "llm", "llm_quality", "tool_calls", "tool_turns", "voices", "chinese", "beam",
        "stt_cost", "dialogue", "storage",
    )  # fmt: skip
    needs_server = [s for s in args.sections if s not in own_process]
    if needs_server:
        port = free_port()
        print(f"starting the server ({settings.stt.model_name} / {settings.llm.backend} / "
              f"{settings.tts.model_name}) ...", flush=True)  # fmt: skip
        wyoming_port = free_port()  # our Wyoming endpoint, for the wyoming section
        server = start_server(port, WYOMING_URI=f"tcp://127.0.0.1:{wyoming_port}")
        base = f"http://127.0.0.1:{port}"
        try:
            with httpx.Client(base_url=base, timeout=600) as http:
                if "stages" in args.sections:
                    from bench import stages

                    raw = stages.Raw(settings)
                    rows = stages.measure(http, raw, repeats)
                    write(out, "stages", stages.section(rows, raw, repeats, out, args.gpu))
                    del raw
                if "latency" in args.sections:
                    from bench import latency

                    runs, durations = latency.measure(port, 1 if args.quick else repeats)
                    write(out, "latency", latency.section(runs, durations, out))
                if "realtime" in args.sections:
                    from bench import realtime

                    runs, durations = realtime.measure(port, 1 if args.quick else repeats)
                    write(out, "realtime", realtime.section(runs, durations, out))
                if "transports" in args.sections:
                    from bench import transports

                    rows, rates = transports.measure(port, 1 if args.quick else 2)
                    write(out, "transports", transports.section(rows, rates, out))
                if "turns" in args.sections:
                    from bench import turns

                    runs = 1 if args.quick else 2
                    write(out, "turns", turns.section(turns.measure(port, runs), runs, out))
                if "cpu" in args.sections and not args.gpu:
                    from bench import cpu_share

                    runs = 1 if args.quick else repeats
                    write(out, "cpu", cpu_share.section(cpu_share.measure(http, settings, runs), runs))
                if "concurrency" in args.sections:
                    from bench import concurrency

                    window = 30.0 if args.quick else 60.0
                    clips = concurrency.spoken_questions(http)
                    repeats_n = 1 if args.quick else 3
                    sweeps = {"turns": concurrency.measure(base, clips, window)}
                    neighbours = {"turns": concurrency.neighbour(base, repeats_n)}
                    other_port = free_port()
                    other = start_server(other_port, CPU_SLICE_MS="0")
                    try:
                        other_base = f"http://127.0.0.1:{other_port}"
                        sweeps["at once"] = concurrency.measure(other_base, clips, window)
                        neighbours["at once"] = concurrency.neighbour(other_base, repeats_n)
                    finally:
                        stop_server(other)
                    slice_ms = settings.limits.cpu_slice_ms
                    write(
                        out,
                        "concurrency",
                        concurrency.section(
                            sweeps, neighbours, window, len(clips), QUEUE_SIZE, slice_ms, out
                        ),
                    )
                if "wyoming" in args.sections:
                    from bench import wyoming

                    missing = wyoming.available()
                    if missing:
                        print(f"wyoming comparison skipped: {missing}", flush=True)
                    else:
                        rows = wyoming.measure(http, wyoming_port, settings, repeats, device)
                        write(out, "wyoming", wyoming.section(rows, settings, repeats, out))
        finally:
            stop_server(server)
    readme = assemble(out, args.gpu)
    print(f"\nwrote {readme.relative_to(Path.cwd()) if readme.is_relative_to(Path.cwd()) else readme} "
          f"in {(time.perf_counter() - started) / 60:.1f} min")  # fmt: skip
    return 0


def write(out: Path, name: str, lines: list[str]) -> None:
    (out / f"{name}.md").write_text("\n".join(lines))
    print("\n".join(lines), flush=True)


def assemble(out: Path, gpu: bool) -> Path:
    """README.md from the sections' files (those of earlier runs stay until measured again)."""
    extra: dict[str, str] = {}
    try:
        from bench import wyoming

        if wyoming.available() is None:
            extra = wyoming.wyoming_versions()
    except Exception:  # the versions line is informative; never fail the report for it
        extra = {}
    lines = [
        "# Benchmarks" + (" (GPU, production models)" if gpu else " (CPU, embedded models)"),
        "",
        f"Written by `python -m bench{' --gpu' if gpu else ''}` (`make bench{'-gpu' if gpu else ''}`) "
        f"on {time.strftime('%Y-%m-%d')}. Each section's numbers come from one run, measured side by "
        "side; re-run it on your machine to compare.",
        "",
        f"- **Machine:** {machine.summary()}",
        f"- **Libraries:** {machine.versions_line(extra)}",
        "",
    ]
    for name in SECTIONS:
        part = out / f"{name}.md"
        if part.exists():
            lines += [part.read_text().rstrip(), ""]
    for name, title in (("long_text.md", "Long text"), ("soak.md", "Soak test")):
        if not gpu and (out / name).exists():
            lines += [f"See also: [{title}]({name})."]
    readme = out / "README.md"
    readme.write_text("\n".join(lines).rstrip() + "\n")
    return readme


if __name__ == "__main__":
    sys.exit(main())
