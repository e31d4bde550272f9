"""The reward unit of a training step: groups of responses in, training rewards, votes and ground-truth rewards out.

`serl train` and `serl generate` score with the same `Scorer`, configured by the run's `reward` section: majority vote
(serl and maj modes) or the label (gt mode). Ground-truth rewards are computed wherever a problem has a label, in
every mode, so label-based health metrics (label accuracy, reward accuracy) come for free with labelled data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from serl import rundir as names

if TYPE_CHECKING:
    from serl.config import RewardConfig
    from serl.reward.majority import GroupVote


@dataclass
class Scores:
    rewards: list[list[float]]  # per group, per response: what the policy is trained on
    votes: list[GroupVote] = field(default_factory=list)  # per group under the majority reward; empty in gt mode
    gt_rewards: list[list[float] | None] = field(default_factory=list)  # per group; None where there is no label


class Scorer:
    """Majority-vote rewards (`ground_truth=False`) or ground-truth rewards, as REWARD configures them."""

    def __init__(self, reward: RewardConfig, *, ground_truth: bool = False):
        self.cfg = reward
        self.ground_truth = ground_truth

    def score(self, prompts: Sequence[str], labels: Sequence[Any], groups: Sequence[Sequence[str]]) -> Scores:
        """PROMPTS are the problems as written (the reference scores `prompt + response` when asked to); LABELS hold
        None for unlabelled problems."""
        from serl.reward import gt_rewards, score_groups

        r = self.cfg
        labelled = [i for i, label in enumerate(labels) if label is not None]
        gt: list[list[float] | None] = [None] * len(groups)
        if labelled:
            flat = [(response, labels[i]) for i in labelled for response in groups[i]]
            scores = gt_rewards([x[0] for x in flat], [x[1] for x in flat], num_workers=r.num_workers, match=r.gt_match)
            at = 0
            for i in labelled:
                gt[i], at = scores[at : at + len(groups[i])], at + len(groups[i])
        if self.ground_truth:
            if len(labelled) < len(groups):
                raise ValueError("train.mode=gt needs a label for every problem (data.label_key)")
            return Scores(rewards=[g for g in gt if g is not None], gt_rewards=gt)
        votes = score_groups(
            groups,
            prompts=list(prompts),
            num_workers=r.num_workers,
            extractor=r.extractor,
            method=r.majority_method,
            score_prompt_and_response=r.score_prompt_and_response,
            timeout_s=r.timeout_s,
            no_majority=r.no_majority,
        )
        return Scores(rewards=[v.rewards for v in votes], votes=votes, gt_rewards=gt)


def reward_metrics(votes: Sequence[GroupVote], gt_rewards: Sequence[list[float] | None]) -> dict[str, Any]:
    """The step's `reward/*` metrics over every scored group: the vote's health (`batch_metrics`), with label-based
    ones over the labelled groups; without votes (gt mode), the ground-truth pass rates."""
    from serl.reward import batch_metrics

    if votes:
        reward = batch_metrics(votes, gt_rewards=list(gt_rewards))
        reward.pop("majority_ratios", None)  # per-group values live in rollouts/
        reward["majority_ratio_mean"] = reward.pop("majority_ratio")
        return {f"{names.REWARD}{k}": v for k, v in reward.items()}
    labelled = [g for g in gt_rewards if g is not None]
    if not labelled:
        return {}
    flat = [x for g in labelled for x in g]
    return {
        names.GROUND_TRUTH_RATIO: sum(flat) / max(1, len(flat)),
        names.PASS_AT_N: sum(map(any, labelled)) / len(labelled),
    }
