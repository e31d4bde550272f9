"""Cosine learning-rate schedule with linear warmup and a floor, as the reference ran it (serl-reference §5.2).

This is transformers 4.x ``cosine_with_min_lr`` (what OpenRLHF v0.7.1 used): lr = 0 on the first optimizer step,
warmup = ceil(total · warmup_ratio) steps, then a half cosine from lr down to min_lr_ratio · lr. transformers 5 shifted
both phases by one step, so the formula lives here rather than being imported.
"""

from __future__ import annotations

import functools
import math

import torch


def lr_multiplier(step: int, *, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return max(0.0, cosine * (1 - min_lr_ratio) + min_lr_ratio)


def warmup_steps_for(total_steps: int, warmup_ratio: float) -> int:
    return math.ceil(total_steps * warmup_ratio)


def cosine_schedule(
    optimizer: torch.optim.Optimizer, *, total_steps: int, warmup_ratio: float, min_lr_ratio: float
) -> torch.optim.lr_scheduler.LambdaLR:
    if total_steps < 1:
        raise ValueError(f"total_optimizer_steps must be >= 1, got {total_steps}")
    multiplier = functools.partial(
        lr_multiplier,
        warmup_steps=warmup_steps_for(total_steps, warmup_ratio),
        total_steps=total_steps,
        min_lr_ratio=min_lr_ratio,
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)
