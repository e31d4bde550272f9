"""Where a self-play gain comes from: what changed in the held-out answers between an arm's first and last evaluation,
and what the arm trained on. Reads the run directories that `bench_selfplay.py` wrote; trains and samples nothing.

    .venv/bin/python benchmarks/selfplay_anatomy.py runs/bench-l1 [--arms serl,gt,maj,shuffle] [--pattern calculator]

Per arm and held-out set, at the first and the last evaluated step: pass@1, responses with no extractable answer,
responses matching --pattern (a case-insensitive regex; the default counts the base model's "you would need a
calculator" evasion), responses cut at the token limit and the mean response length in characters. From the
instruction log (serl-mode arms): generated candidates, the share dropped as contaminated (ROUGE-L F above the
threshold against a held-out question), and the problems trained on: how many match --template (a regex; the default
is the bare "What is a op b?" form of the embedded arithmetic sets) and a few examples.

How right the vote was (arms with a majority vote: serl, maj, shuffle): a bare "What is a op b?" problem has an answer
that arithmetic gives, self-written or not, so the rollout log's groups on such problems are graded against it, as
TTRL's label and reward accuracy are on labelled sets: how often the majority answer is right (all groups, the groups
inside the run's difficulty band, and by the majority's votes), how often a response is right, and how often a
response's vote reward equals its true reward inside the band. The band's groups are also split by whether the
problem lies in the seeds' range: its operation occurs among the run's bare-arithmetic seed problems (data.seed_path
in its config.yaml) and its operands and result lie within the seeds' bounds for that operation (whole, where every
seed result is). The same split counts the problems an arm trained on.

    .venv/bin/python benchmarks/selfplay_anatomy.py --problems generated.jsonl [--seed-path embedded:arithmetic-l1]

counts instead the problems of `serl generate` output files that lie in the range of the given seeds.

Prints one table per arm, then one JSON line with every figure.
"""

from __future__ import annotations

import argparse
import json
import operator
import re
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import yaml

from serl.data import DataError, load_problems
from serl.reward.ground_truth import gt_rewards
from serl.selfinstruct.filters import states_a_result

DEFAULT_ARMS = "serl,gt,maj,shuffle"
OPERATIONS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}
BARE_ARITHMETIC = re.compile(r"^\s*What is (-?\d+(?:\.\d+)?) ?([-+*/×÷x]) ?(-?\d+(?:\.\d+)?)\s*\?\s*$")
CANONICAL_OPERATOR = {"x": "*", "×": "*", "÷": "/"}


@dataclass(frozen=True)
class OperatorRange:
    limits: tuple[tuple[Fraction, Fraction], ...]  # (low, high) of a, b and the result
    whole: bool  # every seed result is a whole number


SeedRange = dict[str, OperatorRange]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file; a torn last line (a killed writer) is skipped, any other bad line names it."""
    lines = path.read_text(encoding="utf-8").splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            if number == len(lines):
                break
            raise SystemExit(f"{path}:{number}: not valid JSON ({err.msg})") from err
    return records


def answer_anatomy(records: list[dict[str, Any]], pattern: re.Pattern[str]) -> dict[str, Any]:
    """Figures over the first response of each question in one evaluation file (greedy pass@1 has one)."""
    first = [(r["responses"][0], r["extracted"][0], r["correct"][0], r["finish_reasons"][0]) for r in records]
    if not first:
        return {"questions": 0}
    return {
        "questions": len(first),
        "pass@1": round(sum(bool(c) for _, _, c, _ in first) / len(first), 4),
        "no_answer": sum(not e for _, e, _, _ in first),
        "pattern": sum(bool(pattern.search(text)) for text, _, _, _ in first),
        "cut_at_limit": sum(reason == "length" for _, _, _, reason in first),
        "mean_chars": round(sum(len(text) for text, _, _, _ in first) / len(first), 1),
    }


def eval_files(run_dir: Path) -> dict[str, dict[int, Path]]:
    """Held-out set name -> step -> its per-question file (eval/step_NNNNNN_NAME.jsonl)."""
    found: dict[str, dict[int, Path]] = {}
    for path in sorted((run_dir / "eval").glob("step_*_*.jsonl")):
        step_text, name = path.stem.removeprefix("step_").split("_", 1)
        found.setdefault(name, {})[int(step_text)] = path
    return found


def instruction_anatomy(
    run_dir: Path, template: re.Pattern[str], examples: int, seeds: SeedRange | None = None
) -> dict[str, Any] | None:
    """Candidates, contamination and trained problems from instructions/iter_*.jsonl; None for a run without them.
    SEEDS: also count the trained problems in the seeds' range."""
    paths = sorted((run_dir / "instructions").glob("iter_*.jsonl"))
    if not paths:
        return None
    records = [r for path in paths for r in read_jsonl(path)]
    texts = {(r.get("iteration"), r["id"]): r["text"] for r in records if "text" in r}
    fates = Counter(r["fate"] for r in records if "text" in r)  # a candidate's first fate: the filters' verdict
    candidates = sum(fates.values())
    trained = [texts.get((r.get("iteration"), r["id"]), "?") for r in records if r["fate"] == "trained"]
    contaminated = fates.get("rejected:contamination", 0)
    return {
        "candidates": candidates,
        "contaminated": contaminated,
        "contaminated_share": round(contaminated / candidates, 4) if candidates else 0.0,
        "trained": len(trained),
        "trained_on_template": sum(bool(template.match(text)) for text in trained),
        "trained_in_seed_range": None if seeds is None else sum(in_seed_range(text, seeds) for text in trained),
        "trained_stating_result": sum(states_a_result(text) for text in trained),  # "What is 27 * 2 = 54?"
        "trained_examples": trained[:examples],
    }


def bare_arithmetic(problem: str) -> tuple[Fraction, str, Fraction, Fraction] | None:
    """(a, operator, b, a op b) of a bare "What is a op b?" problem; None for any other problem or a division by 0."""
    match = BARE_ARITHMETIC.match(problem)
    if match is None:
        return None
    a, op, b = Fraction(match[1]), CANONICAL_OPERATOR.get(match[2], match[2]), Fraction(match[3])
    if op == "/" and b == 0:
        return None
    return a, op, b, OPERATIONS[op](a, b)


def seed_range(problems: list[str]) -> SeedRange:
    """Per operator of the bare-arithmetic seed problems, the bounds of a, b and the result, and whether every result
    is whole."""
    values: dict[str, list[tuple[Fraction, Fraction, Fraction]]] = {}
    for problem in problems:
        if (parsed := bare_arithmetic(problem)) is not None:
            a, op, b, result = parsed
            values.setdefault(op, []).append((a, b, result))
    bounds: SeedRange = {}
    for op, rows in values.items():
        columns = list(zip(*rows, strict=True))
        bounds[op] = OperatorRange(
            limits=tuple((min(c), max(c)) for c in columns),
            whole=all(result.denominator == 1 for result in columns[2]),
        )
    return bounds


def in_seed_range(problem: str, bounds: SeedRange) -> bool:
    if (parsed := bare_arithmetic(problem)) is None or parsed[1] not in bounds:
        return False
    a, op, b, result = parsed
    seeds = bounds[op]
    inside = all(low <= v <= high for v, (low, high) in zip((a, b, result), seeds.limits, strict=True))
    return inside and (not seeds.whole or result.denominator == 1)


def run_config(run_dir: Path) -> dict[str, Any]:
    """The run's config.yaml as a dict; empty when the run has none."""
    config_path = run_dir / "config.yaml"
    return (yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}) if config_path.is_file() else {}


def run_seed_range(run_dir: Path) -> SeedRange | None:
    """The seeds' range of the run's data.seed_path (config.yaml); None when it cannot be read or has no bare sums."""
    data = run_config(run_dir).get("data", {})
    if not data:
        return None
    try:
        seeds = load_problems(data.get("seed_path", ""), data.get("input_key", "problem"))
    except (DataError, OSError):
        return None
    return seed_range([seed.prompt for seed in seeds]) or None


def arithmetic_label(problem: str) -> str | None:
    """The answer of a bare "What is a op b?" problem as a label ("-8", "\\frac{55}{2}"); None for any other problem."""
    if (parsed := bare_arithmetic(problem)) is None:
        return None
    value = parsed[3]
    if value.denominator == 1:
        return str(value.numerator)
    sign = "-" if value < 0 else ""
    return f"{sign}\\frac{{{abs(value.numerator)}}}{{{value.denominator}}}"


def vote_truth(run_dir: Path, seeds: SeedRange | None = None, num_workers: int = 0) -> dict[str, Any] | None:
    """The vote graded against arithmetic on the rollout log's bare-arithmetic groups; None when there are none.
    SEEDS: also split the band's groups by whether their problem lies in the seeds' range."""
    records = [r for path in sorted((run_dir / "rollouts").glob("step_*.jsonl")) for r in read_jsonl(path)]
    groups = [
        (r, label)
        for r in records
        if r.get("majority_answer") is not None and (label := arithmetic_label(r["problem"]))
    ]
    if not groups:
        return None
    reward_config = run_config(run_dir).get("reward", {})
    low, high = reward_config.get("difficulty_low", 0.2), reward_config.get("difficulty_high", 0.8)
    texts = [r["majority_answer"] for r, _ in groups] + [text for r, _ in groups for text in r["responses"]]
    labels = [label for _, label in groups] + [label for r, label in groups for _ in r["responses"]]
    truth = gt_rewards(texts, labels, num_workers=num_workers)
    majority_right, response_right = truth[: len(groups)], iter(truth[len(groups) :])
    by_votes: dict[int, list[int]] = {}
    band_right = band_groups = agree = band_responses = 0
    by_range = {side: {"groups": 0, "majority_right": 0} for side in ("in", "out")}
    right = total = 0
    for (record, _), majority_ok in zip(groups, majority_right, strict=True):
        verdicts = [next(response_right) for _ in record["responses"]]
        right, total = right + sum(v > 0 for v in verdicts), total + len(verdicts)
        counts = by_votes.setdefault(round(record["majority_ratio"] * len(verdicts)), [0, 0])
        counts[0], counts[1] = counts[0] + 1, counts[1] + int(majority_ok > 0)
        if low <= record["majority_ratio"] <= high:
            band_groups, band_right = band_groups + 1, band_right + int(majority_ok > 0)
            if seeds is not None:
                side = by_range["in" if in_seed_range(record["problem"], seeds) else "out"]
                side["groups"] += 1
                side["majority_right"] += int(majority_ok > 0)
            band_responses += len(verdicts)
            agree += sum((w > 0) == (v > 0) for w, v in zip(record["rewards"], verdicts, strict=True))
    return {
        "groups": len(groups),
        "label_accuracy": round(sum(v > 0 for v in majority_right) / len(groups), 4),
        "band": [low, high],
        "band_groups": band_groups,
        "band_label_accuracy": round(band_right / band_groups, 4) if band_groups else None,
        "band_reward_accuracy": round(agree / band_responses, 4) if band_responses else None,
        "response_accuracy": round(right / total, 4) if total else None,
        "by_votes": {str(votes): {"groups": n, "majority_right": ok} for votes, (n, ok) in sorted(by_votes.items())},
        "band_by_seed_range": None if seeds is None else by_range,
    }


def count_in_range(paths: list[Path], seed_path: str) -> None:
    """Print, per `serl generate` output file, how many of its problems lie in the range of the seeds at SEED_PATH."""
    try:  # the project's reader: a missing file, a bad line or a record without 'problem' is one line naming it
        seeds = seed_range([seed.prompt for seed in load_problems(seed_path)])
        files = {path: [problem.prompt for problem in load_problems(path, "problem")] for path in paths}
    except DataError as err:
        raise SystemExit(str(err)) from None
    counts = {}
    for path, problems in files.items():
        counts[str(path)] = {"problems": len(problems), "in_seed_range": sum(in_seed_range(p, seeds) for p in problems)}
        print(f"{path}: {counts[str(path)]['in_seed_range']} of {len(problems)} in the range of {seed_path}")
    print(json.dumps({"seed_path": seed_path, "files": counts}))


def percent(share: float | None) -> str:
    return "n/a" if share is None else f"{share:.0%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bench_dir", type=Path, nargs="?", help="the --out directory of bench_selfplay.py")
    parser.add_argument("--arms", default=DEFAULT_ARMS, help="comma-separated arm directories to read")
    parser.add_argument("--pattern", default="calculator", help="a case-insensitive regex to count in the responses")
    parser.add_argument(
        "--template", default=r"^What is -?[\d.]+ ?[-+*/÷×–] ?-?[\d.]+\?$", help="a regex for held-out-shaped problems"
    )
    parser.add_argument("--examples", type=int, default=5, help="trained problems to show per arm")
    parser.add_argument(
        "--problems", type=Path, nargs="+", help="instead: count the problems of these `serl generate` files in range"
    )
    parser.add_argument("--seed-path", default="embedded:arithmetic-l1", help="the seeds whose range --problems uses")
    args = parser.parse_args()
    if args.problems:
        count_in_range(args.problems, args.seed_path)
        return
    if args.bench_dir is None:
        parser.error("give a bench directory, or --problems")
    pattern = re.compile(args.pattern, re.IGNORECASE)

    summary: dict[str, Any] = {"bench_dir": str(args.bench_dir), "pattern": args.pattern, "arms": {}}
    for arm in [a.strip() for a in args.arms.split(",") if a.strip()]:
        run_dir = args.bench_dir / arm
        if not run_dir.is_dir():
            print(f"{arm}: no run directory {run_dir}; skipped")
            continue
        figures: dict[str, Any] = {}
        for name, steps in eval_files(run_dir).items():
            first, last = min(steps), max(steps)
            figures[name] = {str(s): answer_anatomy(read_jsonl(steps[s]), pattern) for s in sorted({first, last})}
        seeds = run_seed_range(run_dir)
        instructions = instruction_anatomy(run_dir, re.compile(args.template), args.examples, seeds)
        if instructions is not None:
            figures["instructions"] = instructions
        truth = vote_truth(run_dir, seeds)
        if truth is not None:
            figures["vote_truth"] = truth
        summary["arms"][arm] = figures

        print(f"\n{arm}")
        print(f"  {'set':28} {'step':>5} {'pass@1':>7} {'no answer':>9} {'pattern':>7} {'cut':>5} {'chars':>7}")
        for name, by_step in figures.items():
            if name in ("instructions", "vote_truth"):
                continue
            for step, a in by_step.items():
                if a["questions"]:
                    print(
                        f"  {name:28} {step:>5} {a['pass@1']:7.3f} {a['no_answer']:9d} {a['pattern']:7d} "
                        f"{a['cut_at_limit']:5d} {a['mean_chars']:7.1f}"
                    )
        if instructions is not None:
            print(
                f"  instructions: {instructions['candidates']} candidates, {instructions['contaminated']} "
                f"({instructions['contaminated_share']:.0%}) dropped as contaminated, "
                f"{instructions['trained']} trained, {instructions['trained_on_template']} of them on the template"
                + (
                    ""
                    if instructions["trained_in_seed_range"] is None
                    else f", {instructions['trained_in_seed_range']} in the seeds' range"
                )
                + f", {instructions['trained_stating_result']} stating their own result"
            )
            for text in instructions["trained_examples"]:
                print(f"    trained: {text[:100]!r}")
        if truth is not None:
            votes = ", ".join(f"{v}: {c['majority_right']}/{c['groups']}" for v, c in truth["by_votes"].items())
            print(
                f"  vote against arithmetic: {truth['groups']} bare-arithmetic groups, majority right "
                f"{percent(truth['label_accuracy'])}; in the band {truth['band']}: {truth['band_groups']} groups, "
                f"majority right {percent(truth['band_label_accuracy'])}, reward = true reward for "
                f"{percent(truth['band_reward_accuracy'])} of responses; responses right "
                f"{percent(truth['response_accuracy'])}"
            )
            print(f"    majority right by its votes: {votes}")
            if truth["band_by_seed_range"] is not None:
                sides = truth["band_by_seed_range"]
                print(
                    "    in the band, majority right: "
                    + "; ".join(
                        f"{label} {c['majority_right']}/{c['groups']}"
                        for label, c in (("in the seeds' range", sides["in"]), ("outside", sides["out"]))
                    )
                )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
