"""The seed's checkpoint id: an original-format VibeVoice (`microsoft/VibeVoice-1.5B`) is converted
once into MODELS_DIR and loaded as the native checkpoint. Tested offline on a tiny original-format
checkpoint built here: a tiny native model's weights written back under the original names and
configuration, sharded as the release is, and placed in MODELS_DIR's hub cache under the seed's id."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from backend.app.backends import vibevoice_convert
from backend.app.backends.registry import load_tts
from backend.app.backends.vibevoice import VibeVoiceBackend
from backend.app.core.errors import ModelLoadError
from backend.app.core.values import SynthesisRequest
from tests.conftest import REPO, make_settings
from tests.tiny_vibevoice import tiny_text_config, tiny_tokenizer

SEED_ID = "microsoft/VibeVoice-1.5B"


def original_key(key: str) -> str:
    """The original release's name of a native weight name (the inverse of the conversion)."""
    acoustic, semantic, head = (
        "model.acoustic_tokenizer.",
        "model.semantic_tokenizer.",
        "model.prediction_head.",
    )
    renames = [
        (r"^model\.latent_scaling_factor$", "model.speech_scaling_factor"),
        (r"^model\.latent_bias_factor$", "model.speech_bias_factor"),
        (
            r"^model\.audio_tower\.encoder\.stem\.conv\.",
            acoustic + "encoder.downsample_layers.0.0.conv.",
        ),
        (
            r"^model\.audio_tower\.decoder\.stem\.conv\.",
            acoustic + "decoder.upsample_layers.0.0.conv.",
        ),
        (
            r"^model\.semantic_tokenizer_encoder\.stem\.conv\.",
            semantic + "encoder.downsample_layers.0.0.conv.",
        ),
        (r"^model\.audio_tower\.", "model.acoustic_tokenizer."),
        (r"^model\.semantic_tokenizer_encoder\.", "model.semantic_tokenizer.encoder."),
        (r"\.stem\.stage\.", ".stages.0."),
        (r"\.head\.conv\.", ".head.conv.conv."),
        (r"\.mixer\.conv\.", ".mixer.conv.conv.conv."),
        (r"^model\.diffusion_head\.timestep_proj\.fc1\.", "model.prediction_head.t_embedder.mlp.0."),
        (r"^model\.diffusion_head\.timestep_proj\.fc2\.", "model.prediction_head.t_embedder.mlp.2."),
        (
            r"^model\.diffusion_head\.final_layer\.linear_1\.",
            head + "final_layer.adaLN_modulation.1.",
        ),
        (r"^model\.diffusion_head\.final_layer\.linear_2\.", "model.prediction_head.final_layer.linear."),
        (
            r"^model\.diffusion_head\.layers\.(\d+)\.linear\.",
            head + r"layers.\1.adaLN_modulation.1.",
        ),
        (r"^model\.diffusion_head\.", "model.prediction_head."),
        (r"^model\.multi_modal_projector\.", "model.acoustic_connector."),
        (r"_connector\.linear_1\.", "_connector.fc1."),
        (r"_connector\.act\.", "_connector.norm."),
        (r"_connector\.linear_2\.", "_connector.fc2."),
    ]
    for pattern, replacement in renames:
        key = re.sub(pattern, replacement, key)

    def shifted(match: re.Match[str]) -> str:
        i = int(match["i"]) + 1
        if match["kind"] == "conv":
            return f"downsample_layers.{i}.0.conv.conv."
        if match["kind"] == "convtr":
            return f"upsample_layers.{i}.0.convtr.convtr."
        return f"stages.{i}."

    return re.sub(r"conv_layers\.(?P<i>\d+)\.(?P<kind>conv|convtr|stage)\.(?:conv\.|convtr\.)?", shifted, key)


def tower(native: dict[str, object], acoustic: bool) -> dict[str, object]:
    config = {
        "vae_dim": native["hidden_size"],
        "encoder_n_filters": native["num_filters"],
        "encoder_ratios": list(reversed(native["downsampling_ratios"])),  # type: ignore[call-overload]
        "encoder_depths": "-".join(str(d) for d in native["depths"]),  # type: ignore[attr-defined]
        "layernorm_eps": native["rms_norm_eps"],
        "channels": 1,
        "causal": True,
        "conv_norm": "none",
        "mixer_layer": "depthwise_conv",
        "pad_mode": "constant",
        "layernorm": "RMSNorm",
        "model_type": "vibevoice_acoustic_tokenizer" if acoustic else "vibevoice_semantic_tokenizer",
    }
    if acoustic:
        config.update(fix_std=0.5, decoder_ratios=config["encoder_ratios"], std_dist_type="gaussian")
    return config


@pytest.fixture(scope="module")
def native(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, object]:
    """A tiny native VibeVoice whose sizes the original format can express (its fixed kernel and
    timestep-embedding sizes), and its tokenizer."""
    from transformers import VibeVoiceConfig, VibeVoiceForConditionalGeneration

    tokenizer = tiny_tokenizer(REPO / "models" / "smollm2-135m-instruct")
    encoder = {"hidden_size": 16, "num_filters": 4, "downsampling_ratios": [40, 80], "depths": [1, 1, 1]}
    config = VibeVoiceConfig(
        text_config=tiny_text_config(len(tokenizer), tie_word_embeddings=True),
        audio_config=encoder,
        semantic_model_config=encoder,
        diffusion_head_config={
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "intermediate_size": 64,
            "latent_size": 16,
        },
    )
    torch.manual_seed(0)
    return VibeVoiceForConditionalGeneration(config).eval(), tokenizer


def write_original(native: tuple[object, object], folder: Path) -> Path:
    model, tokenizer = native
    folder.mkdir(parents=True)
    tokenizer_dir = folder.parent / "qwen-tokenizer"
    tokenizer.save_pretrained(tokenizer_dir)  # type: ignore[attr-defined]
    config = model.config  # type: ignore[attr-defined]
    text = config.text_config.to_dict()
    text["torch_dtype"] = "float32"
    head = config.diffusion_head_config
    original = {
        "model_type": "vibevoice",
        "torch_dtype": "float32",
        "tie_word_embeddings": True,
        "acoustic_vae_dim": 16,
        "semantic_vae_dim": 16,
        "decoder_config": text,
        "acoustic_tokenizer_config": tower(config.audio_config.to_dict(), acoustic=True),
        "semantic_tokenizer_config": tower(config.semantic_model_config.to_dict(), acoustic=False),
        "diffusion_head_config": {
            "hidden_size": head.hidden_size,
            "latent_size": head.latent_size,
            "speech_vae_dim": head.latent_size,
            "head_layers": head.num_hidden_layers,
            "head_ffn_ratio": head.intermediate_size / head.hidden_size,
            "rms_norm_eps": head.rms_norm_eps,
            "ddpm_beta_schedule": "cosine",
            "prediction_type": "v_prediction",
            "ddpm_num_steps": 1000,
            "diffusion_type": "ddpm",
        },
    }
    (folder / "config.json").write_text(json.dumps(original))
    (folder / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "processor_class": "VibeVoiceProcessor",
                "language_model_pretrained_name": str(tokenizer_dir),
                "audio_processor": {"sampling_rate": 24000, "normalize_audio": True, "target_dB_FS": -25},
            }
        )
    )
    weights = {original_key(k): v.clone() for k, v in model.state_dict().items() if k != "lm_head.weight"}  # type: ignore[attr-defined]
    names = sorted(weights)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    weight_map = {}
    for shard, keys in shards.items():
        save_file({k: weights[k].contiguous() for k in keys}, str(folder / shard))
        weight_map.update(dict.fromkeys(keys, shard))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return folder


def hub_cache(models_dir: Path, repo_id: str, snapshot: Path) -> None:
    """Place `snapshot` in MODELS_DIR as the hub cache holds a downloaded repo."""
    repo = models_dir / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots").mkdir()
    snapshot.rename(repo / "snapshots" / commit)


def test_the_weight_names_map_onto_the_native_model(native: tuple[object, object]) -> None:
    model, _ = native
    for key in model.state_dict():  # type: ignore[attr-defined]
        assert vibevoice_convert.hf_key(original_key(key)) == key


def test_the_seed_checkpoint_id_is_converted_once_and_loaded(
    native: tuple[object, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    models = tmp_path / "models"
    hub_cache(models, SEED_ID, write_original(native, tmp_path / "download"))
    settings = make_settings(tmp_path, tts_model_name=SEED_ID, tts_device="cpu", models_dir=models)
    backend = load_tts(settings)
    assert isinstance(backend, VibeVoiceBackend)
    converted = models / "vibevoice-converted" / "microsoft--VibeVoice-1.5B"
    assert (converted / "config.json").is_file()
    # Every weight arrived unchanged under its native name (the tied head included).
    expected = native[0].state_dict()  # type: ignore[attr-defined]
    loaded = backend._model.state_dict()
    assert set(loaded) == set(expected)
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)
    generation = backend._model.generation_config
    assert generation.noise_scheduler_config["beta_schedule"] == "squaredcos_cap_v2"
    assert backend._processor.audio_token == "<|vision_pad|>"
    audio = backend.synthesize(SynthesisRequest("Hello."))
    assert audio.sample_rate == 24_000
    # A second start loads the converted copy and converts nothing.
    stamp = (converted / "config.json").stat().st_mtime_ns

    def no_conversion(*args: object) -> Path:
        raise AssertionError("converted again")

    monkeypatch.setattr(vibevoice_convert, "convert", no_conversion)
    assert isinstance(load_tts(settings), VibeVoiceBackend)
    assert (converted / "config.json").stat().st_mtime_ns == stamp


def test_an_original_format_directory_is_converted_too(native: tuple[object, object], tmp_path: Path) -> None:
    source = write_original(native, tmp_path / "VibeVoice-1.5B")
    settings = make_settings(
        tmp_path, tts_model_name=str(source), tts_device="cpu", models_dir=tmp_path / "m"
    )
    backend = load_tts(settings)
    assert isinstance(backend, VibeVoiceBackend)
    assert any((tmp_path / "m" / "vibevoice-converted").iterdir())


def test_a_broken_original_checkpoint_is_a_clear_error(native: tuple[object, object], tmp_path: Path) -> None:
    source = write_original(native, tmp_path / "broken")
    index = json.loads((source / "model.safetensors.index.json").read_text())
    (source / "model-00002-of-00002.safetensors").unlink()
    index["weight_map"] = {k: v for k, v in index["weight_map"].items() if v.startswith("model-00001")}
    (source / "model.safetensors.index.json").write_text(json.dumps(index))
    settings = make_settings(
        tmp_path, tts_model_name=str(source), tts_device="cpu", models_dir=tmp_path / "m"
    )
    with pytest.raises(ModelLoadError, match="missing"):
        load_tts(settings)
    converted = tmp_path / "m" / "vibevoice-converted"
    assert not converted.exists() or not any(converted.iterdir())  # nothing half-written
