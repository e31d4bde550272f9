"""The difficulty filter (serl-reference §3.1), one rule for `serl train` and `serl generate`: keep a problem whose
group of rollouts has a mean raw reward in [lo, hi].

The quantity is the reference's `acc = mean(info['reward'])`, over the rewards the policy is trained on. Under the
majority-vote reward it equals the vote's majority ratio (winner count / n) except in one case: a group where no two
responses agree scores 0 under `reward.no_majority=zero` (the default), where the ratio is 1/n (and the reference's
one-hot reward, `no_majority=first`, gives 1/n as well). Under the ground-truth reward it is the pass rate.

Both bounds are inclusive. A tolerance of 1e-6 (far below the 1/n spacing of real values) lets a value of exactly 0.8
pass however it was computed: 4/5 as a float32 mean is 0.800000012, which the reference's float32 comparison would
reject through rounding alone (with its n = 16 no value lies that close to a bound)."""

from __future__ import annotations

import math
from collections.abc import Sequence

_TOLERANCE = 1e-6


def group_difficulty(rewards: Sequence[float]) -> float:
    """The filter's input for one group: the mean of its raw rewards (NaN for an empty group, which never passes)."""
    return sum(rewards) / len(rewards) if rewards else math.nan


def passes_difficulty(reward_mean: float, lo: float = 0.2, hi: float = 0.8) -> bool:
    """True when lo ≤ REWARD_MEAN ≤ hi (inclusive); a NaN never passes."""
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"difficulty bounds must satisfy 0 <= lo <= hi <= 1, got lo={lo}, hi={hi}")
    if math.isnan(reward_mean):
        return False
    return lo - _TOLERANCE <= reward_mean <= hi + _TOLERANCE


def difficulty_fate(reward_mean: float, lo: float = 0.2, hi: float = 0.8) -> str:
    """The instruction-log fate of a rolled-out problem: "kept" or "rejected:difficulty"."""
    return "kept" if passes_difficulty(reward_mean, lo, hi) else "rejected:difficulty"
