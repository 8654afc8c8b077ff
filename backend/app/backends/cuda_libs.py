"""CUDA libraries from pip wheels, for an engine that finds them by name.

CTranslate2 (faster-whisper) loads cuBLAS 12 by its file name, libcublas.so.12. torch from PyPI is
built for CUDA 13 and brings CUDA 13's libraries, so the GPU image (and `scripts/install.sh --torch
cuda`) installs cuBLAS 12 as the `nvidia-cublas-cu12` wheel. Loading its libraries once, globally,
before a model goes on the GPU lets CTranslate2 find them without LD_LIBRARY_PATH; where the system
has CUDA 12 itself and the wheel is absent, nothing is loaded and the system's copy is used.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

CUBLAS_12 = ("libcublasLt.so.12", "libcublas.so.12")  # Lt first: libcublas needs it


def wheel_library_dirs(package: str) -> list[Path]:
    """The `lib` directories of an installed NVIDIA wheel (`nvidia.cublas`), or none."""
    try:
        spec = importlib.util.find_spec(package)
    except ModuleNotFoundError:  # its parent (`nvidia`) is not installed either
        return []
    if spec is None or spec.submodule_search_locations is None:
        return []
    return [Path(base) / "lib" for base in spec.submodule_search_locations if (Path(base) / "lib").is_dir()]


def preload_cublas12(package: str = "nvidia.cublas") -> list[Path]:
    """Load cuBLAS 12 from its wheel, when installed; returns the files loaded."""
    loaded: list[Path] = []
    for directory in wheel_library_dirs(package):
        for name in CUBLAS_12:
            path = directory / name
            if path.is_file():
                ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
                loaded.append(path)
    if loaded:
        logger.info("cuBLAS 12 for CTranslate2 loaded from %s", loaded[0].parent)
    return loaded
