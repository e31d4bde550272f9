"""Majority vote: the reference's pairwise loop against the fast path, on the same groups.

Each group holds 16 responses to one imaginary problem. A random share (20-90 %) gives the group's answer, in one of
its notations (\\frac{1}{2}, \\dfrac{1}{2}, 1/2; 12, 12.0; boxed, "final answer is", "Answer:", bare LaTeX); most
others give some other answer; a few give none. Answers are MATH-500's gold answers (62 % integers, then fractions,
surds, tuples, intervals, polynomials, complex numbers, text) when the shared data is there, else a synthetic mix.

Each method runs in a fresh interpreter, so neither inherits the other's sympy and math-verify caches.

    .venv/bin/python benchmarks/bench_majority.py --groups 500

Prints a line per timing, then one JSON line:
{"groups", "reference_s", "fast_s", "speedup", "identical", "fast_cold_s", "speedup_cold", "extract_only_s"}.
`fast_cold_s` clears the cross-group memo before every group; `extract_only_s` is the time to extract the 16 answers
of every group once, a floor for any exact method.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import re
import time
from pathlib import Path

from serl.reward import GroupVote, clear_equivalence_cache, majority_vote
from serl.reward.extract import extract_raw

MATH_500 = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "math" / "math_500.jsonl"
TEMPLATES = [
    "Let me work through this. First, 3 + 4 = 7, and then we simplify. So the answer is \\boxed{{{a}}}.",
    "We have the equation, so after simplifying we find the final answer is ${a}$. I hope it is correct.",
    "Step 1: set up the problem.\nStep 2: solve it.\nTherefore, the answer is $ {a} $.",
    "Answer: {a}",
    "Combining the two cases gives \\[ {a} \\]",
    "Thus x = {a}.",
    "The final answer is: $\\boxed{{{a}}}$",
]
NO_ANSWER = [
    "I am not sure how to approach this problem, let me think again about the",
    "This problem requires more information.",
    "",
]


def _synthetic_answer(rng: random.Random) -> str:
    kind = rng.randrange(6)
    a, b = rng.randint(1, 30), rng.choice([2, 3, 5, 7, 9, 11])
    return [
        str(rng.randint(-50, 500)),
        f"\\frac{{{a}}}{{{b}}}",
        f"{a}\\sqrt{{{b}}}",
        f"{a}\\pi",
        f"({a}, {b})",
        f"x^2 + {a}x + {b}",
    ][kind]


def answer_pool(rng: random.Random) -> list[str]:
    if MATH_500.exists():
        golds = [json.loads(line)["answer"].strip() for line in MATH_500.read_text().splitlines()]
        return [g[len("\\boxed{") : -1] if g.startswith("\\boxed{") and g.endswith("}") else g for g in golds]
    return [_synthetic_answer(rng) for _ in range(500)]


def notations(answer: str) -> list[str]:
    """The answer as written most often (first), then other ways to write it."""
    if re.fullmatch(r"-?\d+", answer):
        return [answer, answer, f"{answer}.0"]
    fraction = re.fullmatch(r"(-?)\\[dt]?frac\{(\d+)\}\{(\d+)\}", answer)
    if fraction:
        sign, p, q = fraction.groups()
        return [answer, f"{sign}\\dfrac{{{p}}}{{{q}}}", f"{sign}{p}/{q}"]
    return [answer]


def build_groups(num_groups: int, group_size: int, seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    pool = answer_pool(rng)
    groups = []
    for _ in range(num_groups):
        right = notations(rng.choice(pool))
        share = rng.uniform(0.2, 0.9)  # how much of the group agrees: spans the difficulty filter's range
        group = []
        for _ in range(group_size):
            roll = rng.random()
            if roll < share:
                answer = right[0] if rng.random() < 0.7 else rng.choice(right)
            elif roll < share + (1 - share) * 0.85:
                answer = rng.choice(notations(rng.choice(pool)))
            else:
                group.append(rng.choice(NO_ANSWER))
                continue
            group.append(rng.choice(TEMPLATES).format(a=answer))
        groups.append(group)
    return groups


def run(job: tuple[str, list[list[str]]]) -> tuple[float, list[GroupVote]]:
    """One timing in this (fresh) process."""
    how, groups = job
    started = time.perf_counter()
    if how == "extract":
        for group in groups:
            for text in group:
                extract_raw(text)
        votes: list[GroupVote] = []
    elif how == "fast, cold memo":
        votes = []
        for group in groups:
            clear_equivalence_cache()
            votes.append(majority_vote(group))
    else:
        votes = [majority_vote(group, method=how) for group in groups]  # type: ignore[arg-type]
    return time.perf_counter() - started, votes


def timed(how: str, groups: list[list[str]]) -> tuple[list[GroupVote], float]:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        seconds, votes = pool.apply(run, ((how, groups),))
    print(f"{how:>16}: {seconds:8.2f} s", flush=True)
    return votes, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=500)
    parser.add_argument("--group-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    groups = build_groups(args.groups, args.group_size, args.seed)
    fast, fast_s = timed("fast", groups)
    fast_cold, fast_cold_s = timed("fast, cold memo", groups)
    reference, reference_s = timed("reference", groups)
    _, extract_s = timed("extract", groups)
    timed_out = sum(vote.timed_out for vote in reference + fast)
    ratios = [vote.majority_ratio for vote in reference]
    distinct = [len(set(vote.answers)) for vote in reference]
    print(
        f"groups with a time-out: {timed_out}; mean majority ratio {sum(ratios) / len(ratios):.3f}; "
        f"mean distinct answers per group {sum(distinct) / len(distinct):.1f}"
    )
    result = {
        "groups": args.groups,
        "reference_s": round(reference_s, 3),
        "fast_s": round(fast_s, 3),
        "speedup": round(reference_s / fast_s, 2),
        "identical": fast == reference and fast_cold == reference,
        "fast_cold_s": round(fast_cold_s, 3),
        "speedup_cold": round(reference_s / fast_cold_s, 2),
        "extract_only_s": round(extract_s, 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
