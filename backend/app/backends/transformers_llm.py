"""Chat with a local transformers causal LM (the embedded SmolLM2 by default)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backend.app.backends import embedded
from backend.app.backends.protocols import ChatMessage, GenerationOptions, ModelInfo
from backend.app.core.errors import ModelLoadError

if TYPE_CHECKING:
    import torch
    from transformers import BatchEncoding


class TransformersChatBackend:
    """A chat-templated causal LM; greedy at temperature 0, sampled above."""

    def __init__(self, model: str, models_dir: Path, device: str = "auto", dtype: str = "auto") -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if model:
            source, label = model, model
        else:
            source, label = str(embedded.smollm2_dir(models_dir)), "SmolLM2-135M-Instruct (embedded)"
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if dtype == "auto":
            dtype = "float16" if device == "cuda" else "float32"
        torch_dtype = getattr(torch, dtype)
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(source)
            self._model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype).to(device)
        except Exception as e:  # missing files, corrupt safetensors, unknown hub id offline
            hint = (
                f"delete {source} and {embedded.SETUP_HINT}"
                if not model
                else "LLM_MODEL must be a local model dir (or a hub id already cached) when offline"
            )
            raise ModelLoadError(f"could not load the LLM {label!r} from {source}: {e}; {hint}") from e
        self._model.eval()
        self._device = device
        self.info = ModelInfo(model=label, device=f"{device} ({dtype})")

    def _prompt(self, messages: Sequence[ChatMessage]) -> BatchEncoding:
        inputs: BatchEncoding = self._tokenizer.apply_chat_template(
            [{"role": m.role, "content": m.content} for m in messages],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        return inputs.to(self._device)

    def _generate(self, inputs: BatchEncoding, options: GenerationOptions, **extra: Any) -> torch.Tensor:
        import torch

        sampling = options.temperature > 0
        with torch.inference_mode():
            output: torch.Tensor = self._model.generate(
                **inputs,
                max_new_tokens=options.max_tokens,
                do_sample=sampling,
                temperature=options.temperature if sampling else None,
                top_p=0.9 if sampling else None,
                top_k=None,
                pad_token_id=self._tokenizer.pad_token_id or self._tokenizer.eos_token_id,
                **extra,
            )
        return output

    def chat(self, messages: Sequence[ChatMessage], options: GenerationOptions) -> str:
        inputs = self._prompt(messages)
        output = self._generate(inputs, options)
        prompt_length = inputs["input_ids"].shape[1]
        return str(self._tokenizer.decode(output[0, prompt_length:], skip_special_tokens=True)).strip()

    def chat_stream(self, messages: Sequence[ChatMessage], options: GenerationOptions) -> Iterator[str]:
        """Deltas from a streamer fed by `generate` on a helper thread. This generator waits for that
        thread, so the model's worker stays busy exactly as long as the model is; closing it sets a
        stopping criterion that ends `generate` at the next token."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        stop = threading.Event()

        class _StopWhenAsked(StoppingCriteria):  # type: ignore[misc]
            def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **_: Any) -> torch.Tensor:
                return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool)

        streamer = TextIteratorStreamer(self._tokenizer, skip_prompt=True, skip_special_tokens=True)
        inputs = self._prompt(messages)
        failures: list[Exception] = []

        def generate() -> None:
            try:
                self._generate(
                    inputs,
                    options,
                    streamer=streamer,
                    stopping_criteria=StoppingCriteriaList([_StopWhenAsked()]),
                )
            except Exception as e:  # surfaced to the consumer below
                failures.append(e)
                streamer.end()

        thread = threading.Thread(target=generate, name="llm-generate", daemon=True)
        thread.start()
        try:
            for text in streamer:
                if text:
                    yield text
        finally:
            stop.set()
            thread.join()
        if failures:
            raise failures[0]

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """How many tokens `messages` take once templated, with the model's own tokenizer."""
        encoded = self._tokenizer.apply_chat_template(
            [{"role": m.role, "content": m.content} for m in messages],
            add_generation_prompt=True,
            return_dict=True,
        )
        return len(encoded["input_ids"])
