"""Ray Serve against one process: what the scale-out layout costs on one machine.

The same embedded models, one after the other in one run: `python -m backend.app`, then the Serve
application of backend/serve/config.yaml (`serve run`, a local Ray; one replica per model, no GPUs
requested). For each: launch -> ready, resident memory with every model loaded (the whole process
tree: Ray's own processes and one per replica), the median whole /conversation turn and the
median time to first audio of a streamed turn (the 3.3 s spoken request), and the throughput of
2 clients sending turns at once. The ratio column is Serve over one process.

On a single small machine Serve can only add: an HTTP proxy hop, a handle call per stage (per
sentence for TTS), and a process per replica. It pays off when replicas spread over several GPUs
or nodes; this table says what that layout costs before it does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench import machine
from bench.common import (
    REPO,
    free_port,
    median,
    pyplot,
    rss_bytes,
    start_server,
    stop_server,
    table,
    wait_ready,
)
from bench.concurrency import CLIP, _level
from bench.latency import conversation_plain, conversation_streamed

CONFIG = REPO / "backend" / "serve" / "config.yaml"


def local_config(
    root: Path, port: int, replicas: dict[str, int] | None = None, ingress: int = 1, **settings: str
) -> Path:
    """The shipped Serve config, scaled for this machine (no GPUs, fractions of its cores), with
    `ingress` ingress replicas and `settings` for every replica; written under `root`."""
    replicas = {"stt": 1, "chat": 1, "tts": 1, **(replicas or {})}
    config = yaml.safe_load(CONFIG.read_text())
    config["http_options"] = {"host": "127.0.0.1", "port": port}
    args = config["applications"][0]["args"]
    share = round((os.cpu_count() or 2) / (sum(replicas.values()) + ingress), 2)
    for stage, count in replicas.items():
        args[stage] = {"num_replicas": count, "num_gpus": 0, "num_cpus": share}
    args["ingress_cpus"] = share
    args["ingress_replicas"] = ingress
    args["env"] = settings
    path = root / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def launch_serve(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """`serve run <config>` in a session of its own (it starts a local Ray instance)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(PYTHONPATH=str(REPO), RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
    with log.open("w") as out:
        return subprocess.Popen(
            [str(Path(sys.executable).parent / "serve"), "run", str(config)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_serve(process: subprocess.Popen[bytes]) -> None:
    """Stop `serve run` as Ctrl-C does (it deletes the app and its Ray), then anything left."""
    process.send_signal(signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=60)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _measure_one(base: str, pid: int, ready_s: float, repeats: int) -> dict[str, Any]:
    clip = CLIP.read_bytes()
    with httpx.Client(base_url=base, timeout=300) as http:
        conversation_plain(http, clip)  # warm: first-call costs on every path
        plain, streamed = [], []
        for _ in range(repeats):
            plain.append(conversation_plain(http, clip)["total_s"])
            streamed.append(conversation_streamed(http, clip)["first_audio_s"])
    concurrent = _level(base, [clip], clients=2, turns_per_client=max(2, repeats // 2))
    return {
        "ready_s": ready_s,
        "rss_gib": rss_bytes(pid) / 2**30,
        "turn_s": median(plain),
        "first_audio_s": median(streamed),
        "per_min_2": concurrent["per_min"],
        "failed": concurrent["failed"] + concurrent["refused"],
    }


def measure(repeats: int) -> dict[str, dict[str, Any]]:
    overrides = {"LLM_MAX_TOKENS": "32", "HF_HUB_OFFLINE": "1", "QUEUE_SIZE": "8"}
    results: dict[str, dict[str, Any]] = {}
    port = free_port()
    began = time.perf_counter()
    server = start_server(port, **overrides)
    try:
        results["one process"] = _measure_one(
            f"http://127.0.0.1:{port}", server.pid, time.perf_counter() - began, repeats
        )
    finally:
        stop_server(server)
    print(f"serve: one process {results['one process']}", flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        root = Path(tmp)
        port = free_port()
        settings = {
            "MODELS_DIR": str(REPO / "models"),
            "OUTPUTS_DIR": str(root / "outputs"),
            "DATA_DIR": str(root / "data"),
            "LOG_LEVEL": "warning",
            **overrides,
        }
        results["Ray Serve"] = _measure_serve(root, settings, repeats)
        print(f"serve: Ray Serve {results['Ray Serve']}", flush=True)
        try:
            from tests.postgres import start_postgres

            database = start_postgres()
        except (RuntimeError, OSError) as e:
            print(f"serve: two ingress replicas skipped ({e})", flush=True)
            return results
        try:  # the same, with two ingress replicas sharing one PostgreSQL database
            shared = {**settings, "DATABASE_URL": database.new_database()}
            results[TWO_INGRESS] = _measure_serve(root, shared, repeats, ingress=2)
        finally:
            database.remove()
        print(f"serve: {TWO_INGRESS} {results[TWO_INGRESS]}", flush=True)
    return results


TWO_INGRESS = "Serve, 2 ingress + PostgreSQL"


def _measure_serve(root: Path, settings: dict[str, str], repeats: int, ingress: int = 1) -> dict[str, Any]:
    port = free_port()
    began = time.perf_counter()
    process = launch_serve(local_config(root, port, ingress=ingress, **settings), root / "serve.log")
    try:
        wait_ready(process, port)
        return _measure_one(f"http://127.0.0.1:{port}", process.pid, time.perf_counter() - began, repeats)
    finally:
        stop_serve(process)


def section(results: dict[str, dict[str, Any]], repeats: int, out: Path) -> list[str]:
    one, serve = results["one process"], results["Ray Serve"]
    rows = [
        ("launch -> ready, s", "ready_s", "{:.1f}"),
        ("RSS with the models loaded, GiB", "rss_gib", "{:.2f}"),
        ("whole /conversation turn (median), s", "turn_s", "{:.2f}"),
        ("streamed: first audio (median), s", "first_audio_s", "{:.2f}"),
        ("2 clients: turns / min", "per_min_2", "{:.1f}"),
    ]
    two = results.get(TWO_INGRESS)
    cells = [
        [label, fmt.format(one[key]), fmt.format(serve[key]), f"{serve[key] / one[key]:.2f}"]
        + ([fmt.format(two[key]), f"{two[key] / serve[key]:.2f}"] if two else [])
        for label, key, fmt in rows
    ]
    headers = ["", "one process", "Ray Serve", "Serve / one"]
    headers += [TWO_INGRESS, "2 ingress / 1"] if two else []
    lines = [
        "## Ray Serve vs one process",
        "",
        "The embedded models, one replica each, on this machine: `python -m backend.app`, then "
        f"`serve run` of backend/serve/config.yaml; medians of {repeats} turns each.",
        "",
        *table(headers, cells),
        "",
        f"Errors or refusals in the 2-client runs: {one['failed']} (one process), {serve['failed']} (Serve)"
        + (f", {two['failed']} (2 ingress)." if two else "."),
        "The 2-ingress column: `ingress_replicas: 2` with `DATABASE_URL` on a local PostgreSQL, so "
        "that either ingress replica serves any conversation and any reply's audio."
        if two
        else "",
        "Serve adds a proxy hop, a handle call per stage (per sentence for TTS) and a process per "
        "replica; it pays off only when replicas spread over several GPUs or nodes.",
        "",
        f"*Machine: {machine.summary()}.*",
        "",
        "![serve](serve.png)",
        "",
    ]
    plot(results, out / "serve.png")
    return lines


def plot(results: dict[str, dict[str, Any]], path: Path) -> None:
    plt = pyplot()
    names = list(results)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for offset, (key, label) in enumerate((("turn_s", "whole turn"), ("first_audio_s", "first audio"))):
        left.bar(
            [i + offset * 0.4 for i in range(len(names))], [results[n][key] for n in names], 0.4, label=label
        )
    left.set_xticks([i + 0.2 for i in range(len(names))], names)
    left.set_ylabel("seconds (median)")
    left.legend()
    right.bar(names, [results[n]["rss_gib"] for n in names])
    right.set_ylabel("RSS, GiB")
    fig.suptitle("Ray Serve vs one process (embedded models, CPU)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
