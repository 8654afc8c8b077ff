"""Build a tiny random-weight VibeVoice checkpoint on the CPU, for testing the production TTS code path.

The checkpoint is saved with `save_pretrained` (model, processor, tokenizer, chat template, generation
config) and loaded back through exactly the code that loads the real `vibevoice/VibeVoice-1.5B-hf`.
It proves the plumbing (speaker prompt, cache, segmentation, cfg_scale, 24 kHz), not audio quality.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from backend.app.backends.vibevoice_convert import CHAT_TEMPLATE

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
]
MAX_NEW_TOKENS = 6


def tiny_tokenizer(source: Path) -> Any:
    """A text tokenizer with Qwen's special tokens (VibeVoice's audio tokens among them)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source)
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    tokenizer.eos_token = tokenizer.pad_token = "<|endoftext|>"
    return tokenizer


def tiny_text_config(vocab_size: int, **extra: object) -> dict[str, object]:
    """A 2-layer Qwen2 text model."""
    return {
        "model_type": "qwen2",
        "vocab_size": vocab_size,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        **extra,
    }


def build_tiny_vibevoice(target: Path, tokenizer_source: Path) -> Path:
    """Write a ~3M-parameter random VibeVoice into `target` (skipped when already there)."""
    if (target / "config.json").is_file():
        return target
    import torch
    from transformers import (
        VibeVoiceAcousticTokenizerFeatureExtractor,
        VibeVoiceConfig,
        VibeVoiceForConditionalGeneration,
        VibeVoiceProcessor,
    )

    tokenizer = tiny_tokenizer(tokenizer_source)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    # Both encoders must downsample by 3,200 in total (40 x 80), like the real ones.
    encoder = {
        "hidden_size": 16,
        "num_filters": 4,
        "downsampling_ratios": [40, 80],
        "depths": [1, 1, 1],
        "kernel_size": 3,
    }
    config = VibeVoiceConfig(
        text_config=tiny_text_config(len(tokenizer), max_position_embeddings=4096),
        audio_config={**encoder, "initializer_range": 0.1},  # audible output rather than ~1e-5
        semantic_model_config=encoder,
        diffusion_head_config={
            "num_hidden_layers": 2,
            "intermediate_size": 64,
            "frequency_embedding_size": 32,
        },
        pad_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|endoftext|>"],
        audio_bos_token_id=ids["<|vision_start|>"],
        audio_eos_token_id=ids["<|vision_end|>"],
        audio_token_id=ids["<|vision_pad|>"],
    )
    torch.manual_seed(0)
    model = VibeVoiceForConditionalGeneration(config).eval()
    generation = model.generation_config
    # A random model may stop at once: keep it speaking for a few tokens so every call yields audio.
    generation.suppress_tokens = [ids["<|endoftext|>"], ids["<|vision_start|>"], ids["<|vision_end|>"]]
    generation.max_new_tokens = MAX_NEW_TOKENS
    generation._from_model_config = False  # keep these settings through save/reload
    extractor = VibeVoiceAcousticTokenizerFeatureExtractor(
        sampling_rate=24_000, pad_to_multiple_of=3200, normalize_audio=True, target_dB_FS=-25
    )
    processor = VibeVoiceProcessor(
        feature_extractor=extractor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE
    )
    tmp = target.with_name(target.name + ".tmp")
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    tmp.rename(target)
    return target
