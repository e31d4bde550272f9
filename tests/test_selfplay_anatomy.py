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
    write_jsonl(
        run / "instructions" / "iter_0001.jsonl",
        [
            {"id": 0, "iteration": 1, "text": "What is 3 + 4?", "fate": "rejected:contamination"},
            {"id": 1, "iteration": 1, "text": "What is 2.5 * 4?", "fate": "accepted"},
            {"id": 2, "iteration": 1, "text": "Name a prime.", "fate": "accepted"},
            {"id": 3, "iteration": 1, "text": "???", "fate": "rejected:novelty"},
            {"id": 1, "iteration": 1, "fate": "kept", "reward_mean": 0.5},
            {"id": 1, "iteration": 1, "fate": "trained"},
            {"id": 2, "iteration": 1, "fate": "trained"},
        ],
        torn_tail=True,
    )
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "selfplay_anatomy.py"),
            str(tmp_path / "bench"),
            "--arms",
            "serl,gt",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "gt: no run directory" in proc.stdout
    figures = json.loads(proc.stdout.strip().splitlines()[-1])["arms"]["serl"]
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
    assert instructions["trained_examples"] == ["What is 2.5 * 4?", "Name a prime."]


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
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "selfplay_anatomy.py"), str(tmp_path / "bench"), "--arms", "serl"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    truth = json.loads(proc.stdout.strip().splitlines()[-1])["arms"]["serl"]["vote_truth"]
    assert truth["groups"] == 3 and truth["label_accuracy"] == round(2 / 3, 4)
    assert truth["band"] == [0.2, 0.8] and truth["band_groups"] == 2 and truth["band_label_accuracy"] == 0.5
    assert truth["band_reward_accuracy"] == 0.5  # 4 of 4 agree on 3 + 4, none of 4 on 10 / 4
    assert truth["response_accuracy"] == 0.75  # 3 + 2 + 4 of 12
    assert truth["by_votes"] == {
        "2": {"groups": 1, "majority_right": 0},
        "3": {"groups": 1, "majority_right": 1},
        "4": {"groups": 1, "majority_right": 1},
    }
