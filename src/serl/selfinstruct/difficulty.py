"""The difficulty filter (serl-reference §3.1): keep a problem whose majority-agreement ratio lies in [lo,
hi].

The ratio is `GroupVote.majority_ratio` from `serl.reward` (the winner's count / n). Both bounds are
inclusive. A tolerance of 1e-6 (far below the 1/n spacing of real ratios) lets a ratio of exactly 0.8 pass
however it was computed: 4/5 as a float32 mean is 0.800000012, which the reference's float32 comparison would
reject through rounding alone (with its n = 16 no ratio lies that close to a bound)."""

from __future__ import annotations

import math

_TOLERANCE = 1e-6


def passes_difficulty(majority_ratio: float, lo: float = 0.2, hi: float = 0.8) -> bool:
    """True when lo ≤ MAJORITY_RATIO ≤ hi (inclusive); a NaN ratio never passes."""
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"difficulty bounds must satisfy 0 <= lo <= hi <= 1, got lo={lo}, hi={hi}")
    if math.isnan(majority_ratio):
        return False
    return lo - _TOLERANCE <= majority_ratio <= hi + _TOLERANCE


def difficulty_fate(majority_ratio: float, lo: float = 0.2, hi: float = 0.8) -> str:
    """The instruction-log fate of a rolled-out problem: "kept" or "rejected:difficulty"."""
    return "kept" if passes_difficulty(majority_ratio, lo, hi) else "rejected:difficulty"
