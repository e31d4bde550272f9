"""Ground-truth reward (label as gold) and the batch metrics built on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from serl.reward import GroupVote, batch_metrics, gold_text, gt_reward, gt_rewards, majority_vote

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def test_gt_reward_by_hand() -> None:
    assert gt_reward(r"so the answer is \boxed{\frac{\pi}{2}}", r"\frac{\pi}{2}") == 1.0
    assert gt_reward("The answer is 0.5", r"\frac{1}{2}") == 1.0
    assert gt_reward(r"\boxed{3}", r"\boxed{3}") == 1.0  # MATH-500 labels come boxed
    assert gt_reward(r"\boxed{2}", "$x=2$") == 1.0  # the swapped direction counts too
    assert gt_reward(r"\boxed{4}", "3") == 0.0
    assert gt_reward("no answer here", "3") == 0.0
    assert gt_reward("The answer is (B)", "B", extractor="choice") == 1.0
    assert gt_reward("The answer is (B)", "C", extractor="choice") == 0.0
    assert gt_reward("cost: 1,000", "1000", extractor="number") == 1.0
    assert gt_reward("45", 45) == 1.0  # type: ignore[arg-type]  # a numeric label read from JSON


def test_a_gold_without_answer_never_rewards() -> None:
    for label in ["", "   ", None, "no math here", r"\boxed{}"]:
        assert gt_reward("no math here", label) == 0.0
        assert gt_reward(r"\boxed{1}", label) == 0.0


def test_bare_latex_labels_are_read_as_math() -> None:
    assert gold_text(r"20\%") == r"$20\%$"
    assert gold_text(r"\boxed{7}") == r"\boxed{7}"
    assert gold_text("B", "choice") == "B"
    assert gt_reward(r"\boxed{20\%}", r"20\%") == 1.0
    assert gt_reward(r"\boxed{78\pi}", r"78\pi") == 1.0
    assert gt_reward(r"\boxed{78}", r"78\pi") == 0.0  # read raw, the label would be 78 and this would score 1
    assert gt_reward(r"\boxed{2}", r"2+2\sqrt{2}") == 0.0  # raw: 2


def test_seed_solutions_match_their_labels() -> None:
    path = DATA / "math" / "seed_math_train_500_difficulty_0.2_0.8.jsonl"
    if not path.exists():
        pytest.skip("shared data not available")
    rows = [json.loads(line) for line in path.read_text().splitlines()][:150]
    rewards = gt_rewards([row["solution"] for row in rows], [row["answer"] for row in rows], num_workers=0)
    assert sum(rewards) >= 0.98 * len(rows)  # all 500: 498 (raw labels, as the reference reads them: 408)
    # shuffled labels must not match
    shuffled = gt_rewards([row["solution"] for row in rows[:50]], [row["answer"] for row in rows[1:51]], num_workers=0)
    assert sum(shuffled) <= 3


def test_gt_rewards_checks_lengths() -> None:
    with pytest.raises(ValueError, match="labels"):
        gt_rewards(["1", "2"], ["1"])


def _vote(rewards: list[float], majority_index: int | None, majority_size: int, timed_out: bool = False) -> GroupVote:
    n = len(rewards)
    return GroupVote(rewards, None, majority_size / n, [], [None] * n, majority_index, majority_size, timed_out)


def test_batch_metrics_by_hand() -> None:
    votes = [
        _vote([1.0, 1.0, 1.0, 0.0], 0, 3),  # majority right: label hit
        _vote([0.0, 1.0, 0.0, 1.0], 1, 2),  # majority wrong
        _vote([0.0, 0.0, 0.0, 0.0], None, 1, timed_out=True),  # no majority
        _vote([1.0, 1.0, 1.0, 1.0], 0, 4),  # unlabelled
    ]
    truth = [[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0], None]
    metrics = batch_metrics(votes, gt_rewards=truth)
    assert metrics["majority_ratio"] == pytest.approx((0.75 + 0.5 + 0.25 + 1.0) / 4)
    assert metrics["majority_ratio_hist"] == [0, 0, 1, 0, 0, 1, 0, 1, 0, 1]
    assert metrics["majority_voting_reward"] == pytest.approx((0.75 + 0.5 + 0.0 + 1.0) / 4)
    assert metrics["no_majority_frac"] == 0.25
    assert metrics["timed_out_frac"] == 0.25
    # labelled groups only: 0, 1, 2
    assert metrics["label_accuracy"] == pytest.approx(1 / 3)
    assert metrics["reward_accuracy"] == pytest.approx((1.0 + 0.0 + 0.75) / 3)
    assert metrics["ground_truth_ratio"] == pytest.approx((0.75 + 0.5 + 0.25) / 3)
    assert metrics["pass@n"] == 1.0
    assert metrics["labelled_groups"] == 3.0


def test_batch_metrics_without_labels_and_errors() -> None:
    votes = [majority_vote([r"\boxed{1}", "1", r"\boxed{2}"])]
    metrics = batch_metrics(votes)
    assert metrics["majority_ratio"] == pytest.approx(2 / 3)
    assert metrics["majority_voting_reward"] == pytest.approx(2 / 3)
    assert metrics["distinct_answers"] == 2.0  # {1, 1} and {2}
    spread = batch_metrics([majority_vote(["1", "2", "3", "1"]), majority_vote(["5", "5", "5", "5"])])
    assert spread["distinct_answers"] == pytest.approx((3 + 1) / 2)
    assert "label_accuracy" not in metrics
    with pytest.raises(ValueError):
        batch_metrics([])
    with pytest.raises(ValueError):
        batch_metrics(votes, gt_rewards=[[1.0, 0.0]])


def test_gt_rewards_contains_match() -> None:
    responses = [r"so \boxed{4}", "4", r"\boxed{5}", "anything"]
    labels = ["\\boxed", "\\boxed", None, ""]
    assert gt_rewards(responses, labels, match="contains") == [1.0, 0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="unknown gt match"):
        gt_rewards(responses, labels, match="regex")
