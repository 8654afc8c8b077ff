"""Real file systems for storage tests: a small tmpfs (a disk that really fills up) and a read-only
one (a DATA_DIR mounted `:ro`). Mounting needs root with CAP_SYS_ADMIN; elsewhere the tests that
use these are skipped, and pytest's summary says why."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def tmpfs(
    where: Path, size_kb: int, read_only: bool = False, seed: dict[str, bytes] | None = None
) -> Iterator[Path]:
    """Mount a tmpfs of `size_kb` at `where` (with `seed` files written first, then remounted
    read-only when asked) for the duration of the block."""
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    try:
        for name, data in (seed or {}).items():
            (where / name).write_bytes(data)
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(directory: Path, leave_kb: int = 0) -> None:
    """Fill the file system of `directory` until about `leave_kb` is left."""
    import shutil

    free = shutil.disk_usage(directory).free - leave_kb * 1024
    with (directory / "filler").open("wb") as out:
        while free > 0:
            chunk = min(free, 1 << 20)
            try:
                out.write(b"\0" * chunk)
                out.flush()
            except OSError:
                break
            free -= chunk
