"""RL core: advantage estimators, KL, PPO-clip loss, memory-efficient token log-probs and the policy update.

Public names are imported from their submodules on first use (`serl.lazy`), so importing `serl.rl.choices`
(as the config loader does) does not import torch."""

from __future__ import annotations

from serl.lazy import lazy_exports

_EXPORTS = {
    "ESTIMATORS": "choices",
    "LOSS_AGGREGATIONS": "choices",
    "compute_advantages": "advantages",
    "discounted_returns": "advantages",
    "effective_gamma": "advantages",
    "estimator_whitens": "advantages",
    "shape_rewards": "advantages",
    "token_level_rewards": "advantages",
    "Experience": "experience",
    "kl_estimate": "kl",
    "chunked_token_logprobs": "logprobs",
    "naive_token_logprobs": "logprobs",
    "response_logprobs": "logprobs",
    "aggregate_loss": "loss",
    "clipped_policy_loss": "loss",
    "masked_mean": "masked",
    "masked_whiten": "masked",
    "PolicyTrainer": "policy_trainer",
    "cosine_schedule": "schedule",
    "lr_multiplier": "schedule",
    "SequenceBatch": "sequences",
    "build_sequences": "sequences",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
