"""Pure metric functions for evaluation: unbiased pass@k, mean@k, majority-vote maj@k, and a paired bootstrap of the
difference between two models on the same questions.

Everything here works on plain lists of booleans and an equivalence matrix, so it can be tested by hand and
recomputed from a per-question output file without a model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k) (Chen et al., 2021)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    # the product form avoids the huge binomials of large n
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def sample_ks(n: int) -> list[int]:
    """The k reported for n samples: powers of two below n, and n itself (16 -> 1, 2, 4, 8, 16)."""
    if n < 1:
        raise ValueError(f"need at least one sample, got {n}")
    return sorted({2**e for e in range(n.bit_length()) if 2**e < n} | {n})


def majority_index(equivalent: Sequence[Sequence[bool]], k: int | None = None) -> int:
    """The majority response among the first k: most equivalents (self included), ties to the lowest index.

    This is the rule of the SeRL majority reward (reference §2.3), applied to the k x k corner of the matrix.
    """
    k = len(equivalent) if k is None else k
    if not 1 <= k <= len(equivalent):
        raise ValueError(f"k must be between 1 and {len(equivalent)}, got {k}")
    counts = [sum(bool(equivalent[i][j]) for j in range(k)) for i in range(k)]
    return counts.index(max(counts))  # index() returns the first maximum: the lowest index wins ties


def majority_indices(equivalent: Sequence[Sequence[bool]], ks: Sequence[int]) -> dict[int, int]:
    """majority_index for each k in ks, sharing one equivalence matrix."""
    return {k: majority_index(equivalent, k) for k in ks}


def mean(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("mean of no values")
    return sum(values) / len(values)


def sampled_metrics(correct: Sequence[Sequence[bool]], majority: Sequence[dict[int, int]] | None = None) -> dict:
    """Dataset metrics from per-question correctness lists (all of the same length n).

    Returns pass@1 (greedy accuracy when n = 1, else the unbiased estimate, which equals mean@n), and for n > 1
    mean@n, pass@k for every k in sample_ks(n), and maj@k where `majority` gives each question's majority index per k.
    """
    if not correct:
        raise ValueError("no questions to score")
    n = len(correct[0])
    if n < 1 or any(len(row) != n for row in correct):
        raise ValueError("every question needs the same, non-zero number of responses")
    counts = [sum(map(bool, row)) for row in correct]
    metrics: dict[str, float | int] = {"questions": len(correct), "samples": n}
    metrics["pass@1"] = mean([c / n for c in counts])
    if n == 1:
        return metrics
    metrics[f"mean@{n}"] = metrics["pass@1"]
    for k in sample_ks(n):
        metrics[f"pass@{k}"] = mean([pass_at_k(n, c, k) for c in counts])
    if majority is not None:
        if len(majority) != len(correct):
            raise ValueError("one majority entry per question is needed")
        for k in sample_ks(n):
            metrics[f"maj@{k}"] = mean(
                [float(bool(row[votes[k]])) for row, votes in zip(correct, majority, strict=True)]
            )
    return metrics


def majority_accuracy_by_votes(
    correct: Sequence[Sequence[bool]], winners: Sequence[int], votes: Sequence[int]
) -> dict[str, dict[str, float | int]]:
    """How often the majority answer is right, by how many of the n responses voted for it (TTRL's label accuracy,
    split by the majority ratio that SeRL's difficulty filter reads). Keys are vote counts as strings (JSON keys),
    ascending: {"3": {"questions": 41, "majority_correct": 0.34}, ...}. Where this rises steeply with the votes, a
    narrower difficulty band keeps fewer but more often right majorities."""
    if not len(correct) == len(winners) == len(votes):
        raise ValueError("need one winner and one vote count per question")
    tally: dict[int, list[int]] = {}
    for row, winner, count in zip(correct, winners, votes, strict=True):
        if not 0 <= winner < len(row) or not 0 <= count <= len(row):
            raise ValueError(f"winner {winner} or vote count {count} outside a group of {len(row)}")
        right_and_total = tally.setdefault(count, [0, 0])
        right_and_total[0] += bool(row[winner])
        right_and_total[1] += 1
    return {
        str(count): {"questions": total, "majority_correct": right / total}
        for count, (right, total) in sorted(tally.items())
    }


@dataclass(frozen=True)
class PairedDifference:
    """Accuracy of B minus accuracy of A on the same questions, with a paired-bootstrap confidence interval."""

    difference: float
    low: float
    high: float
    questions: int

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0.0 or self.high < 0.0


def paired_bootstrap(
    a: Sequence[bool | float], b: Sequence[bool | float], *, resamples: int = 10_000, level: float = 0.95, seed: int = 0
) -> PairedDifference:
    """mean(b) - mean(a) and its percentile bootstrap interval, resampling questions (each keeps its pair).

    Pairing matters: two models that differ on few questions have a narrow interval even when both are far from
    certain on each. Deterministic for a given seed.
    """
    if len(a) != len(b) or not a:
        raise ValueError(f"need two equally long, non-empty score lists, got {len(a)} and {len(b)}")
    if not 0.0 < level < 1.0 or resamples < 1:
        raise ValueError("level must lie in (0, 1) and resamples be at least 1")
    diffs = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(diffs), size=(resamples, len(diffs)))
    means = diffs[picks].mean(axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return PairedDifference(float(diffs.mean()), float(low), float(high), len(diffs))


def seed_question_bootstrap(
    differences: Sequence[Sequence[float]], *, resamples: int = 10_000, level: float = 0.95, seed: int = 0
) -> PairedDifference:
    """The mean of per-question differences pooled over training seeds (one row per seed, the same questions in
    every row), with a percentile interval that resamples both: each resample draws the seeds with replacement and,
    independently, the questions with replacement, and averages the crossed cells.

    Resampling questions alone says how sure one run is about these weights; when runs that differ only in the
    training seed land far apart, that interval is too narrow for a claim about the method. With one row this is
    `paired_bootstrap`'s interval. Deterministic for a given seed.
    """
    rows = [list(row) for row in differences]
    if not rows or not rows[0] or any(len(row) != len(rows[0]) for row in rows):
        raise ValueError(f"need one non-empty row per seed, all equally long, got lengths {[len(r) for r in rows]}")
    if not 0.0 < level < 1.0 or resamples < 1:
        raise ValueError("level must lie in (0, 1) and resamples be at least 1")
    table = np.asarray(rows, dtype=np.float64)
    n_seeds, n_questions = table.shape
    rng = np.random.default_rng(seed)
    # Drawing with replacement, as counts: resample r weighs seed s by seed_counts[r, s], question q likewise.
    seed_counts = rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=resamples)
    question_counts = rng.multinomial(n_questions, np.full(n_questions, 1.0 / n_questions), size=resamples)
    means = ((seed_counts @ table) * question_counts).sum(axis=1) / (n_seeds * n_questions)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return PairedDifference(float(table.mean()), float(low), float(high), n_questions)
