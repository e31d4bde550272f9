"""PPO-clip policy loss with clip-higher, and the loss aggregation modes (serl-reference §4.5, peers §3).

Aggregation is written as each micro-batch's *share* of the optimizer step's loss, so the shares of a step's
micro-batches add up to the step loss and gradient accumulation needs no further rescaling:
  * ``token_mean_micro`` (reference, OpenRLHF v0.7.1): token mean inside each micro-batch, averaged over micro-batches;
  * ``token_mean_global``: token mean over the whole optimizer step (OpenRLHF HEAD, verl, DAPO);
  * ``seq_mean_token_mean``: per-sequence token mean, averaged over the step's sequences (original GRPO).
"""

from __future__ import annotations

import torch

from serl.rl.choices import LOSS_AGGREGATIONS, LossAggregation, check_choice
from serl.rl.masked import masked_mean


def clipped_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    *,
    eps_clip_low: float = 0.2,
    eps_clip_high: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token −min(ρ·A, clip(ρ, 1−ε_low, 1+ε_high)·A), the ratio ρ, and where the clipped term binds
    (there the token contributes no gradient)."""
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = ratio * advantages
    clipped = ratio.clamp(1 - eps_clip_low, 1 + eps_clip_high) * advantages
    return -torch.min(unclipped, clipped), ratio, clipped < unclipped


def aggregate_loss(
    per_token: torch.Tensor,
    action_mask: torch.Tensor,
    *,
    mode: LossAggregation,
    step_tokens: int,
    step_sequences: int,
    step_micro_batches: int,
) -> torch.Tensor:
    """This micro-batch's share of the step loss; ``step_*`` count the action tokens, sequences and micro-batches
    of the whole optimizer step this micro-batch belongs to."""
    mask = action_mask.to(per_token.dtype)
    if mode == "token_mean_micro":
        return masked_mean(per_token, mask) / step_micro_batches
    if mode == "token_mean_global":
        return (per_token * mask).sum() / max(step_tokens, 1)
    if mode == "seq_mean_token_mean":
        return masked_mean(per_token, mask, dim=-1).sum() / step_sequences
    check_choice(mode, LOSS_AGGREGATIONS, "loss aggregation")
    raise AssertionError(mode)  # a choice without a branch above
