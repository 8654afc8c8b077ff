"""VibeVoice's original release format (`microsoft/VibeVoice-1.5B`, as the seed configured it),
converted once into the transformers-native layout under MODELS_DIR and loaded from there.

The original checkpoint has a `config.json` with `decoder_config`, `acoustic_tokenizer_config`,
`semantic_tokenizer_config` and `diffusion_head_config`, weights named after Microsoft's modules
(`acoustic_tokenizer`, `prediction_head`, `acoustic_connector`...), and no tokenizer: the text
tokenizer is Qwen2.5's (`language_model_pretrained_name` in `preprocessor_config.json`). The
conversion renames the weights and configuration to `VibeVoiceForConditionalGeneration`'s, attaches
the tokenizer and the chat template, checks that every weight found its place, and saves the result
atomically into `MODELS_DIR/vibevoice-converted/<name>`; a second start finds that copy. The
transformers wheel does not ship its conversion script, so this module performs the same mapping of
the two published formats.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backend.app.core.errors import ModelLoadError

logger = logging.getLogger(__name__)

CONVERTED_DIR = "vibevoice-converted"
DEFAULT_TOKENIZER = "Qwen/Qwen2.5-1.5B"
SAMPLE_RATE = 24_000

# The prompt layout of the released model: a fixed system line, a "Voice input" block with one audio
# slot per speaker that has a reference clip (in order of first appearance), the "Text input" block
# with one line per turn, then "Speech output" and the audio-start token.
CHAT_TEMPLATE = (
    "{{- ' Transform the text provided by various speakers into speech output, utilizing the distinct "
    "voice of each respective speaker.\\n' -}}"
    "{%- set ns = namespace(voiced='') -%}"
    "{%- for message in messages -%}"
    "{%- if message['content'] | selectattr('type', 'equalto', 'audio') | list | length > 0 "
    "and message['role'] not in ns.voiced -%}"
    "{%- set ns.voiced = ns.voiced + message['role'] + ',' -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if ns.voiced -%}"
    "{{- ' Voice input:\\n' -}}"
    "{%- for speaker in ns.voiced.rstrip(',').split(',') -%}"
    "{{- ' Speaker ' + speaker + ':<|vision_start|><|vision_pad|><|vision_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- ' Text input:\\n' -}}"
    "{%- for message in messages -%}"
    "{%- for item in message['content'] | selectattr('type', 'equalto', 'text') -%}"
    "{{- ' Speaker ' + message['role'] + ': ' + item['text'] + '\\n' -}}"
    "{%- endfor -%}"
    "{%- endfor -%}"
    "{{- ' Speech output:\\n<|vision_start|>' -}}"
)
AUDIO_TOKENS = {"audio_bos": "<|vision_start|>", "audio_eos": "<|vision_end|>", "audio": "<|vision_pad|>"}


def is_original(config: dict[str, Any]) -> bool:
    """True for a config.json in the original release format."""
    return "decoder_config" in config or "acoustic_tokenizer_config" in config


# --- weights ---------------------------------------------------------------------------------------


def _shift(match: re.Match[str], template: str) -> str:
    """`template` with {i} the matched layer index minus one (index 0 of a tower became its stem)."""
    return template.format(i=int(match["i"]) - 1)


_TOWER_RULES: list[tuple[re.Pattern[str], Callable[[re.Match[str]], str]]] = [
    (re.compile(r"^(down|up)sample_layers\.0\.0\.conv\.conv\."), lambda m: "stem.conv.conv."),
    (
        re.compile(r"^downsample_layers\.(?P<i>\d+)\.0\.conv\.conv\."),
        lambda m: _shift(m, "conv_layers.{i}.conv.conv."),
    ),
    (
        re.compile(r"^upsample_layers\.(?P<i>\d+)\.0\.convtr\.convtr\."),
        lambda m: _shift(m, "conv_layers.{i}.convtr.convtr."),
    ),
    (re.compile(r"^stages\.0\."), lambda m: "stem.stage."),
    (re.compile(r"^stages\.(?P<i>\d+)\."), lambda m: _shift(m, "conv_layers.{i}.stage.")),
    (re.compile(r"^head\.conv\.conv\."), lambda m: "head.conv."),
]
_HEAD_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^t_embedder\.mlp\.0\."), "timestep_proj.fc1."),
    (re.compile(r"^t_embedder\.mlp\.2\."), "timestep_proj.fc2."),
    (re.compile(r"^layers\.(\d+)\.adaLN_modulation\.1\."), r"layers.\1.linear."),
    (re.compile(r"^final_layer\.adaLN_modulation\.1\."), "final_layer.linear_1."),
    (re.compile(r"^final_layer\.linear\."), "final_layer.linear_2."),
]
_CONNECTORS = {"acoustic_connector.": "multi_modal_projector.", "semantic_connector.": "semantic_connector."}
_CONNECTOR_PARTS = {"fc1.": "linear_1.", "norm.": "act.", "fc2.": "linear_2."}
_MODULES = {
    "acoustic_tokenizer.encoder.": "audio_tower.encoder.",
    "acoustic_tokenizer.decoder.": "audio_tower.decoder.",
    "semantic_tokenizer.encoder.": "semantic_tokenizer_encoder.",
}
_FACTORS = {"speech_scaling_factor": "latent_scaling_factor", "speech_bias_factor": "latent_bias_factor"}


def _tower_key(rest: str) -> str:
    for pattern, replace in _TOWER_RULES:
        match = pattern.match(rest)
        if match:
            rest = replace(match) + rest[match.end() :]
            break
    return rest.replace("mixer.conv.conv.conv.", "mixer.conv.")


def hf_key(key: str) -> str:
    """The transformers-native name of an original weight name."""
    if not key.startswith("model."):
        return key  # lm_head.weight
    rest = key[len("model.") :]
    if rest in _FACTORS:
        return "model." + _FACTORS[rest]
    for old, new in _MODULES.items():
        if rest.startswith(old):
            return "model." + new + _tower_key(rest[len(old) :])
    if rest.startswith("prediction_head."):
        inner = rest[len("prediction_head.") :]
        for head_pattern, replacement in _HEAD_RULES:
            if head_pattern.match(inner):
                inner = head_pattern.sub(replacement, inner, count=1)
                break
        return "model.diffusion_head." + inner
    for connector, new_name in (
        ("acoustic_connector.", "multi_modal_projector."),
        ("semantic_connector.", None),
    ):
        if rest.startswith(connector):
            inner = rest[len(connector) :]
            for part, renamed in _CONNECTOR_PARTS.items():
                if inner.startswith(part):
                    inner = renamed + inner[len(part) :]
            return "model." + (new_name or connector) + inner
    return key  # model.language_model.* keeps its name


# --- configuration ---------------------------------------------------------------------------------


def _encoder_config(original: dict[str, Any], acoustic: bool) -> dict[str, Any]:
    depths = original.get("encoder_depths", "3-3-3-3-3-3-8")
    if isinstance(depths, str):
        depths = [int(d) for d in depths.split("-")]
    config = {
        "channels": original.get("channels", 1),
        "hidden_size": original["vae_dim"],
        "num_filters": original.get("encoder_n_filters", 32),
        "downsampling_ratios": list(reversed(original.get("encoder_ratios", [8, 5, 5, 4, 2, 2]))),
        "depths": depths,
        "rms_norm_eps": original.get("layernorm_eps", 1e-5),
        "layer_scale_init_value": original.get("layer_scale_init_value", 1e-6),
    }
    if acoustic and "fix_std" in original:
        config["vae_std"] = original["fix_std"] / 0.8
    return config


def hf_config(original: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(VibeVoiceConfig kwargs, noise-scheduler config) from an original config.json."""
    head = original["diffusion_head_config"]
    text = dict(original["decoder_config"])
    if "torch_dtype" in text:
        text["dtype"] = text.pop("torch_dtype")
    if "tie_word_embeddings" in original:
        text.setdefault("tie_word_embeddings", original["tie_word_embeddings"])
    diffusion = {
        "hidden_size": head["hidden_size"],
        "latent_size": head.get("latent_size", head.get("speech_vae_dim", 64)),
        "num_hidden_layers": head["head_layers"],
        "intermediate_size": int(head["head_ffn_ratio"] * head["hidden_size"]),
        "rms_norm_eps": head.get("rms_norm_eps", 1e-5),
    }
    schedule = head.get("ddpm_beta_schedule", "cosine")
    scheduler = {
        "beta_schedule": "squaredcos_cap_v2" if schedule == "cosine" else schedule,
        "prediction_type": head.get("prediction_type", "v_prediction"),
    }
    config = {
        "text_config": text,
        "audio_config": _encoder_config(original["acoustic_tokenizer_config"], acoustic=True),
        "semantic_model_config": _encoder_config(original["semantic_tokenizer_config"], acoustic=False),
        "diffusion_head_config": diffusion,
    }
    return config, scheduler


# --- the conversion --------------------------------------------------------------------------------


def _load_weights(source: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    index = source / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (source / "model.safetensors").is_file():
        shards = ["model.safetensors"]
    else:
        raise ModelLoadError(f"{source} has neither model.safetensors nor model.safetensors.index.json")
    weights: dict[str, Any] = {}
    for shard in shards:
        weights.update(load_file(str(source / shard)))
    return weights


def _tokenizer(source: Path, preprocessor: dict[str, Any], models_dir: Path) -> Any:
    from transformers import AutoTokenizer

    if (source / "tokenizer.json").is_file() or (source / "vocab.json").is_file():
        name: str = str(source)
    else:
        name = preprocessor.get("language_model_pretrained_name") or DEFAULT_TOKENIZER
    try:
        return AutoTokenizer.from_pretrained(name, cache_dir=str(models_dir))
    except Exception as e:  # not downloaded while offline, or broken files
        raise ModelLoadError(
            f"converting the original VibeVoice checkpoint needs the {name!r} tokenizer: {e}. Download it "
            f"into MODELS_DIR once (`hf download {name} --cache-dir {models_dir}`) or start online"
        ) from e


def convert(source: Path, target: Path, models_dir: Path) -> Path:
    """Write the transformers-native checkpoint of the original one in `source` to `target`."""
    from transformers import (
        VibeVoiceAcousticTokenizerFeatureExtractor,
        VibeVoiceConfig,
        VibeVoiceForConditionalGeneration,
        VibeVoiceProcessor,
    )

    original = json.loads((source / "config.json").read_text())
    preprocessor_file = source / "preprocessor_config.json"
    preprocessor = json.loads(preprocessor_file.read_text()) if preprocessor_file.is_file() else {}
    tokenizer = _tokenizer(source, preprocessor, models_dir)
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in AUDIO_TOKENS.items()}
    if tokenizer.unk_token_id is not None and tokenizer.unk_token_id in ids.values():
        raise ModelLoadError(f"the tokenizer lacks VibeVoice's audio tokens {list(AUDIO_TOKENS.values())}")
    kwargs, scheduler = hf_config(original)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    config = VibeVoiceConfig(
        **kwargs,
        pad_token_id=pad,
        eos_token_id=tokenizer.eos_token_id,
        audio_bos_token_id=ids["audio_bos"],
        audio_eos_token_id=ids["audio_eos"],
        audio_token_id=ids["audio"],
    )
    weights = {hf_key(key): tensor for key, tensor in _load_weights(source).items()}
    embeddings = weights.get("model.language_model.embed_tokens.weight")
    if config.text_config.tie_word_embeddings and "lm_head.weight" not in weights and embeddings is not None:
        weights["lm_head.weight"] = embeddings
    if not weights:
        raise ModelLoadError(f"the original checkpoint in {source} holds no weights")
    dtype = next(iter(weights.values())).dtype
    model = VibeVoiceForConditionalGeneration(config).to(dtype)
    loaded = model.load_state_dict(weights, strict=False)
    if loaded.missing_keys or loaded.unexpected_keys:
        raise ModelLoadError(
            f"the original checkpoint in {source} does not map onto VibeVoice: missing "
            f"{loaded.missing_keys[:5]}, unexpected {loaded.unexpected_keys[:5]}"
        )
    model.eval()
    generation = model.generation_config
    generation.do_sample = False
    generation.guidance_scale = 1.3
    generation.max_new_tokens = original.get("max_new_tokens", 40_500)
    generation.noise_scheduler_class = "DPMSolverMultistepScheduler"
    generation.noise_scheduler_config = scheduler
    generation._from_model_config = False
    audio = preprocessor.get("audio_processor", {})
    hop = 1
    for ratio in kwargs["audio_config"]["downsampling_ratios"]:
        hop *= ratio
    extractor = VibeVoiceAcousticTokenizerFeatureExtractor(
        sampling_rate=audio.get("sampling_rate", SAMPLE_RATE),
        normalize_audio=audio.get("normalize_audio", True),
        target_dB_FS=audio.get("target_dB_FS", -25),
        eps=audio.get("eps", 1e-6),
        pad_to_multiple_of=hop,
    )
    processor = VibeVoiceProcessor(
        feature_extractor=extractor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE
    )
    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    try:
        model.save_pretrained(partial)
        processor.save_pretrained(partial)
        (partial / "converted_from.json").write_text(json.dumps({"source": str(source)}))
        partial.rename(target)
    except OSError as e:
        shutil.rmtree(partial, ignore_errors=True)
        raise ModelLoadError(f"could not write the converted VibeVoice checkpoint to {target}: {e}") from e
    return target


def _hub_snapshot(repo_id: str, models_dir: Path) -> Path | None:
    """The local snapshot of an original-format hub checkpoint (downloaded when online), or None
    when the id is not one (or cannot be looked at): then transformers loads it as it is."""
    from huggingface_hub import hf_hub_download, snapshot_download

    try:
        config = json.loads(
            Path(hf_hub_download(repo_id, "config.json", cache_dir=str(models_dir))).read_text()
        )
    except Exception:  # offline and not cached, or not a hub id: from_pretrained will say so
        return None
    if not is_original(config):
        return None
    patterns = ["*.json", "*.safetensors"]
    return Path(snapshot_download(repo_id, cache_dir=str(models_dir), allow_patterns=patterns))


def checkpoint(model_name: str, models_dir: Path) -> str:
    """What to load for TTS_MODEL_NAME: a converted copy for the original format (converting it
    the first time), the name itself for a transformers-native checkpoint."""
    local = Path(model_name)
    if local.is_dir():
        config_file = local / "config.json"
        if not config_file.is_file() or not is_original(json.loads(config_file.read_text())):
            return model_name
        digest = hashlib.sha1(str(local.resolve()).encode()).hexdigest()[:10]
        target = models_dir / CONVERTED_DIR / f"{local.resolve().name}-{digest}"
        source: Path | None = local
    else:
        target = models_dir / CONVERTED_DIR / model_name.replace("/", "--")
        source = None
    if (target / "config.json").is_file():
        return str(target)
    if source is None:
        source = _hub_snapshot(model_name, models_dir)
        if source is None:
            return model_name
    logger.info("converting the original VibeVoice checkpoint %s into %s (once)", model_name, target)
    return str(convert(source, target, models_dir))
