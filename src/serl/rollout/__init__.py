"""Rollout engines behind one interface (`RolloutEngine`): `make_engine("hf" | "vllm", model, tokenizer, ...)`."""

from __future__ import annotations

from typing import Any

from serl.rollout.base import Completion, FinishReason, RolloutEngine, SamplingParams
from serl.rollout.formats import PROMPT_FORMATS, encode_prompt, format_prompt

ENGINES = ("hf", "vllm")


def make_engine(kind: str, model: Any, tokenizer: Any, **kwargs: Any) -> RolloutEngine:
    """Build a rollout engine. `kind` "hf": HFEngine(model, tokenizer, **kwargs); "vllm": VLLMEngine(...), GPU only."""
    if kind == "hf":
        from serl.rollout.hf import HFEngine

        return HFEngine(model, tokenizer, **kwargs)
    if kind == "vllm":
        from serl.rollout.vllm import VLLMEngine

        if kwargs.get("dtype", "") is None:  # "the policy's dtype": vLLM's own default ("auto") picks it
            kwargs.pop("dtype")

        return VLLMEngine(model, tokenizer, **kwargs)
    raise ValueError(f"unknown rollout engine {kind!r}; expected one of {', '.join(ENGINES)}")


__all__ = [
    "ENGINES",
    "PROMPT_FORMATS",
    "Completion",
    "FinishReason",
    "RolloutEngine",
    "SamplingParams",
    "encode_prompt",
    "format_prompt",
    "make_engine",
]
