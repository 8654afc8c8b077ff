"""The machine and library versions a benchmark ran on, reported with every table."""

from __future__ import annotations

import contextlib
import os
import platform
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import psutil

LIBRARIES = (
    "torch",
    "transformers",
    "faster-whisper",
    "ctranslate2",
    "piper-tts",
    "onnxruntime",
    "fastapi",
    "uvicorn",
    "ray",
)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu() -> str | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    memory = torch.cuda.get_device_properties(0).total_memory / 2**30
    return f"{', '.join(names)} ({memory:.0f} GiB), CUDA {torch.version.cuda}"


def versions(extra: dict[str, str] | None = None) -> dict[str, str]:
    found: dict[str, str] = {"python": platform.python_version()}
    for name in LIBRARIES:
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    found.update(extra or {})
    return found


@cache
def summary() -> str:
    """One line: CPU, cores, memory, GPU and OS (repeated under every table)."""
    cores = psutil.cpu_count(logical=False) or os.cpu_count()
    threads = os.cpu_count()
    memory = psutil.virtual_memory().total / 2**30
    return (
        f"{cpu_model()}, {cores} cores / {threads} threads, {memory:.0f} GiB RAM, "
        f"GPU: {gpu() or 'none'}, {platform.system()} {platform.release()}"
    )


def versions_line(extra: dict[str, str] | None = None) -> str:
    return ", ".join(f"{name} {v}" for name, v in versions(extra).items())
