"""The named choices of self-instruction, one list each: the config loader checks `selfinstruct.*` values against
these Literal types, and the functions that branch on them check their arguments against the same lists."""

from __future__ import annotations

from typing import Literal, get_args

NoveltyScope = Literal["all", "reference"]  # all: seeds + every generated problem | reference: seeds + current batch

# an over-long generation prompt: drop whole examples until it fits | right-truncate its tokens (reference)
PromptOverflow = Literal["drop_examples", "truncate"]

# where the numbered examples go: the user message, ending with the bare next number (reference) | the opening of the
# assistant's reply, which the model then continues from the bare next number
ExamplesTurn = Literal["user", "assistant"]

NOVELTY_SCOPES: tuple[str, ...] = get_args(NoveltyScope)
PROMPT_OVERFLOWS: tuple[str, ...] = get_args(PromptOverflow)
EXAMPLES_TURNS: tuple[str, ...] = get_args(ExamplesTurn)
