"""The one way a client-supplied value becomes a file path.

`resolve_inside` joins a name or path to allowed directories, resolves it (following every
symlink, without opening anything) and returns it only when the result is inside one of them.
A `..` that climbs out, an absolute path elsewhere, a NUL byte, or a symlink whose target lies
outside is refused with `PathOutsideError` (400). Nothing else in the server turns request data
into a path (a test checks the route and service modules for other file access).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from backend.app.core.errors import BadRequestError, StorageFullError


class PathOutsideError(BadRequestError):
    code = "path_not_allowed"


def resolve_inside(roots: Sequence[Path], value: str, what: str = "path") -> tuple[Path, Path]:
    """`value` (a bare name, a relative path taken from the first root, or an absolute path)
    resolved, with the root it lies in. A bare name is looked up in each root in turn."""
    if not value or "\x00" in value or len(value) > 4096:
        raise PathOutsideError(f"{what} is empty or invalid")
    if any(len(part.encode("utf-8", "surrogatepass")) > 255 for part in Path(value).parts):
        raise PathOutsideError(f"{what} has a name longer than 255 bytes")
    resolved_roots = [root.resolve() for root in roots]
    candidate = Path(value)
    if candidate.is_absolute():
        candidates = [candidate]
    elif candidate.name == value:  # a bare file name: any root that has it, else the first
        candidates = [root / candidate for root in resolved_roots]
    else:
        candidates = [resolved_roots[0] / candidate]
    fallback: tuple[Path, Path] | None = None
    for path in candidates:
        try:
            resolved = path.resolve()
        except (OSError, RuntimeError) as e:  # a symlink loop, a name too long for the OS
            raise PathOutsideError(f"{what} cannot be resolved") from e
        root = next((r for r in resolved_roots if resolved.is_relative_to(r)), None)
        if root is None:
            if path.is_symlink():  # a link planted in an allowed directory that leads out
                raise PathOutsideError(f"{what} points outside the allowed directory")
            continue
        try:
            exists = resolved.exists()
        except (OSError, ValueError) as e:  # a name the file system cannot hold
            raise PathOutsideError(f"{what} cannot be resolved") from e
        if exists:
            return resolved, root
        fallback = fallback or (resolved, root)
    if fallback is None:
        raise PathOutsideError(f"{what} points outside the allowed directory")
    return fallback


def is_inside(path: Path, root: Path) -> bool:
    """Whether `path`, symlinks followed, lies inside `root` (for listings of a directory)."""
    try:
        return path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):
        return False


def low_disk(directory: Path, min_free_bytes: int) -> str | None:
    """Why `directory`'s disk is too full to write to (less than `min_free_bytes` free, or its
    usage unreadable), for the operator (/health); None when it is fine or the check is off (0)."""
    if not min_free_bytes:
        return None
    try:
        free = shutil.disk_usage(directory).free
    except OSError as e:
        return f"the disk of {directory} cannot be read ({e.strerror or e})"
    if free < min_free_bytes:
        return f"the disk of {directory} has less than {min_free_bytes / 1024 / 1024:g} MB free"
    return None


def require_free_disk(directory: Path, min_free_bytes: int, what: str) -> None:
    """507 before any work when `low_disk`; the client is told what, not where."""
    if low_disk(directory, min_free_bytes):
        raise StorageFullError(
            f"less than {min_free_bytes / 1024 / 1024:g} MB is free for {what} (MIN_FREE_DISK_MB); "
            "the server's operator must free some"
        )
