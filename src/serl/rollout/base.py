"""The rollout-engine interface shared by the HF and vLLM engines."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

import torch

FinishReason = Literal["eos", "stop", "length"]


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    top_k: int = -1  # -1 disables
    presence_penalty: float = 0.0  # vLLM definition: subtract this from the logit of every token already generated
    max_new_tokens: int = 1024
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: bool = False  # return per-token log-probs of the sampled tokens


@dataclass
class Completion:
    prompt_index: int  # index into the prompts passed to generate()
    sample_index: int  # 0..n-1 within the prompt's group
    prompt_ids: list[int]
    response_ids: list[int]  # includes the EOS token when finish_reason == "eos"
    text: str  # decoded response, special tokens skipped, cut before any stop string
    finish_reason: FinishReason
    logprobs: list[float] | None = field(default=None)


class RolloutEngine(Protocol):
    """generate() returns len(prompts) * n completions, the n samples of each prompt contiguous and in prompt order."""

    def generate(
        self, prompts: list[str] | list[list[int]], params: SamplingParams, n: int = 1
    ) -> list[Completion]: ...

    def update_weights(self, source: torch.nn.Module | dict[str, torch.Tensor]) -> None: ...

    def sleep(self) -> None: ...

    def wake(self) -> None: ...
