"""Self-rewarding: answer extraction, equivalence, majority vote, ground-truth reward and batch metrics.

Typical use in a training step::

    votes = score_groups(groups, prompts=prompts)          # one GroupVote per prompt, scored on all cores
    rewards = [vote.rewards for vote in votes]
    log(batch_metrics(votes, gt_rewards=None))

Every function here has its own time limit and never hangs on a pathological answer, from any thread.

Public names are imported from their submodules on first use (`serl.lazy`), so importing `serl.reward.choices`
(as the config loader does) does not import math-verify or sympy."""

from __future__ import annotations

from serl.lazy import lazy_exports

_EXPORTS = {
    "EXTRACTORS": "choices",
    "clear_equivalence_cache": "equivalence",
    "is_equivalent": "equivalence",
    "Answer": "extract",
    "extract_answer": "extract",
    "extract_choice": "extract",
    "gold_text": "ground_truth",
    "gt_reward": "ground_truth",
    "gt_rewards": "ground_truth",
    "GroupVote": "majority",
    "majority_vote": "majority",
    "score_groups": "majority",
    "batch_metrics": "metrics",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
