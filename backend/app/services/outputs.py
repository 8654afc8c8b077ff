"""Synthesised audio kept for download at /outputs/{name}, with a bound on how many files stay."""

from __future__ import annotations

import os
import re
import threading
import uuid
from pathlib import Path

from backend.app.core.errors import NotFoundError

_NAME_RE = re.compile(r"^[0-9a-f]{32}\.(wav|flac|mp3|ogg|pcm)$")


class OutputStore:
    """Writes files under server-generated names; reads only names of that exact form."""

    def __init__(self, directory: Path, keep: int) -> None:
        self.directory = directory
        self.keep = keep
        self._lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True)

    def save(self, data: bytes, extension: str) -> str:
        name = f"{uuid.uuid4().hex}.{extension}"
        tmp = self.directory / f".{name}.part"
        tmp.write_bytes(data)
        os.replace(tmp, self.directory / name)
        self._prune()
        return name

    def path(self, name: str) -> Path:
        """The file for a name this store generated; 404 for anything else."""
        if not _NAME_RE.match(name):
            raise NotFoundError(f"no output named {name!r}")
        path = self.directory / name
        if not path.is_file():
            raise NotFoundError(f"output {name!r} does not exist (it may have been pruned)")
        return path

    def remove(self, names: list[str]) -> int:
        """Delete generated files by name (others are ignored); returns how many were removed."""
        removed = 0
        for name in names:
            path = self.directory / name
            if _NAME_RE.match(name) and path.is_file():
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def _prune(self) -> None:
        with self._lock:
            files = [p for p in self.directory.iterdir() if _NAME_RE.match(p.name)]
            if len(files) <= self.keep:
                return
            files.sort(key=lambda p: p.stat().st_mtime)
            for old in files[: len(files) - self.keep]:
                old.unlink(missing_ok=True)
