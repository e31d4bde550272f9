"""Evaluation metrics: pass@k estimator, majority rule, and maj@K/mean@K/pass@K on a hand-built output file."""

from __future__ import annotations

import json
from math import comb

import pytest

from serl.evaluation.math_eval import math_metrics, score_responses
from serl.evaluation.metrics import (
    majority_accuracy_by_votes,
    majority_index,
    paired_bootstrap,
    pass_at_k,
    sample_ks,
    sampled_metrics,
    seed_question_bootstrap,
)
from serl.evaluation.outputs import read_records


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [(4, 1, 2, 0.5), (4, 2, 2, 5 / 6), (5, 0, 3, 0.0), (5, 3, 3, 1.0), (10, 2, 1, 0.2), (16, 16, 16, 1.0)],
)
def test_pass_at_k_hand_values(n: int, c: int, k: int, expected: float) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_matches_the_binomial_formula() -> None:
    for n in range(1, 13):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k))


@pytest.mark.parametrize(("n", "c", "k"), [(4, 5, 1), (4, 1, 5), (4, 1, 0), (0, 0, 1)])
def test_pass_at_k_rejects_impossible_counts(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_sample_ks() -> None:
    assert sample_ks(1) == [1]
    assert sample_ks(6) == [1, 2, 4, 6]
    assert sample_ks(16) == [1, 2, 4, 8, 16]


def test_majority_index_most_equivalents_ties_to_lowest_index() -> None:
    t, f = True, False
    # 0~2, 1~3~4: response 1 has 3 equivalents, response 0 has 2
    eq = [
        [t, f, t, f, f],
        [f, t, f, t, t],
        [t, f, t, f, f],
        [f, t, f, t, t],
        [f, t, f, t, t],
    ]
    assert majority_index(eq) == 1
    assert majority_index(eq, 4) == 0  # first four: 0 and 1 both have 2; the lower index wins
    assert majority_index(eq, 1) == 0
    with pytest.raises(ValueError):
        majority_index(eq, 6)


def test_sampled_metrics_greedy_is_plain_accuracy() -> None:
    metrics = sampled_metrics([[True], [False], [True], [True]])
    assert metrics == {"questions": 4, "samples": 1, "pass@1": 0.75}


# A hand-built per-question file: four questions, four responses each, answers in assorted styles.
HAND_BUILT = [
    ("\\boxed{3}", ["so \\boxed{3}", "\\boxed{5}", "the answer is $\\frac{6}{2}$", "\\boxed{7}"]),
    ("\\boxed{10}", ["4", "The answer is 10", "\\boxed{4}", "4.0"]),
    ("\\boxed{2}", ["1", "2", "\\boxed{2}", "6"]),
    ("\\boxed{9}", ["I don't know", "\\boxed{9}", "8", "nonsense"]),
]
# By hand: correct per response, and the majority winner among the first k responses (k = 1, 2, 4)
EXPECTED_CORRECT = [[1, 0, 1, 0], [0, 1, 0, 0], [0, 1, 1, 0], [0, 1, 0, 0]]
EXPECTED_MAJORITY = [{1: 0, 2: 0, 4: 0}, {1: 0, 2: 0, 4: 0}, {1: 0, 2: 0, 4: 1}, {1: 0, 2: 0, 4: 0}]


def test_maj_mean_pass_at_k_on_a_hand_built_file(tmp_path) -> None:
    golds = [gold for gold, _ in HAND_BUILT]
    correct, answers, majority, votes = score_responses([responses for _, responses in HAND_BUILT], golds)
    assert [[int(c) for c in row] for row in correct] == EXPECTED_CORRECT
    assert votes == [2, 3, 2, 1]  # 3 = 6/2; 4 = \boxed{4} = 4.0; 2 = \boxed{2}; no two answers agree
    assert [{int(k): v for k, v in row.items()} for row in majority] == EXPECTED_MAJORITY
    assert answers[3][0] is None and answers[0][2] == "\\frac{6}{2}"

    path = tmp_path / "hand.jsonl"
    lines = [
        {"id": str(i), "responses": responses, "gold": gold, "correct": correct[i], "majority": majority[i]}
        | {"majority_votes": votes[i]}
        for i, (gold, responses) in enumerate(HAND_BUILT)
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    metrics = math_metrics(read_records(path))
    # mean@4 = (2 + 1 + 2 + 1) / 16; pass@2 per question: c=2 -> 1 - 1/6, c=1 -> 1 - 3/6
    assert metrics["mean@4"] == pytest.approx(6 / 16)
    assert metrics["pass@1"] == pytest.approx(6 / 16)
    assert metrics["pass@2"] == pytest.approx((5 / 6 + 0.5 + 5 / 6 + 0.5) / 4)
    assert metrics["pass@4"] == 1.0
    assert metrics["maj@1"] == 0.25  # only question 0's first response is right
    assert metrics["maj@2"] == 0.25
    assert metrics["maj@4"] == 0.5  # questions 0 and 2: "2" wins question 2 with two votes
    # right with 2 votes (questions 0 and 2), wrong with 3 (question 1: "4") and with 1 (question 3, no majority)
    assert metrics["majority_by_votes"] == {
        "1": {"questions": 1, "majority_correct": 0.0},
        "2": {"questions": 2, "majority_correct": 1.0},
        "3": {"questions": 1, "majority_correct": 0.0},
    }
    assert "breakdowns" not in metrics


def test_majority_accuracy_by_votes_hand_values() -> None:
    correct = [[True, True, False], [False, False, True], [True, False, False], [False, True, True]]
    # winners 0, 0, 1, 1 with 2, 2, 1, 2 votes: by 2 votes right in questions 0 and 3, wrong in question 1
    table = majority_accuracy_by_votes(correct, [0, 0, 1, 1], [2, 2, 1, 2])
    assert table == {"1": {"questions": 1, "majority_correct": 0.0}, "2": {"questions": 3, "majority_correct": 2 / 3}}
    with pytest.raises(ValueError):
        majority_accuracy_by_votes(correct, [0, 0, 3, 1], [2, 2, 1, 2])
    with pytest.raises(ValueError):
        majority_accuracy_by_votes(correct, [0, 0], [2, 2])


def test_breakdowns_by_level_and_subject() -> None:
    records = [
        {"correct": [True], "meta": {"level": 1, "subject": "Algebra"}},
        {"correct": [False], "meta": {"level": 1, "subject": "Geometry"}},
        {"correct": [True], "meta": {"level": 2, "subject": "Algebra"}},
    ]
    breakdowns = math_metrics(records)["breakdowns"]
    assert breakdowns["level"] == {"1": {"questions": 2, "pass@1": 0.5}, "2": {"questions": 1, "pass@1": 1.0}}
    assert breakdowns["subject"]["Algebra"] == {"questions": 2, "pass@1": 1.0}


def test_paired_bootstrap_of_identical_models_is_exactly_zero() -> None:
    scores = [True, False, True, True, False]
    result = paired_bootstrap(scores, scores, resamples=500)
    assert (result.difference, result.low, result.high, result.questions) == (0.0, 0.0, 0.0, 5)
    assert not result.excludes_zero


def test_paired_bootstrap_hand_values() -> None:
    # B fixes 3 of 10 questions that A got wrong and breaks none: every resample's difference is a multiple of 1/10
    # between 0 and 1, the mean difference is 0.3, and a resample is 0 only if it draws none of the 3 (0.7^10 = 2.8 %).
    a = [False] * 3 + [True] * 4 + [False] * 3
    b = [True] * 3 + [True] * 4 + [False] * 3
    result = paired_bootstrap(a, b, resamples=20_000, seed=1)
    assert result.difference == pytest.approx(0.3)
    assert result.low == pytest.approx(0.0) and result.high == pytest.approx(0.6)  # Binomial(10, 0.3)/10 quantiles
    assert not result.excludes_zero  # 2.8 % of resamples are 0, above the 2.5 % tail
    many = paired_bootstrap(a * 10, b * 10, resamples=20_000, seed=1)  # 100 questions: 0.3 ± 1.96·0.046
    assert 0.2 <= many.low <= 0.22 and 0.38 <= many.high <= 0.4 and many.excludes_zero


def test_paired_bootstrap_pairs_the_questions() -> None:
    # Same accuracies (0.5) on 40 questions: paired, B = A gives a zero-width interval; B = not A the widest one.
    a = [i % 2 == 0 for i in range(40)]
    swapped = paired_bootstrap(a, [not x for x in a], resamples=5_000)
    assert swapped.difference == 0.0 and swapped.high - swapped.low > 0.5
    assert paired_bootstrap(a, a, resamples=5_000).high - paired_bootstrap(a, a, resamples=5_000).low == 0.0
    assert paired_bootstrap(a, a[::-1], seed=3) == paired_bootstrap(a, a[::-1], seed=3)  # deterministic
    with pytest.raises(ValueError, match="equally long"):
        paired_bootstrap([True], [True, False])


def test_seed_question_bootstrap_spans_the_seeds() -> None:
    # Two training seeds, 50 questions: seed A changed nothing, seed B fixed every question. Resampling questions
    # alone cannot see that (every row is constant: a zero-width interval per seed); resampling the two seeds gives
    # pooled means 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4, so the 95 % interval is [0, 1] around 0.5.
    result = seed_question_bootstrap([[0.0] * 50, [1.0] * 50], resamples=20_000, seed=2)
    assert (result.difference, result.low, result.high, result.questions) == (0.5, 0.0, 1.0, 50)
    assert not result.excludes_zero
    agreeing = seed_question_bootstrap([[1.0] * 50, [1.0] * 50], resamples=2_000)  # seeds agree: no spread at all
    assert (agreeing.difference, agreeing.low, agreeing.high) == (1.0, 1.0, 1.0) and agreeing.excludes_zero


def test_seed_question_bootstrap_of_one_seed_is_the_paired_interval() -> None:
    # The hand-valued case above (B fixes 3 of 10 questions): Binomial(10, 0.3)/10 quantiles, 0 and 0.6.
    a = [False] * 3 + [True] * 4 + [False] * 3
    b = [True] * 3 + [True] * 4 + [False] * 3
    row = [float(y) - float(x) for x, y in zip(a, b, strict=True)]
    result = seed_question_bootstrap([row], resamples=20_000, seed=1)
    assert result.difference == pytest.approx(0.3)
    assert result.low == pytest.approx(0.0) and result.high == pytest.approx(0.6)
    # Three seeds that differ (+0.2, +0.3, +0.4 on 100 questions) widen the interval past the one-seed one.
    rows = [[1.0] * k + [0.0] * (100 - k) for k in (20, 30, 40)]
    pooled = seed_question_bootstrap(rows, resamples=20_000, seed=1)
    one = seed_question_bootstrap(rows[1:2], resamples=20_000, seed=1)
    assert pooled.difference == pytest.approx(0.3) and pooled.high - pooled.low > one.high - one.low
    assert seed_question_bootstrap(rows, seed=4) == seed_question_bootstrap(rows, seed=4)  # deterministic
    with pytest.raises(ValueError, match="equally long"):
        seed_question_bootstrap([[0.0, 1.0], [1.0]])
    with pytest.raises(ValueError, match="non-empty"):
        seed_question_bootstrap([])
