"""The model manifest: SHA-256 and size of every model file, recorded when the model was installed,
checked by the start-up pre-flight.

`MODELS_DIR/manifest.json` maps a model key (`whisper-tiny.en`, ... for the embedded models, the
resolved path for a local model directory or file) to its files. `make setup`
(`scripts/prepare_models.py`) records the embedded models; the server records any other local model
the first time it loads it (and a model it prepares itself: a conversion or an assembly). Models
fetched from a hub at load time (`large-v3`, `vibevoice/VibeVoice-1.5B-hf`, an LLM hub id) and
remote LLM servers are not local files at start-up and are not checked.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Literal

from backend.app.backends import embedded, registry
from backend.app.backends.model_files import ModelFiles
from backend.app.core.config import Settings
from backend.app.core.errors import ModelLoadError

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
VerifyMode = Literal["sha256", "size", "off"]
_lock = threading.Lock()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(4 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def configured_models(settings: Settings) -> list[ModelFiles]:
    """The local model files the settings select (hub downloads and remote servers excluded)."""
    return registry.configured_models(settings)


def embedded_models(models_dir: Path) -> list[ModelFiles]:
    """All the embedded models (what `make setup` installs and records): the default ones, the
    multilingual Whisper base, and the small SmolLM2 (its GGUF, and converted for transformers)."""
    base = Settings(_env_file=None, models_dir=models_dir)
    multilingual = Settings(_env_file=None, models_dir=models_dir, stt_model_name="base-multilingual")
    moonshine = Settings(_env_file=None, models_dir=models_dir, stt_model_name="moonshine")
    small = Settings(_env_file=None, models_dir=models_dir, llm_model="small", llm_device="cpu")
    transformers = Settings(
        _env_file=None, models_dir=models_dir, llm_model="small", llm_engine="transformers"
    )
    extra = [
        registry.engine("stt", multilingual).model_files(multilingual),
        registry.engine("stt", moonshine).model_files(moonshine),  # the default pairs it only on a CPU
        registry.engine("llm", small).model_files(small),
        registry.engine("llm", transformers).model_files(transformers),
    ]
    default = registry.configured_models(base)
    keys = {model.key for model in default}
    return [*default, *(model for model in extra if model and model.key not in keys)]


def _manifest_path(models_dir: Path) -> Path:
    return models_dir / MANIFEST_NAME


def load_manifest(models_dir: Path) -> dict[str, dict[str, dict[str, object]]]:
    path = _manifest_path(models_dir)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ModelLoadError(
            f"the model manifest {path} is unreadable ({e}); delete it and run `make setup`"
        ) from e
    models = data.get("models", {}) if isinstance(data, dict) else {}
    return models if isinstance(models, dict) else {}


def _entry(model: ModelFiles) -> dict[str, dict[str, object]]:
    files = [f.absolute() for f in model.files]
    common = Path(os.path.commonpath([str(f.parent) for f in files]))
    return {str(f.relative_to(common)): {"size": f.stat().st_size, "sha256": sha256_of(f)} for f in files}


def record(models_dir: Path, models: list[ModelFiles], replace: bool = False) -> list[str]:
    """Hash and record `models` (only those not yet recorded, unless `replace`); returns their keys."""
    with _lock:
        manifest = load_manifest(models_dir)
        added = []
        for model in models:
            if not model.files or (model.key in manifest and not replace):
                continue
            manifest[model.key] = _entry(model)
            added.append(model.key)
        if added:
            models_dir.mkdir(parents=True, exist_ok=True)
            path = _manifest_path(models_dir)
            tmp = path.with_name(f".{path.name}.part")
            tmp.write_text(json.dumps({"version": 1, "models": manifest}, indent=1, sort_keys=True))
            os.replace(tmp, path)
    return added


def problems(model: ModelFiles, recorded: dict[str, dict[str, object]] | None, mode: VerifyMode) -> list[str]:
    """What is wrong with `model`'s files: missing or empty files, and against its manifest entry,
    a file gone, a size or (mode sha256) a checksum that differs."""
    found: list[str] = []
    if not model.files:
        return [] if model.prepared_at_load else [f"{model.stage} model {model.key}: no files found"]
    for path in model.files:
        if not path.is_file():
            found.append(f"{model.stage} model {model.key}: missing file {path}")
        elif path.stat().st_size == 0:
            found.append(f"{model.stage} model {model.key}: empty file {path}")
    if found or recorded is None or mode == "off":
        return found
    common = Path(os.path.commonpath([str(f.parent.absolute()) for f in model.files]))
    for name, expected in sorted(recorded.items()):
        path = common / name
        if not path.is_file():
            found.append(f"{model.stage} model {model.key}: missing file {path}")
        elif path.stat().st_size != expected.get("size"):
            found.append(
                f"{model.stage} model {model.key}: {path} is {path.stat().st_size} bytes, "
                f"the manifest says {expected.get('size')}"
            )
        elif mode == "sha256" and sha256_of(path) != expected.get("sha256"):
            found.append(f"{model.stage} model {model.key}: {path} does not match its recorded SHA-256")
    return found


def preflight(settings: Settings) -> None:
    """Check the configured models' files before anything loads; `ModelLoadError` lists every
    problem with what to do. Models with no manifest entry get the presence check only."""
    if settings.storage.model_verify == "off":
        return
    manifest = load_manifest(settings.storage.models_dir)
    found: list[str] = []
    for model in configured_models(settings):
        recorded = manifest.get(model.key)
        if recorded is None and model.files:
            logger.warning(
                "model %s has no entry in %s: only its presence is checked; it is recorded once it "
                "has loaded, and checked against that record from the next start",
                model.key,
                _manifest_path(settings.storage.models_dir),
            )
        found += problems(model, recorded, settings.storage.model_verify)
    if found:
        raise ModelLoadError(
            "model files failed the start-up check:\n  - "
            + "\n  - ".join(found)
            + f"\nReinstall them ({embedded.SETUP_HINT}); after a deliberate change of a model's files, "
            "record them again with `python -m scripts.prepare_models --rerecord`."
        )
