"""The private socket directories of the llama.cpp engines, and the removal of stale ones.

Each engine's llama.cpp server listens on a Unix socket in a 0700 temporary directory; a process
killed with -9 cannot remove its own, so every new engine removes those whose owner is gone.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

logger = logging.getLogger(__name__)

SOCKET_DIR_PREFIX = "voice-llamacpp-"
STALE_AFTER_S = 60.0
"""A socket directory without a pid file (one being made, or one of an older version) is left
alone this long before it counts as stale."""


def remove_stale_dirs(root: Path | None = None) -> int:
    """Remove the socket directories of servers that no longer run (a process killed with -9
    cannot remove its own): those whose `pid` names a process that is gone, and old ones with no
    pid file and no socket that answers. Returns how many were removed."""
    root = Path(root or tempfile.gettempdir())
    removed = 0
    for directory in root.glob(SOCKET_DIR_PREFIX + "*"):
        try:
            # By uid, not name: a container's user may have no name (no passwd entry).
            if not directory.is_dir() or directory.stat().st_uid != os.getuid():
                continue
            if not _stale(directory):
                continue
        except OSError:
            continue
        shutil.rmtree(directory, ignore_errors=True)
        removed += 1
    if removed:
        logger.info("removed %d stale llama.cpp socket directories from %s", removed, root)
    return removed


def _stale(directory: Path) -> bool:
    pid_file = directory / "pid"
    if pid_file.exists():
        try:
            pid = int(pid_file.read_text().strip())
        except ValueError:
            return True
        return not _alive(pid)
    if time.time() - directory.stat().st_mtime < STALE_AFTER_S:
        return False
    return not _answers(directory / "llama.sock")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True
