"""Padded policy inputs built from rollout completions: ``[left-padded prompt | right-padded response]``.

Layout as in the reference (serl-reference §4.1): every generated token is an action, including the generated EOS, so
the policy learns to stop. The masks come from the token lists' lengths, not from scanning for EOS, so an EOS inside a
chat-template prompt can never be mistaken for padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class SequenceBatch:
    input_ids: torch.Tensor  # [B, P + R] long
    attention_mask: torch.Tensor  # [B, P + R] long: 1 on real prompt and response tokens
    position_ids: torch.Tensor  # [B, P + R] long: 0 at each row's first real token
    action_mask: torch.Tensor  # [B, R] bool: 1 on generated tokens
    prompt_width: int  # P

    @property
    def response_width(self) -> int:
        return self.action_mask.shape[1]

    def to(self, device: torch.device | str) -> SequenceBatch:
        return SequenceBatch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.position_ids.to(device),
            self.action_mask.to(device),
            self.prompt_width,
        )


def build_sequences(
    prompt_ids: Sequence[Sequence[int] | torch.Tensor],
    response_ids: Sequence[Sequence[int] | torch.Tensor],
    *,
    pad_token_id: int,
) -> SequenceBatch:
    """Pad prompts on the left and responses on the right to the batch's widest, and build the masks."""
    if len(prompt_ids) != len(response_ids):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(response_ids)} responses")
    if not prompt_ids:
        raise ValueError("build_sequences needs at least one (prompt, response) pair")
    prompt_lengths = [len(p) for p in prompt_ids]
    if min(prompt_lengths) == 0:
        raise ValueError("an empty prompt has no token to predict the first response token from")
    response_lengths = [len(r) for r in response_ids]
    width_p, width_r = max(prompt_lengths), max(response_lengths)
    batch = len(prompt_ids)
    input_ids = torch.full((batch, width_p + width_r), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((batch, width_p + width_r), dtype=torch.long)
    for row, (prompt, response) in enumerate(zip(prompt_ids, response_ids, strict=True)):
        start, end = width_p - len(prompt), width_p + len(response)
        input_ids[row, start:width_p] = torch.as_tensor(prompt, dtype=torch.long)
        input_ids[row, width_p:end] = torch.as_tensor(response, dtype=torch.long)
        attention_mask[row, start:end] = 1
    # Positions count real tokens only, so left padding does not shift the rotary phase (as OpenRLHF's Actor does).
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    action_mask = attention_mask[:, width_p:].bool()
    return SequenceBatch(input_ids, attention_mask, position_ids, action_mask, width_p)
