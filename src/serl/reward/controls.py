"""Reward controls: what a training run's rewards become in a control experiment (`reward.control`).

- `shuffle`: the rewards of the groups that passed the difficulty filter are pooled and permuted across those groups,
  so the trained batch keeps its reward mean and problems but a response's reward says nothing about the response.
  A gain that survives this is not the self-reward's doing (format drift, clipping bias, "spurious rewards").
- `invert`: every reward r becomes 1 - r, a sabotaged reward that trains away from the majority: a collapse guard
  (the canary) must catch it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from serl.reward.choices import REWARD_CONTROLS, RewardControl


def apply_control(
    rewards: Sequence[Sequence[float]], kept: Sequence[bool], control: RewardControl, *, seed: int
) -> list[list[float]]:
    """The training rewards of one rollout round under CONTROL; `kept[g]` says whether group g passed the filter."""
    if control not in REWARD_CONTROLS:
        raise ValueError(f"unknown reward control {control!r}; expected one of {', '.join(REWARD_CONTROLS)}")
    if len(kept) != len(rewards):
        raise ValueError(f"{len(kept)} filter decisions for {len(rewards)} groups")
    out = [list(group) for group in rewards]
    if control == "invert":
        return [[1.0 - r for r in group] for group in out]
    if control == "shuffle":
        pooled = [r for group, keep in zip(out, kept, strict=True) if keep for r in group]
        random.Random(seed).shuffle(pooled)
        at = 0
        for g, keep in enumerate(kept):
            if keep:
                out[g], at = pooled[at : at + len(out[g])], at + len(out[g])
    return out
