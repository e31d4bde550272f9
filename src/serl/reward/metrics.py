"""Health metrics of the self-reward for one batch of groups (TTRL's set, peers.md §5).

Always: `majority_ratio` (mean, a 10-bin histogram over [0, 1] and the raw values), `majority_voting_reward` (mean
reward, the training signal), `no_majority_frac` (groups where no two responses agree), `distinct_answers` (mean
number of answer clusters per group, a response without an answer counting as its own) and `timed_out_frac`. A
majority ratio near 1 with one distinct answer per group, falling entropy and shrinking responses are the label-free
signs of a collapse onto a confident answer (arXiv 2505.21444).

With ground-truth rewards for some groups (seed problems have labels, generated ones do not), over those groups only:
- `label_accuracy`: the majority answer is correct (the winner's ground-truth reward is 1; no majority = miss);
- `reward_accuracy`: the fraction of responses whose majority reward equals their ground-truth reward;
- `ground_truth_ratio`: the fraction of responses that are correct (pass@1 on the rollout);
- `pass@n`: some response in the group is correct;
- `labelled_groups`: how many groups these averages cover.
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import fmean

from serl.reward.majority import GroupVote

HISTOGRAM_BINS = 10


def batch_metrics(
    votes: Sequence[GroupVote], gt_rewards: Sequence[Sequence[float] | None] | None = None
) -> dict[str, float | list]:
    """Metrics for a batch. `gt_rewards[g]` holds group g's per-response ground-truth rewards, or None (no label)."""
    if not votes:
        raise ValueError("batch_metrics needs at least one group")
    ratios = [vote.majority_ratio for vote in votes]
    histogram = [0] * HISTOGRAM_BINS
    for ratio in ratios:
        histogram[min(int(ratio * HISTOGRAM_BINS), HISTOGRAM_BINS - 1)] += 1
    metrics: dict[str, float | list] = {
        "majority_ratio": fmean(ratios),
        "majority_ratio_hist": histogram,
        "majority_ratios": ratios,
        "majority_voting_reward": fmean(fmean(vote.rewards) if vote.rewards else 0.0 for vote in votes),
        "no_majority_frac": fmean(0.0 if vote.has_majority else 1.0 for vote in votes),
        "distinct_answers": fmean(len(vote.cluster_sizes) for vote in votes),
        "timed_out_frac": fmean(1.0 if vote.timed_out else 0.0 for vote in votes),
    }
    if gt_rewards is None:
        return metrics
    if len(gt_rewards) != len(votes):
        raise ValueError(f"{len(gt_rewards)} ground-truth rows for {len(votes)} groups")
    labelled = [(vote, truth) for vote, truth in zip(votes, gt_rewards, strict=True) if truth is not None]
    for vote, truth in labelled:
        if len(truth) != len(vote.rewards):
            raise ValueError(f"a group has {len(vote.rewards)} responses but {len(truth)} ground-truth rewards")
    labelled = [(vote, truth) for vote, truth in labelled if truth]
    if not labelled:
        return metrics
    metrics["label_accuracy"] = fmean(
        1.0 if vote.majority_index is not None and truth[vote.majority_index] == 1.0 else 0.0
        for vote, truth in labelled
    )
    metrics["reward_accuracy"] = fmean(
        fmean(1.0 if reward == correct else 0.0 for reward, correct in zip(vote.rewards, truth, strict=True))
        for vote, truth in labelled
    )
    metrics["ground_truth_ratio"] = fmean(fmean(truth) for _, truth in labelled)
    metrics["pass@n"] = fmean(1.0 if max(truth) == 1.0 else 0.0 for _, truth in labelled)
    metrics["labelled_groups"] = float(len(labelled))
    return metrics
