"""scripts/gpu_check.py, the whole-stack check for a GPU machine: without a GPU it refuses with the
reason and exit status 2; with --allow-cpu it runs every step on the embedded models here (so the
script a GPU run depends on is itself tested)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def run_check(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("API_KEY", "STT_MODEL_NAME", "TTS_MODEL_NAME")}
    clean.update(
        MODELS_DIR=str(REPO / "models"),
        DATA_DIR=str(tmp_path / "data"),
        OUTPUTS_DIR=str(tmp_path / "outputs"),
        HF_HUB_OFFLINE="1",
        LLM_MAX_TOKENS="32",
        **env,
    )
    return subprocess.run(
        [sys.executable, "-m", "scripts.gpu_check", *args],
        cwd=REPO,
        env=clean,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_without_a_gpu_it_says_what_is_missing(tmp_path: Path) -> None:
    result = run_check(tmp_path)
    assert result.returncode == 2
    assert "missing: a CUDA GPU visible to torch" in result.stderr


def test_every_step_runs_on_the_embedded_models(tmp_path: Path) -> None:
    result = run_check(tmp_path, "--allow-cpu")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "FAILED" not in out and out.rstrip().endswith("OK: the whole stack ran")
    steps = ("TTS -> STT word error rate", "POST /conversation answered 200", "reply audio", "streamed")
    for step in (
        *steps,
        "every turn of the script was spoken",
        "dialogue word error rate",
        "word timings within",
    ):
        assert step in out, step
    assert '"server total_ms"' in out  # the server's own timings are reported
