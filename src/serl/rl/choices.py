"""The named choices of the RL core, one list each: the config loader checks `algo.*`, `train.optimizer` and
`train.autocast_dtype` values against these Literal types, and the functions that branch on them check their
arguments against the same lists.
Kept free of torch so that reading a config stays cheap."""

from __future__ import annotations

from typing import Literal, get_args

Estimator = Literal["reinforce", "reinforce_baseline", "rloo", "grpo", "dr_grpo"]
KLEstimator = Literal["k1", "k2", "k3"]
LossAggregation = Literal["token_mean_micro", "token_mean_global", "seq_mean_token_mean"]
WhitenScope = Literal["rollout", "train"]  # rollout: before the difficulty filter (reference) | train: final batch
OptimizerName = Literal["adamw", "adamw_8bit", "deepspeed_cpu_adam"]
AutocastDtype = Literal["bfloat16", "float16"]

ESTIMATORS: tuple[str, ...] = get_args(Estimator)
# Estimators with a per-group baseline: they need n >= 2 samples per prompt, and force gamma to 1 (OpenRLHF).
GROUPED_ESTIMATORS: frozenset[str] = frozenset({"reinforce_baseline", "rloo", "grpo", "dr_grpo"})
KL_ESTIMATORS: tuple[str, ...] = get_args(KLEstimator)
LOSS_AGGREGATIONS: tuple[str, ...] = get_args(LossAggregation)
WHITEN_SCOPES: tuple[str, ...] = get_args(WhitenScope)
OPTIMIZERS: tuple[str, ...] = get_args(OptimizerName)
AUTOCAST_DTYPES: tuple[str, ...] = get_args(AutocastDtype)


def check_choice(value: object, choices: tuple[str, ...], what: str) -> None:
    """Raise ValueError naming WHAT and the valid CHOICES unless VALUE is one of them."""
    if value not in choices:
        listed = f"{', '.join(choices[:-1])} or {choices[-1]}" if len(choices) > 1 else choices[0]
        raise ValueError(f"unknown {what} {value!r}; use one of {listed}")
