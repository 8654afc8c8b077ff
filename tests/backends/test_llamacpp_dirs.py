"""The llama.cpp engine's private socket directories: a server killed with -9 cannot remove its
own, so the next one to start removes those whose process is gone, and no other."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from backend.app.backends.llamacpp_dirs import SOCKET_DIR_PREFIX, STALE_AFTER_S, remove_stale_dirs


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _socket_dir(root: Path, pid: int | None, age_s: float = 0.0) -> Path:
    directory = Path(tempfile.mkdtemp(prefix=SOCKET_DIR_PREFIX, dir=root))
    (directory / "llama.sock").touch()  # a socket file nobody listens on
    if pid is not None:
        (directory / "pid").write_text(str(pid))
    if age_s:
        old = time.time() - age_s
        os.utime(directory, (old, old))
    return directory


def test_directories_of_dead_servers_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    dead = [_socket_dir(tmp_path, _dead_pid()) for _ in range(3)]
    alive = _socket_dir(tmp_path, os.getpid())
    # Without a pid file (an older version's, or one being made): removed once old and unanswered.
    old_orphan = _socket_dir(tmp_path, None, age_s=STALE_AFTER_S + 60)
    new_orphan = _socket_dir(tmp_path, None)
    other = tmp_path / "someone-else"
    other.mkdir()

    assert remove_stale_dirs(tmp_path) == 4
    assert not any(d.exists() for d in (*dead, old_orphan))
    assert alive.exists() and new_orphan.exists() and other.exists()


def test_a_killed_server_leaves_nothing_behind_once_the_next_starts(tmp_path: Path) -> None:
    """kill -9 a process that loaded the engine; the next engine to load removes its directory."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    code = (
        "from backend.app.backends.llamacpp_llm import LlamaCppChatBackend; import os, time; "
        "llm = LlamaCppChatBackend(context_tokens=256, threads=1); print('up', flush=True); time.sleep(60)"
    )
    child = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, cwd=Path.cwd())
    assert child.stdout is not None and child.stdout.readline().strip() == b"up"
    left = list(tmp_path.glob(SOCKET_DIR_PREFIX + "*"))
    assert len(left) == 1 and (left[0] / "pid").read_text() == str(child.pid)
    child.kill()
    child.wait()
    assert left[0].exists()  # a hard kill removes nothing
    assert remove_stale_dirs(tmp_path) == 1
    assert not left[0].exists()
