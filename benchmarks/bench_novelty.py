"""Novelty filter: rouge_score (the reference's scorer, one process, sequential) against serl's NoveltyIndex.

Pool: 10,000 problems from ../shared/data/math. Candidates: 2,000, half unseen problems and half edited copies
of pool problems (word drops, repeats and swaps at random rates), shuffled, so that many land on each side of
the threshold. Both sides run the reference's loop: each candidate is compared with the pool plus the
candidates accepted before it, and rejected when the max ROUGE-L F exceeds 0.7.

rouge_score is far too slow for all 2,000 (hours), so it scores the first --reference-candidates candidates
and its time is extrapolated linearly to all of them (an underestimate: later candidates also face the
accepted ones). Our index runs all 2,000; its decisions and scores on the measured prefix must equal
rouge_score's.

    .venv/bin/python benchmarks/bench_novelty.py [--reference-candidates 20]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from rouge_score import rouge_scorer

from serl.selfinstruct.novelty import NoveltyIndex

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "math"
THRESHOLD = 0.7


def load_problems() -> list[str]:
    seen, problems = set(), []
    for path in sorted(DATA.glob("*.jsonl")):
        for line in path.open(encoding="utf-8"):
            row = json.loads(line)
            text = (row.get("question") or row.get("problem") or "").strip()
            if text and text not in seen:
                seen.add(text)
                problems.append(text)
    return problems


def edited_copy(text: str, rng: random.Random) -> str:
    """Drop, repeat or swap words at a random rate in [0, 0.6]."""
    rate, words = rng.uniform(0.0, 0.6), text.split()
    edited = []
    for word in words:
        roll = rng.random()
        if roll < rate / 3:
            continue
        edited += [word, word] if roll < 2 * rate / 3 else [word]
    if len(edited) > 3 and rng.random() < rate:
        i = rng.randrange(len(edited) - 1)
        edited[i], edited[i + 1] = edited[i + 1], edited[i]
    return " ".join(edited)


def build(pool_size: int, num_candidates: int, seed: int) -> tuple[list[str], list[str]]:
    problems = load_problems()
    if len(problems) < pool_size + num_candidates // 2:
        raise SystemExit(f"only {len(problems)} distinct problems under {DATA}")
    random.Random(seed).shuffle(problems)
    pool, unseen = problems[:pool_size], problems[pool_size:]
    rng = random.Random(seed + 1)
    candidates = unseen[: num_candidates // 2]
    candidates += [edited_copy(rng.choice(pool), rng) for _ in range(num_candidates - len(candidates))]
    rng.shuffle(candidates)
    return pool, candidates


def reference_filter(pool: list[str], candidates: list[str]) -> list[tuple[bool, float]]:
    """The reference: one RougeScorer, every candidate against seeds + accepted so far."""
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    compared, results = list(pool), []
    for candidate in candidates:
        best = max(scorer.score(candidate, other)["rougeL"].fmeasure for other in compared)
        results.append((best <= THRESHOLD, best))
        if best <= THRESHOLD:
            compared.append(candidate)
    return results


def fast_filter(pool: list[str], candidates: list[str], batch: int) -> tuple[list[tuple[bool, float]], float]:
    """Our index, fed BATCH candidates per call (screen_responses feeds it one generation round at a time)."""
    started = time.perf_counter()
    index = NoveltyIndex(THRESHOLD)
    index.add_many((f"pool:{i}", text) for i, text in enumerate(pool))
    build_s = time.perf_counter() - started
    results = []
    for first in range(0, len(candidates), batch):
        chunk = [(f"candidate:{i}", candidates[i]) for i in range(first, min(first + batch, len(candidates)))]
        results += [(r.novel, r.score) for r in index.check_and_add_many(chunk)]
    return results, build_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=int, default=10_000)
    parser.add_argument("--candidates", type=int, default=2_000)
    parser.add_argument("--reference-candidates", type=int, default=20, help="candidates rouge_score scores")
    parser.add_argument("--batch", type=int, default=64, help="candidates per call (~ one round)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    pool, candidates = build(args.pool, args.candidates, args.seed)
    measured = min(args.reference_candidates, len(candidates))

    started = time.perf_counter()
    fast, build_s = fast_filter(pool, candidates, args.batch)
    fast_s = time.perf_counter() - started

    started = time.perf_counter()
    reference = reference_filter(pool, candidates[:measured])
    reference_measured_s = time.perf_counter() - started
    reference_s = reference_measured_s * len(candidates) / measured

    # Decisions must agree everywhere measured; a rejection's score is the exact max, so it must agree too.
    pairs = zip(fast[:measured], reference, strict=True)
    identical = all(ours[0] == ref[0] and (ours[0] or ours[1] == ref[1]) for ours, ref in pairs)
    rejected = sum(not novel for novel, _ in fast)
    print(f"pool {len(pool)}, candidates {len(candidates)}: {rejected} rejected by our filter")
    print(f"ours: {fast_s:.2f} s for all, {args.batch} per call (index build {build_s:.2f} s)")
    print(
        f"rouge_score: {reference_measured_s:.1f} s for the first {measured} candidates "
        f"({sum(not r[0] for r in reference)} rejected), extrapolated to {reference_s:.0f} s for all"
    )
    print(
        json.dumps(
            {
                "candidates": len(candidates),
                "pool": len(pool),
                "reference_s": round(reference_s, 2),
                "fast_s": round(fast_s, 3),
                "speedup": round(reference_s / fast_s, 1),
                "identical": identical,
                "reference_extrapolated_from": measured,
                "reference_measured_s": round(reference_measured_s, 2),
                "fast_index_build_s": round(build_s, 3),
                "fast_batch": args.batch,
                "rejected": rejected,
            }
        )
    )


if __name__ == "__main__":
    main()
