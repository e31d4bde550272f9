"""Advantage estimators as OpenRLHF v0.7.1 computes them (serl-reference §4.3-4.4), as pure tensor functions.

Pipeline for every estimator:
  1. ``shape_rewards``: the estimator's group baseline turns raw rewards r into r̃;
  2. ``token_level_rewards``: R_t = −β·kl_t + [t = last action]·clip(r̃);
  3. ``discounted_returns``: A_t = Σ_{t' ≥ t} γ^{t'−t} R_{t'} (γ forced to 1 for the grouped estimators);
  4. ``masked_whiten`` over every action token of the batch, for reinforce, reinforce_baseline and (v0.7.1) rloo.

Groups are contiguous: rows [g·n, (g+1)·n) are the n samples of prompt g.
"""

from __future__ import annotations

import warnings

import torch

from serl.rl.choices import ESTIMATORS, GROUPED_ESTIMATORS, check_choice
from serl.rl.masked import masked_whiten


def check_estimator(estimator: str) -> None:
    check_choice(estimator, ESTIMATORS, "advantage estimator")


def effective_gamma(estimator: str, gamma: float) -> float:
    """The reference forces γ = 1 for the grouped estimators (their baseline is per sequence, not per token)."""
    if estimator in GROUPED_ESTIMATORS and gamma != 1.0:
        warnings.warn(f"gamma={gamma} is ignored for {estimator}: forced to 1.0 as in OpenRLHF", stacklevel=2)
        return 1.0
    return gamma


def estimator_whitens(estimator: str, *, rloo_whiten: bool = True) -> bool:
    """Global whitening: reinforce and reinforce_baseline always, rloo as v0.7.1 did (``rloo_whiten``),
    grpo and dr_grpo never."""
    if estimator == "rloo":
        return rloo_whiten
    return estimator in ("reinforce", "reinforce_baseline")


def shape_rewards(
    rewards: torch.Tensor, *, estimator: str, group_size: int, grpo_std_eps: float = 1e-9
) -> torch.Tensor:
    """r̃ per sequence: reinforce r; rloo r − mean of the others; reinforce_baseline and dr_grpo r − group mean;
    grpo (r − mean) / (unbiased std + eps), so a group of equal rewards gets 0."""
    check_estimator(estimator)
    rewards = rewards.float()
    if estimator == "reinforce":
        return rewards.clone()
    if group_size < 1 or rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    if estimator in ("rloo", "grpo") and group_size < 2:
        raise ValueError(f"{estimator} needs at least 2 samples per prompt, got group_size={group_size}")
    grouped = rewards.view(-1, group_size)
    if estimator == "rloo":
        shaped = grouped - (grouped.sum(-1, keepdim=True) - grouped) / (group_size - 1)
    elif estimator == "grpo":
        shaped = (grouped - grouped.mean(-1, keepdim=True)) / (grouped.std(-1, keepdim=True) + grpo_std_eps)
    else:  # reinforce_baseline, dr_grpo
        shaped = grouped - grouped.mean(-1, keepdim=True)
    return shaped.reshape(-1)


def last_action_index(action_mask: torch.Tensor) -> torch.Tensor:
    """Column of each row's last action (the generated EOS when there is one)."""
    width = action_mask.shape[1]
    return width - 1 - action_mask.long().fliplr().argmax(dim=1)


def token_level_rewards(
    shaped_rewards: torch.Tensor,
    action_mask: torch.Tensor,
    kl: torch.Tensor | None = None,
    *,
    kl_coef: float = 0.0,
    reward_clip: float | None = 10.0,
) -> torch.Tensor:
    """R_t = −β·kl_t on every action, plus clip(r̃, −c, c) on the last action. ``reward_clip`` None or ≤ 0: no clip."""
    scalar = shaped_rewards.float()
    if reward_clip is not None and reward_clip > 0:
        scalar = scalar.clamp(-reward_clip, reward_clip)
    mask = action_mask.float()
    token_rewards = torch.zeros_like(mask) if kl is None or kl_coef == 0 else -kl_coef * kl.float()
    token_rewards = token_rewards.scatter_add(1, last_action_index(action_mask)[:, None], scalar[:, None])
    return token_rewards * mask  # a row without actions gets nothing


def discounted_returns(token_rewards: torch.Tensor, action_mask: torch.Tensor, *, gamma: float = 1.0) -> torch.Tensor:
    """G_t = Σ_{t' ≥ t} γ^{t'−t} R_{t'} over action tokens."""
    rewards = token_rewards * action_mask
    if gamma == 1.0:
        return rewards.flip(-1).cumsum(-1).flip(-1)
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        running = rewards[:, t] + gamma * running
        returns[:, t] = running
    return returns


def compute_advantages(
    rewards: torch.Tensor,
    action_mask: torch.Tensor,
    kl: torch.Tensor | None = None,
    *,
    estimator: str,
    group_size: int,
    kl_coef: float = 0.0,
    gamma: float = 1.0,
    reward_clip: float | None = 10.0,
    whiten: bool = True,
    advantage_std_norm: bool = True,
    rloo_whiten: bool = True,
    grpo_std_eps: float = 1e-9,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token advantages [N, R] and per-sequence returns Σ_t R_t [N].

    ``kl`` is the per-token KL to put in the reward (None when KL is a loss term or there is no reference).
    ``whiten=False`` skips the whitening step so it can run later over another scope (the training batch).
    """
    gamma = effective_gamma(estimator, gamma)
    shaped = shape_rewards(rewards, estimator=estimator, group_size=group_size, grpo_std_eps=grpo_std_eps)
    token_rewards = token_level_rewards(shaped, action_mask, kl, kl_coef=kl_coef, reward_clip=reward_clip)
    advantages = discounted_returns(token_rewards, action_mask, gamma=gamma)
    if whiten and estimator_whitens(estimator, rloo_whiten=rloo_whiten):
        advantages = masked_whiten(advantages, action_mask, std_norm=advantage_std_norm)
    return advantages, token_rewards.sum(-1)
