"""The environment a process that runs the models sets for itself before they load: read once by
their libraries as they load, so it must be in place first. `python -m backend.app` sets it at
start-up; each Ray Serve model replica in its constructor (backend/serve/deployments.py). A variable
the user has set is left as it is."""

from __future__ import annotations

import os

MODEL_PROCESS_ENV: dict[str, str] = {
    # OpenMP threads (CTranslate2's and llama.cpp's libgomp) spin this many times before sleeping
    # once their work is done; GNU's default, 300,000, keeps them burning cores between the many
    # small parallel regions of a request. On a CPU shared with another process, that made
    # /v1/audio/transcriptions 2.8x slower than raw faster-whisper beside the same load; 10,000
    # costs nothing idle and keeps the server within ~1.1x (bench/results/cpu.md).
    "GOMP_SPINCOUNT": "10000",
    # Progress bars (model conversion, downloads) are not log lines: they would break the JSON log.
    "TQDM_DISABLE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
}


def set_model_process_env() -> None:
    """Set each of `MODEL_PROCESS_ENV` that is not set already; before any model library loads."""
    for name, value in MODEL_PROCESS_ENV.items():
        os.environ.setdefault(name, value)
