"""Synthesised audio kept for download at /outputs/{name}, and its retention.

Files older than OUTPUTS_TTL_HOURS, then the oldest beyond OUTPUTS_MAX_MB, are removed by a periodic
sweep, except files that a stored turn younger than the TTL still refers to. Kept in OUTPUTS_DIR
(`OutputStore`), or, with DATABASE_URL, in the shared database (`DatabaseOutputs`), so that any
replica serves any reply's audio.
"""

from __future__ import annotations

import os
import re
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from backend.app.core.errors import NotFoundError, storage_error
from backend.app.core.paths import PathOutsideError, low_disk, require_free_disk, resolve_inside

if TYPE_CHECKING:
    from backend.app.storage.postgres import PostgresStore

_NAME_RE = re.compile(r"[0-9a-f]{32}\.(wav|flac|mp3|ogg|aac|pcm)")


class ReplyAudioStore(Protocol):
    ttl_s: float

    def disk_problem(self) -> str | None: ...
    def require_room(self) -> None: ...
    def save(self, data: bytes, extension: str) -> str: ...
    def fetch(self, name: str) -> Path | bytes: ...
    def remove(self, names: Iterable[str]) -> int: ...
    def sweep(self, protected: set[str], now: float | None = None) -> int: ...


class OutputStore:
    """Writes files under server-generated names; reads and removes only names of that exact form."""

    def __init__(self, directory: Path, ttl_hours: float, max_mb: float, min_free_mb: float = 0) -> None:
        self.directory = directory
        self.ttl_s = ttl_hours * 3600
        self.max_bytes = int(max_mb * 1024 * 1024)
        self.min_free_bytes = int(min_free_mb * 1024 * 1024)
        self._lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True)

    def disk_problem(self) -> str | None:
        """Why reply audio could not be kept now (too little free disk), or None."""
        return low_disk(self.directory, self.min_free_bytes)

    def require_room(self) -> None:
        """507 before any work when reply audio could not be kept (MIN_FREE_DISK_MB)."""
        require_free_disk(self.directory, self.min_free_bytes, "the reply audio")

    def save(self, data: bytes, extension: str) -> str:
        name = f"{uuid.uuid4().hex}.{extension}"
        tmp = self.directory / f".{name}.part"
        try:
            tmp.write_bytes(data)
            os.replace(tmp, self.directory / name)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise storage_error(e, "the reply audio") from e
        return name

    def path(self, name: str) -> Path:
        """The file for a name this store generated; 404 for anything else (a symlink planted
        under such a name that leads out of OUTPUTS_DIR included)."""
        if not _NAME_RE.fullmatch(name):
            raise NotFoundError(f"no output named {name!r}")
        try:
            path, _ = resolve_inside([self.directory], name, "output name")
        except PathOutsideError:
            raise NotFoundError(f"no output named {name!r}") from None
        if not path.is_file():
            raise NotFoundError(f"output {name!r} does not exist (it may have expired)")
        return path

    def fetch(self, name: str) -> Path | bytes:
        """What /outputs/{name} sends: the file (404 as `path`)."""
        return self.path(name)

    def remove(self, names: Iterable[str]) -> int:
        """Delete generated files by name (others are ignored); returns how many were removed."""
        removed = 0
        for name in names:
            path = self.directory / name
            if _NAME_RE.fullmatch(name) and path.is_file():
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def sweep(self, protected: set[str], now: float | None = None) -> int:
        """Remove expired files, then the oldest until under the size cap; never `protected` ones."""
        now = time.time() if now is None else now
        with self._lock:
            files = []
            for path in self.directory.iterdir():
                if _NAME_RE.fullmatch(path.name):
                    try:
                        stat = path.stat()
                    except FileNotFoundError:
                        continue
                    files.append((stat.st_mtime, stat.st_size, path))
            files.sort()
            doomed = {p for mtime, _, p in files if now - mtime > self.ttl_s and p.name not in protected}
            total = sum(size for _, size, p in files if p not in doomed)
            for _, size, path in files:
                if total <= self.max_bytes:
                    break
                if path not in doomed and path.name not in protected:
                    doomed.add(path)
                    total -= size
            for path in doomed:
                path.unlink(missing_ok=True)
            return len(doomed)


class DatabaseOutputs:
    """Reply audio in the shared PostgreSQL database (DATABASE_URL): written by the replica that
    spoke it, served by any. The same names, TTL and size cap as files; the database's server
    watches its own disk. Audio costs database space and a round trip per GET (a reply is tens to
    hundreds of kilobytes): no object store to run beside it, no shared volume to mount."""

    def __init__(self, store: PostgresStore, ttl_hours: float, max_mb: float) -> None:
        self.store = store
        self.ttl_s = ttl_hours * 3600
        self.max_bytes = int(max_mb * 1024 * 1024)

    def disk_problem(self) -> str | None:
        return self.store.problem

    def require_room(self) -> None:
        """The database server's disk is its own to watch."""

    def save(self, data: bytes, extension: str) -> str:
        name = f"{uuid.uuid4().hex}.{extension}"
        with self.store.connection(writing=True) as conn:
            conn.execute(
                "INSERT INTO reply_audio (name, data, size, created_at) VALUES (%s, %s, %s, %s)",
                (name, data, len(data), time.time()),
            )
        return name

    def fetch(self, name: str) -> Path | bytes:
        if not _NAME_RE.fullmatch(name):
            raise NotFoundError(f"no output named {name!r}")
        with self.store.connection() as conn:
            row = conn.execute("SELECT data FROM reply_audio WHERE name = %s", (name,)).fetchone()
        if row is None:
            raise NotFoundError(f"output {name!r} does not exist (it may have expired)")
        return bytes(row["data"])

    def remove(self, names: Iterable[str]) -> int:
        wanted = [name for name in names if _NAME_RE.fullmatch(name)]
        if not wanted:
            return 0
        with self.store.connection(writing=True) as conn:
            return int(conn.execute("DELETE FROM reply_audio WHERE name = ANY(%s)", (wanted,)).rowcount)

    def sweep(self, protected: set[str], now: float | None = None) -> int:
        """Expired audio first, then the oldest until under the size cap; never `protected` ones."""
        now = time.time() if now is None else now
        keep = sorted(protected)
        with self.store.transaction() as conn:
            removed = conn.execute(
                "DELETE FROM reply_audio WHERE created_at < %s AND NOT (name = ANY(%s))",
                (now - self.ttl_s, keep),
            ).rowcount
            # The newest first, summed: whatever lies past the cap (and is not protected) goes.
            removed += conn.execute(
                "DELETE FROM reply_audio WHERE name IN (SELECT name FROM ("
                " SELECT name, SUM(size) OVER (ORDER BY created_at DESC, name DESC) AS running"
                " FROM reply_audio WHERE NOT (name = ANY(%s))) newest WHERE running > %s)",
                (keep, self.max_bytes - self._protected_bytes(conn, keep)),
            ).rowcount
        return int(removed)

    @staticmethod
    def _protected_bytes(conn: Any, keep: list[str]) -> int:
        row = conn.execute(
            "SELECT COALESCE(SUM(size), 0) AS n FROM reply_audio WHERE name = ANY(%s)", (keep,)
        ).fetchone()
        return int(row["n"])
