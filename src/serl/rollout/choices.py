"""The named choices of the rollout engines, one list each: the config loader checks `rollout.*` values against
these Literal types, and the engines check their arguments against the same lists. Free of torch, so that reading
a config stays cheap."""

from __future__ import annotations

from typing import Literal, get_args

EngineName = Literal["hf", "vllm"]
PromptFormat = Literal["raw", "chat", "chat_boxed"]  # raw: the reference's (problem text, no template, no BOS)
ComputeDtype = Literal["float32", "bfloat16", "float16"]

ENGINES: tuple[str, ...] = get_args(EngineName)
PROMPT_FORMATS: tuple[str, ...] = get_args(PromptFormat)
COMPUTE_DTYPES: tuple[str, ...] = get_args(ComputeDtype)
