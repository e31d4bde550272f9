"""Self-rewarding: answer extraction, equivalence, majority vote, ground-truth reward and batch metrics.

Typical use in a training step::

    votes = score_groups(groups, prompts=prompts)          # one GroupVote per prompt, scored on all cores
    rewards = [vote.rewards for vote in votes]
    log(batch_metrics(votes, gt_rewards=None))

Every function here has its own time limit and never hangs on a pathological answer, from any thread.
"""

from __future__ import annotations

from serl.reward.equivalence import clear_equivalence_cache, is_equivalent
from serl.reward.extract import EXTRACTORS, Answer, extract_answer, extract_choice
from serl.reward.ground_truth import gold_text, gt_reward, gt_rewards
from serl.reward.majority import GroupVote, majority_vote, score_groups
from serl.reward.metrics import batch_metrics

__all__ = [
    "EXTRACTORS",
    "Answer",
    "GroupVote",
    "batch_metrics",
    "clear_equivalence_cache",
    "extract_answer",
    "extract_choice",
    "gold_text",
    "gt_reward",
    "gt_rewards",
    "is_equivalent",
    "majority_vote",
    "score_groups",
]
