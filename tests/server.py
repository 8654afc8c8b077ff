"""Start and stop the real server (`python -m backend.app`) for the end-to-end tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest

from tests.ports import free_port

REPO = Path(__file__).parent.parent
STARTUP_TIMEOUT_S = 240


@contextmanager
def in_thread(app: Any, lifespan: Literal["on", "off"] = "off") -> Iterator[int]:
    """An app under uvicorn in a thread of this process (sharing its loaded models), on a free
    localhost port (yielded); stopped on exit."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan=lifespan)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(20)


def server_dir(
    factory: pytest.TempPathFactory, name: str, voices: tuple[str, ...] = ("en-Joe_man.wav",)
) -> Path:
    """A fresh directory for one test server, with a VOICES_DIR holding copies of `voices`."""
    root = factory.mktemp(name)
    (root / "voices").mkdir()
    for voice in voices:
        shutil.copy(REPO / "voices" / voice, root / "voices")
    return root


def server_settings(tmp: Path, **extra: str) -> dict[str, str]:
    """The settings of a test server: the repo's models, `tmp`'s directories, short replies."""
    return {
        "MODELS_DIR": str(REPO / "models"),
        "VOICES_DIR": str(tmp / "voices"),
        "OUTPUTS_DIR": str(tmp / "outputs"),
        "DATA_DIR": str(tmp / "data"),
        "LLM_MODEL": "small",  # the default Qwen is served by test_api.py and its own tests
        "LLM_MAX_TOKENS": "32",
        "QUEUE_SIZE": "1",
        "MAX_AUDIO_SECONDS": "60",
        "HF_HUB_OFFLINE": "1",
        **extra,
    }


def server_env(tmp: Path, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("API_KEY", "CORS_ORIGINS")}
    env.update(HOST="127.0.0.1", PORT=str(port), PYTHONUNBUFFERED="1")
    env.update(server_settings(tmp, **extra))
    return env


def start_server(
    tmp: Path, log_name: str = "server.log", ready: Callable[[httpx.Response], bool] | None = None, **env: str
) -> tuple[subprocess.Popen[bytes], str]:
    """Start `python -m backend.app` on a free port and wait until it is ready (`ready`, given
    /health/ready's answer: by default, a 200)."""
    port = free_port()
    log_path = tmp / log_name
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "backend.app"],
            cwd=REPO,
            env=server_env(tmp, port, **env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    wait_ready(process, base, log_path, ready=ready)
    return process, base


def wait_ready(
    process: subprocess.Popen[bytes],
    base: str,
    log_path: Path,
    timeout_s: float = STARTUP_TIMEOUT_S,
    ready: Callable[[httpx.Response], bool] | None = None,
) -> None:
    """Wait until `base` answers /health/ready with 200 (or as `ready` wants); fail with the log's
    end if the process exits or the time runs out (the process is then killed)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            pytest.fail(f"{process.args} exited at start-up:\n{log_path.read_text()[-8000:]}")
        try:
            response = httpx.get(f"{base}/health/ready", timeout=2)
            if ready(response) if ready is not None else response.status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"not ready in {timeout_s:.0f} s:\n{log_path.read_text()[-8000:]}")
        time.sleep(0.5)


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


def rss_kib(pid: int) -> int:
    """Resident memory of a process, in KiB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")
