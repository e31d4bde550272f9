"""Few-shot generation prompts (serl-reference §1.2) and the generation sampling defaults (§1.3).

A prompt shows up to `max_generated` problems from the kept pool and seed problems for the remaining slots,
shuffled and numbered, and ends with the next bare item number ("9."). It is rendered with the tokenizer's
chat template, the numbered list in the user message (the reference) or, with `examples_turn="assistant"`, opening
the assistant's reply, so that the model continues the list itself; its response then continues from "9.".
A prompt over the token budget drops whole examples, longest first, until it fits (`drop_examples`, the default),
or is right-truncated to the budget as the reference does (`truncate`: the tail is lost, the assistant header with
it).

Two instructions are packaged: `question_generation` (serl's wording, the default) and `reference` (the official
prompt: user prefix "Come up with a series of questions:", serl-reference §1.2)."""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from serl.rollout.base import SamplingParams
from serl.selfinstruct.choices import EXAMPLES_TURNS, PROMPT_OVERFLOWS, ExamplesTurn, PromptOverflow

_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Instruction:
    """The generation instruction: a system message and a user-message prefix that the numbered examples
    follow."""

    system: str
    user: str


@dataclass(frozen=True)
class GenerationPrompt:
    text: str  # rendered with the chat template
    examples: list[str]  # the examples shown, in order (numbered 1..len)
    num_tokens: int | None  # rendered length in tokens; None without a tokenizer
    dropped: int  # examples removed to fit the token budget
    truncated_ids: list[int] | None = None  # overflow="truncate" over the budget: the text's first budget tokens
    continues: str = ""  # what the response continues when the list opens the assistant's reply: the bare "9."

    @property
    def engine_input(self) -> str | list[int]:
        """What the engine gets: the truncated token ids, or the text (which it tokenizes as they were counted)."""
        return self.truncated_ids if self.truncated_ids is not None else self.text


PACKAGED_INSTRUCTIONS = ("question_generation", "reference")


def load_instruction(path: str | os.PathLike[str] | None = None) -> Instruction:
    """Read a prompt file (JSON with "system" and "user" strings), or a packaged one by name
    (PACKAGED_INSTRUCTIONS); None reads the default, `question_generation`."""
    name = "question_generation" if path is None else os.fspath(path)
    if name in PACKAGED_INSTRUCTIONS:
        text = (resources.files("serl") / "prompts" / f"{name}.json").read_text(encoding="utf-8")
        where = f"serl/prompts/{name}.json"
    else:
        where = os.fspath(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"{where}: cannot read the generation prompt file ({exc.strerror})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in ("system", "user")):
        raise ValueError(f'{where}: expected a JSON object with string fields "system" and "user"')
    return Instruction(system=data["system"], user=data["user"])


def normalize_example(text: str) -> str:
    """Collapse whitespace runs to one space, strip, and drop trailing colons, as the reference does."""
    return _WHITESPACE.sub(" ", text).strip().rstrip(":")


def select_examples(
    seed_pool: Sequence[str],
    kept_pool: Sequence[str],
    rng: random.Random,
    *,
    num_shots: int = 8,
    max_generated: int = 2,
) -> list[str]:
    """Sample min(max_generated, |kept|) kept problems and fill the other slots with seeds, then shuffle.

    The draws are the reference's (`sample` from the kept pool, `sample` from the seeds, `shuffle`), made on
    RNG."""
    if num_shots < 1:
        raise ValueError(f"num_shots must be at least 1, got {num_shots}")
    from_kept = rng.sample(list(kept_pool), min(max_generated, num_shots, len(kept_pool)))
    from_seeds = rng.sample(list(seed_pool), min(num_shots - len(from_kept), len(seed_pool)))
    examples = from_kept + from_seeds
    if not examples:
        raise ValueError("no few-shot examples: the seed pool is empty")
    rng.shuffle(examples)
    return examples


def render_prompt(
    tokenizer: Any, examples: Sequence[str], instruction: Instruction, examples_turn: ExamplesTurn = "user"
) -> str:
    """The chat-rendered prompt: system message, then the user prefix, "1. ex" lines and the next bare number; with
    `examples_turn="assistant"` the user message is the prefix alone and the lines open the assistant's reply."""
    if examples_turn not in EXAMPLES_TURNS:
        raise ValueError(f"unknown examples_turn {examples_turn!r}; expected one of {', '.join(EXAMPLES_TURNS)}")
    numbered = "".join(f"{i}. {normalize_example(ex)}\n" for i, ex in enumerate(examples, 1))
    listing = f"{numbered}{len(examples) + 1}."
    in_reply = examples_turn == "assistant"
    user = instruction.user.rstrip() if in_reply else f"{instruction.user}{listing}"
    reply = listing if in_reply else ""
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        return f"{instruction.system}\n{user}" + (f"\n{reply}" if in_reply else "")  # the reference's fallback
    messages = [{"role": "system", "content": instruction.system}, {"role": "user", "content": user}]
    try:
        rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception:  # some templates reject a system turn: fold it into the user turn
        merged = [{"role": "user", "content": f"{instruction.system}\n\n{user}"}]
        rendered = tokenizer.apply_chat_template(merged, tokenize=False, add_generation_prompt=True)
    return rendered + reply


def count_tokens(tokenizer: Any, text: str) -> int:
    """Tokens as the engine will see them (no special tokens added: the template already wrote them)."""
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def build_generation_prompt(
    tokenizer: Any,
    seed_pool: Sequence[str],
    kept_pool: Sequence[str],
    rng: random.Random,
    *,
    num_shots: int = 8,
    max_generated: int = 2,
    prompt_max_tokens: int | None = 1024,
    instruction: Instruction | None = None,
    overflow: PromptOverflow = "drop_examples",
    examples_turn: ExamplesTurn = "user",
) -> GenerationPrompt:
    """Sample examples (see `select_examples`) and render them; over `prompt_max_tokens`, drop whole examples
    (`drop_examples`) or keep the first `prompt_max_tokens` tokens (`truncate`, the reference's
    `tokenizer(..., add_special_tokens=False, max_length=prompt_max_len, truncation=True)`).

    Dropping takes the longest example first, so one huge seed costs one slot instead of several. A prompt is never
    cut mid-example; if even a single example does not fit, this raises ValueError. `prompt_max_tokens=None` (or
    no tokenizer) disables the budget."""
    if overflow not in PROMPT_OVERFLOWS:
        raise ValueError(f"unknown prompt overflow {overflow!r}; expected one of {', '.join(PROMPT_OVERFLOWS)}")
    instruction = instruction or load_instruction()
    examples = select_examples(seed_pool, kept_pool, rng, num_shots=num_shots, max_generated=max_generated)
    text = render_prompt(tokenizer, examples, instruction, examples_turn)
    continues = f"{len(examples) + 1}." if examples_turn == "assistant" else ""
    if tokenizer is None:
        return GenerationPrompt(text, examples, None, 0, continues=continues)
    num_tokens = count_tokens(tokenizer, text)
    if overflow == "truncate" and prompt_max_tokens is not None and num_tokens > prompt_max_tokens:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:prompt_max_tokens]
        # the lost tail held the bare next number, so the response continues no known text
        return GenerationPrompt(text, examples, prompt_max_tokens, 0, truncated_ids=list(ids))
    dropped = 0
    while prompt_max_tokens is not None and num_tokens > prompt_max_tokens:
        if len(examples) == 1:
            raise ValueError(
                f"the generation prompt with a single example is {num_tokens} tokens, over the budget of "
                f"{prompt_max_tokens}; raise prompt_max_len or use shorter seed problems"
            )
        longest = max(range(len(examples)), key=lambda i: (len(examples[i]), i))
        del examples[longest]
        dropped += 1
        text = render_prompt(tokenizer, examples, instruction, examples_turn)
        num_tokens = count_tokens(tokenizer, text)
    continues = f"{len(examples) + 1}." if examples_turn == "assistant" else ""
    return GenerationPrompt(text, examples, num_tokens, dropped, continues=continues)


def generation_params(
    *,
    max_new_tokens: int = 1024,
    temperature: float = 0.8,
    top_p: float = 0.95,
    presence_penalty: float = 2.0,
    seed: int | None = None,
) -> SamplingParams:
    """The reference's generation sampling: T 0.8, top-p 0.95, presence penalty 2, no stop strings (§1.3)."""
    return SamplingParams(
        temperature=temperature,
        top_p=top_p,
        presence_penalty=presence_penalty,
        max_new_tokens=max_new_tokens,
        seed=seed,
    )
