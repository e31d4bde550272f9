"""Prompt formats for math rollouts and how their text becomes token ids.

* ``raw``: the problem text as is: no chat template, no system prompt, and no BOS. This is what the reference
  rollouts feed the policy (serl-reference §7.1).
* ``chat``: the problem as one user turn of the tokenizer's chat template, with the assistant header appended.
* ``chat_boxed``: as ``chat``, with the step-by-step / ``\\boxed{}`` instruction appended to the problem.

Tokenization never adds special tokens (`encode_prompt`): a chat template writes its own BOS into the text when the
model needs one, and ``raw`` must not get one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from serl.rollout.choices import PROMPT_FORMATS, PromptFormat

BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


def format_prompt(tokenizer: Any, problem: str, fmt: PromptFormat = "raw") -> str:
    """The prompt text for one problem in format `fmt` (one of PROMPT_FORMATS)."""
    if fmt == "raw":
        return problem
    if fmt not in PROMPT_FORMATS:
        raise ValueError(f"unknown prompt format {fmt!r}; expected one of {', '.join(PROMPT_FORMATS)}")
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError(f"prompt format {fmt!r} needs a tokenizer with a chat template; use 'raw' for this model")
    content = f"{problem}\n{BOXED_INSTRUCTION}" if fmt == "chat_boxed" else problem
    messages = [{"role": "user", "content": content}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def encode_prompt(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a formatted prompt, without added special tokens (so no BOS for ``raw``)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def truncate_prompt(tokenizer: Any, prompt: str, max_tokens: int) -> str:
    """PROMPT right-truncated to MAX_TOKENS tokens, as the reference's tokenizer call (`truncation=True`) does."""
    ids = encode_prompt(tokenizer, prompt)
    return prompt if len(ids) <= max_tokens else tokenizer.decode(ids[:max_tokens])


def encode_prompts(tokenizer: Any, prompts: Sequence[str] | Sequence[Sequence[int]]) -> list[list[int]]:
    """Engines' input: strings go through `encode_prompt`, token-id lists are kept; an empty prompt is an error."""
    encoded = [encode_prompt(tokenizer, p) if isinstance(p, str) else list(p) for p in prompts]
    for index, ids in enumerate(encoded):
        if not ids:
            raise ValueError(f"prompt {index} is empty after tokenization; nothing to condition on")
    return encoded
