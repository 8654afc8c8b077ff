"""The benchmark suite's command line and helpers (the measurements themselves run in `make bench`)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.common import percentile, table
from tests.conftest import REPO


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_help_names_every_section() -> None:
    result = run("--help")
    assert result.returncode == 0
    for section in ("stages", "llm", "latency", "concurrency", "startup", "wyoming", "serve", "--gpu"):
        assert section in result.stdout


def test_unknown_sections_are_refused() -> None:
    result = run("--only", "stages,speed")
    assert result.returncode == 2 and "unknown sections: speed" in result.stderr


def test_gpu_mode_says_it_needs_cuda_when_there_is_none() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present: the GPU suite would run")
    result = run("--gpu", "--only", "stages")
    assert result.returncode == 2 and "needs a CUDA GPU" in result.stdout


def test_percentiles_and_tables() -> None:
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert percentile(values, 50) == 3.0 and percentile(values, 95) == 5.0 and percentile(values, 0) == 1.0
    assert table(["a", "b"], [[1, 2]]) == ["| a | b |", "|---|---|", "| 1 | 2 |"]
