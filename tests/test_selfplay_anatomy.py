"""benchmarks/selfplay_anatomy.py on a bench directory written by hand: the counts it prints are the ones computed here
from the files, and a torn last line (a killed writer) does not stop it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def write_jsonl(path: Path, records: list[dict], torn_tail: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in records)
    path.write_text(text + ('{"id": 9, "fa' if torn_tail else ""), encoding="utf-8")


def write_instruction_log(
    run: Path, fates: list[tuple[str, str]], trained: list[int], kept: tuple[int, ...] = (), torn_tail: bool = False
) -> None:
    """instructions/iter_0001.jsonl: one record per (text, first fate), id = position; then the later 'kept' and
    'trained' records, which carry no text."""
    records = [{"id": i, "iteration": 1, "text": text, "fate": fate} for i, (text, fate) in enumerate(fates)]
    records += [{"id": i, "iteration": 1, "fate": "kept", "reward_mean": 0.5} for i in kept]
    records += [{"id": i, "iteration": 1, "fate": "trained"} for i in trained]
    write_jsonl(run / "instructions" / "iter_0001.jsonl", records, torn_tail=torn_tail)


def anatomy(*args: str) -> tuple[str, dict]:
    """Run the script; its printed text and its final JSON line."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "selfplay_anatomy.py"), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return proc.stdout, json.loads(proc.stdout.strip().splitlines()[-1])


def answer(text: str, extracted: str | None, correct: bool, reason: str = "eos") -> dict:
    return {"responses": [text], "extracted": [extracted], "correct": [correct], "finish_reasons": [reason]}


def test_counts_answers_and_instructions(tmp_path: Path) -> None:
    run = tmp_path / "bench" / "serl"
    write_jsonl(
        run / "eval" / "step_000000_arith.jsonl",
        [
            answer("You would need a Calculator.", None, False),  # no answer, pattern
            answer("6", "6", True),
            answer("x" * 20, "2", False, "length"),
            answer("calculator says 4", "4", True),  # pattern, answered
        ],
    )
    write_jsonl(run / "eval" / "step_000004_arith.jsonl", [answer("abc", "1", False)])
    write_jsonl(run / "eval" / "step_000008_arith.jsonl", [answer("77", "77", True), answer("8", "8", True)])
    fates = [("What is 3 + 4?", "rejected:contamination"), ("What is 2.5 * 4?", "accepted")]
    fates += [("Name a prime, given 2 + 3 = 5.", "accepted"), ("???", "rejected:novelty")]
    write_instruction_log(run, fates, trained=[1, 2], kept=(1,), torn_tail=True)
    stdout, summary = anatomy(str(tmp_path / "bench"), "--arms", "serl,gt")
    assert "gt: no run directory" in stdout
    figures = summary["arms"]["serl"]
    first, last = figures["arith"]["0"], figures["arith"]["8"]
    assert set(figures["arith"]) == {"0", "8"}  # the first and the last step only
    assert first == {
        "questions": 4,
        "pass@1": 0.5,
        "no_answer": 1,
        "pattern": 2,
        "cut_at_limit": 1,
        "mean_chars": (28 + 1 + 20 + 17) / 4,
    }
    assert last["pass@1"] == 1.0 and last["mean_chars"] == 1.5
    instructions = figures["instructions"]
    assert instructions["candidates"] == 4 and instructions["contaminated"] == 1
    assert instructions["contaminated_share"] == 0.25
    assert instructions["trained"] == 2 and instructions["trained_on_template"] == 1
    assert instructions["trained_stating_result"] == 1
    assert instructions["trained_examples"] == ["What is 2.5 * 4?", "Name a prime, given 2 + 3 = 5."]


def group(problem: str, responses: list[str], rewards: list[float], majority: str | None) -> dict:
    ratio = None if majority is None else sum(rewards) / len(rewards)
    return {
        "step": 1,
        "problem": problem,
        "label": None,
        "responses": responses,
        "rewards": rewards,
        "majority_ratio": ratio,
        "majority_answer": majority,
    }


def test_grades_the_vote_against_arithmetic(tmp_path: Path) -> None:
    run = tmp_path / "bench" / "serl"
    write_jsonl(
        run / "rollouts" / "step_000001.jsonl",
        [
            group("What is 3 + 4?", ["3 + 4 = 7", "7", "8", "7."], [1, 1, 0, 1], "7"),  # right, in the band
            group("What is 10 / 4?", ["2.5", "2", "2", "$\\frac{5}{2}$"], [0, 1, 1, 0], "2"),  # wrong, in the band
            group("What is 5 - 9?", ["-4", "It is -4.", "-4", "-4"], [1, 1, 1, 1], "-4"),  # right, 4/4: outside
            group("Name a prime.", ["7", "7", "2", "3"], [1, 1, 0, 0], "7"),  # no arithmetic truth: not graded
            group("What is 2 + 2?", ["4", "5", "4", "4"], [1, 0, 1, 1], None),  # gt arm: no vote to grade
        ],
        torn_tail=True,
    )
    truth = anatomy(str(tmp_path / "bench"), "--arms", "serl")[1]["arms"]["serl"]["vote_truth"]
    assert truth["groups"] == 3 and truth["label_accuracy"] == round(2 / 3, 4)
    assert truth["band"] == [0.2, 0.8] and truth["band_groups"] == 2 and truth["band_label_accuracy"] == 0.5
    assert truth["band_reward_accuracy"] == 0.5  # 4 of 4 agree on 3 + 4, none of 4 on 10 / 4
    assert truth["response_accuracy"] == 0.75  # 3 + 2 + 4 of 12
    assert truth["by_votes"] == {
        "2": {"groups": 1, "majority_right": 0},
        "3": {"groups": 1, "majority_right": 1},
        "4": {"groups": 1, "majority_right": 1},
    }


def test_splits_the_vote_and_the_trained_problems_by_the_seeds_range(tmp_path: Path) -> None:
    # seeds: + with a in [3, 20], b in [4, 30], sums in [7, 50]; / with a in [12, 30], b in [4, 6], whole quotients 3..5
    seeds = tmp_path / "seeds.jsonl"
    write_jsonl(
        seeds, [{"problem": p} for p in ("What is 3 + 4?", "What is 20 + 30?", "What is 12 / 4?", "What is 30 / 6?")]
    )
    run = tmp_path / "bench" / "serl"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(f"data:\n  seed_path: {seeds}\n  input_key: problem\n", encoding="utf-8")
    write_jsonl(
        run / "rollouts" / "step_000001.jsonl",
        [
            group("What is 5 + 6?", ["11", "11", "12", "13"], [1, 1, 0, 0], "11"),  # in range, right
            group("What is 18 / 5?", ["3", "3", "4", "2"], [1, 1, 0, 0], "3"),  # in range but not whole: out
            group("What is 25 + 6?", ["31", "30", "30", "2"], [0, 1, 1, 0], "30"),  # a above 20: out, wrong
            group("What is 5 * 3?", ["15", "15", "15", "1"], [1, 1, 1, 0], "15"),  # no * among the seeds: out, right
            group("What is 4 + 5?", ["9", "9", "9", "9"], [1, 1, 1, 1], "9"),  # in range, outside the band
        ],
    )
    texts = ["What is 7 + 8?", "What is 24 / 6?", "What is 7 - 8?", "What is 9 + 9?"]
    write_instruction_log(run, [(text, "accepted") for text in texts], trained=[0, 1, 2])
    stdout, summary = anatomy(str(tmp_path / "bench"), "--arms", "serl")
    figures = summary["arms"]["serl"]
    assert figures["vote_truth"]["band_by_seed_range"] == {
        "in": {"groups": 1, "majority_right": 1},
        "out": {"groups": 3, "majority_right": 1},
    }
    assert figures["instructions"]["trained_in_seed_range"] == 2  # 7 + 8 and 24 / 6; 9 + 9 was never trained
    assert "in the seeds' range 1/1; outside 1/3" in stdout


def test_counts_generated_problems_in_the_embedded_seeds_range(tmp_path: Path) -> None:
    generated = tmp_path / "generated.jsonl"  # `serl generate` output; level-1 sums are of 2..50, quotients whole
    problems = ["What is 7 + 8?", "What is 248 + 17?", "What is 10 / 4?", "Name a prime.", "What is 12 * 12?"]
    write_jsonl(generated, [{"id": i, "problem": p} for i, p in enumerate(problems)])
    counts = anatomy("--problems", str(generated))[1]
    assert counts["seed_path"] == "embedded:arithmetic-l1"
    assert counts["files"][str(generated)] == {"problems": 5, "in_seed_range": 2}


def test_problems_files_without_the_problem_field_or_missing_are_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    write_jsonl(bad, [{"problem": "What is 1 + 2?"}, {"question": "What is 3 + 4?"}])
    for path, message in (
        (bad, "bad.jsonl:2: missing key 'problem'"),
        (tmp_path / "gone.jsonl", "gone.jsonl: file not found"),
    ):
        proc = subprocess.run(
            [sys.executable, str(REPO / "benchmarks" / "selfplay_anatomy.py"), "--problems", str(path)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr
