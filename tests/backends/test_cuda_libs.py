"""cuBLAS 12 from its pip wheel, for CTranslate2 on the GPU: found and loaded when the wheel is
installed, nothing loaded (and no error) when it is not."""

from __future__ import annotations

import _ctypes
import shutil
from pathlib import Path

import pytest

from backend.app.backends.cuda_libs import CUBLAS_12, preload_cublas12, wheel_library_dirs


def test_nothing_is_loaded_without_the_wheel() -> None:
    assert wheel_library_dirs("no_such_vendor.cublas") == []
    assert preload_cublas12("no_such_vendor.cublas") == []


def test_the_wheels_libraries_are_loaded_globally(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A package laid out as nvidia-cublas-cu12 is (nvidia/cublas/lib/*.so.12), holding a real
    shared library under each name: both load, Lt first."""
    lib = tmp_path / "fakevendor" / "cublas" / "lib"
    lib.mkdir(parents=True)
    (tmp_path / "fakevendor" / "cublas" / "__init__.py").write_text("")
    shared = Path(_ctypes.__file__)  # a real shared object, already loadable in this process
    for name in CUBLAS_12:
        shutil.copy(shared, lib / name)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert wheel_library_dirs("fakevendor.cublas") == [lib]
    assert preload_cublas12("fakevendor.cublas") == [lib / name for name in CUBLAS_12]
