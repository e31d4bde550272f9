"""Per-token KL estimators between the policy and the reference (serl-reference §4.2), δ = logp − logp_ref.

k1 = δ (unbiased, high variance), k2 = δ²/2, k3 = exp(−δ) − 1 + δ (Schulman's non-negative low-variance estimator).
No clamping, as in OpenRLHF v0.7.1. Padding positions give 0.
"""

from __future__ import annotations

import torch

from serl.rl.choices import KL_ESTIMATORS, KLEstimator, check_choice


def kl_estimate(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, action_mask: torch.Tensor, *, estimator: KLEstimator
) -> torch.Tensor:
    delta = (logprobs.float() - ref_logprobs.float()) * action_mask
    if estimator == "k1":
        return delta
    if estimator == "k2":
        return delta**2 / 2
    if estimator == "k3":
        return torch.expm1(-delta) + delta
    check_choice(estimator, KL_ESTIMATORS, "kl estimator")
    raise AssertionError(estimator)  # a choice without a branch above
