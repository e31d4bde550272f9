"""RL core: advantage estimators, KL, PPO-clip loss, memory-efficient token log-probs and the policy update."""

from __future__ import annotations

from serl.rl.advantages import (
    ESTIMATORS,
    compute_advantages,
    discounted_returns,
    effective_gamma,
    estimator_whitens,
    shape_rewards,
    token_level_rewards,
)
from serl.rl.experience import Experience
from serl.rl.kl import kl_estimate
from serl.rl.logprobs import chunked_token_logprobs, naive_token_logprobs, response_logprobs
from serl.rl.loss import LOSS_AGGREGATIONS, aggregate_loss, clipped_policy_loss
from serl.rl.masked import masked_mean, masked_whiten
from serl.rl.policy_trainer import PolicyTrainer
from serl.rl.schedule import cosine_schedule, lr_multiplier
from serl.rl.sequences import SequenceBatch, build_sequences

__all__ = [
    "ESTIMATORS",
    "LOSS_AGGREGATIONS",
    "Experience",
    "PolicyTrainer",
    "SequenceBatch",
    "aggregate_loss",
    "build_sequences",
    "chunked_token_logprobs",
    "clipped_policy_loss",
    "compute_advantages",
    "cosine_schedule",
    "discounted_returns",
    "effective_gamma",
    "estimator_whitens",
    "kl_estimate",
    "lr_multiplier",
    "masked_mean",
    "masked_whiten",
    "naive_token_logprobs",
    "response_logprobs",
    "shape_rewards",
    "token_level_rewards",
]
