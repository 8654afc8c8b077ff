"""What a model is on disk, for the manifest: a key, its files, and whether the server makes them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ModelFiles:
    """A model on disk: a key, the files that make it up, and whether they may be missing now
    because the server prepares them at load (an assembly or conversion into MODELS_DIR)."""

    key: str
    stage: str
    files: tuple[Path, ...]
    prepared_at_load: bool = False


def dir_files(directory: Path) -> tuple[Path, ...]:
    """Every file under `directory` (hidden ones excepted), sorted; () when it is not a directory."""
    if not directory.is_dir():
        return ()
    return tuple(sorted(p for p in directory.rglob("*") if p.is_file() and not p.name.startswith(".")))


def local_dir(stage: str, name: str) -> ModelFiles | None:
    """A model given as a local directory, keyed by its resolved path; None for anything else."""
    path = Path(name)
    return ModelFiles(str(path.resolve()), stage, dir_files(path)) if path.is_dir() else None
