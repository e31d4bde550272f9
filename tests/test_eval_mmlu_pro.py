"""MMLU-Pro: extraction cascade on real-looking responses, group weights, prompts, metrics (no model)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from serl.data import DataError, Problem
from serl.evaluation.mmlu_pro import (
    CATEGORY_SIZES,
    GROUPS,
    HEADER,
    Question,
    build_prompt,
    group_accuracy,
    load_questions,
    mmlu_metrics,
    score_response,
    to_question,
)

MMLU_PRO = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mmlu_pro" / "test.jsonl"
needs_data = pytest.mark.skipif(not MMLU_PRO.is_file(), reason="shared MMLU-Pro data not present")

QUESTION = Question("q1", "What is 2 + 2?", ("3", "4", "5", "22"), "B", "math")

CASCADE = [
    ("The product is 4. The answer is (B).", "B"),
    ("Let's see... so the answer is (C).", "C"),
    ("the answer is D because 2+2", "D"),  # parentheses optional
    ("Step 1: add.\nAnswer: D", "D"),
    ("answer: A then again Answer: C\nAnswer: B", "C"),  # last on the FIRST line with one
    ("After checking every option, I would go with B", "B"),  # bare trailing letter
    ("Options A and C are wrong, so B.\nFinally: D", "D"),  # the last standalone letter wins
    ("I think it is four", "I"),  # faithful quirk: the pronoun "I" is a standalone A-J letter
    ("The answer is (K).", None),  # no letter in A-J anywhere: nothing extracted
    ("", None),
    ("2 + 2 = 4, done.", None),
]


@pytest.mark.parametrize(("response", "expected"), CASCADE)
def test_extraction_cascade(response: str, expected: str | None) -> None:
    extracted, pred, guessed = score_response(response, QUESTION)
    assert extracted == expected
    assert pred == (expected or "")  # no random guess by default: unanswered scores as wrong
    assert guessed is False


def test_random_guess_is_opt_in_reported_and_stable() -> None:
    first = score_response("no idea", QUESTION, random_guess=True)
    assert first[0] is None and first[2] is True and first[1] in "ABCD"
    assert score_response("no idea", QUESTION, random_guess=True) == first  # seeded by the question id
    assert score_response("The answer is (A)", QUESTION, random_guess=True) == ("A", "A", False)


@needs_data
def test_category_sizes_are_the_test_split_counts() -> None:
    counts = Counter(json.loads(line)["category"] for line in MMLU_PRO.open(encoding="utf-8"))
    assert dict(counts) == CATEGORY_SIZES
    assert sum(counts.values()) == 12032
    grouped = [category for categories in GROUPS.values() for category in categories]
    assert sorted(grouped) == sorted(counts)  # every category in exactly one group


def test_group_accuracy_weights_by_category_size() -> None:
    stem = set(GROUPS["STEM"])
    accuracy = {category: 1.0 if category in stem else 0.0 for category in CATEGORY_SIZES}
    accuracy["law"] = 0.5
    groups = group_accuracy(accuracy)
    assert groups["STEM"] == 1.0
    assert groups["Humanities"] == pytest.approx(0.5 * 1101 / (381 + 1101 + 499))
    assert groups["Social"] == 0.0
    stem_size = 717 + 1132 + 410 + 969 + 1351 + 1299
    assert groups["Avg"] == pytest.approx((stem_size + 0.5 * 1101) / 12032)


def test_group_accuracy_of_a_partial_evaluation() -> None:
    groups = group_accuracy({"history": 0.2, "law": 0.6})
    assert groups["Humanities"] == pytest.approx((0.2 * 381 + 0.6 * 1101) / (381 + 1101))
    assert groups["STEM"] is None and groups["Avg"] == groups["Humanities"]
    with pytest.raises(ValueError, match="no size"):
        group_accuracy({"astrology": 1.0})


def test_zero_shot_prompt_is_the_reference_layout() -> None:
    prompt = build_prompt(QUESTION)
    assert prompt == (
        HEADER.format(category="math")
        + "Question:\nWhat is 2 + 2?\nOptions:\nA. 3\nB. 4\nC. 5\nD. 22\nAnswer: Let's think step by step."
    )
    assert prompt.startswith("The following are multiple choice questions (with answers) about math.")


def test_k_shot_prompt_uses_cot_and_shrinks_to_fit() -> None:
    cot = "A: Let's think step by step. 1 + 1 = 2. The answer is (A)."
    examples = [Question(f"e{i}", f"Example {i}?", ("2", "3"), "A", "math", cot) for i in range(3)]
    prompt = build_prompt(QUESTION, examples)
    assert prompt.count("Answer: Let's think step by step. 1 + 1 = 2. The answer is (A).\n\n") == 3
    assert prompt.index("Example 0?") < prompt.index("Example 2?") < prompt.index("What is 2 + 2?")
    assert prompt.endswith("D. 22\nAnswer: Let's think step by step.")
    words = len(build_prompt(QUESTION, examples[:1]).split())
    shrunk = build_prompt(QUESTION, examples, count_tokens=lambda text: len(text.split()), max_prompt_tokens=words + 1)
    assert "Example 0?" in shrunk and "Example 1?" not in shrunk  # k dropped from 3 to 1


def test_to_question_drops_na_padding_and_checks_the_answer() -> None:
    meta = {"options": ["x", "y", "N/A", "N/A"], "category": "law"}
    assert to_question(Problem("1", "Q?", "B", meta)).options == ("x", "y")
    with pytest.raises(DataError, match="answer 'C'"):
        to_question(Problem("1", "Q?", "C", meta))
    with pytest.raises(DataError, match="options"):
        to_question(Problem("1", "Q?", "A", {"category": "law"}))


@needs_data
def test_load_questions_slices_per_category() -> None:
    questions = load_questions(MMLU_PRO, max_samples=2)
    assert len(questions) == 28
    assert Counter(q.category for q in questions) == {category: 2 for category in CATEGORY_SIZES}
    laws = load_questions(MMLU_PRO, max_samples=3, categories=["law"])
    assert [q.category for q in laws] == ["law"] * 3
    with pytest.raises(DataError, match="astrology"):
        load_questions(MMLU_PRO, max_samples=1, categories=["astrology"])


def test_mmlu_metrics_counts_no_answers_and_guesses() -> None:
    records = [
        {"category": "law", "extracted": "A", "guessed": False, "correct": True},
        {"category": "law", "extracted": None, "guessed": True, "correct": True},
        {"category": "math", "extracted": None, "guessed": False, "correct": False},
        {"category": "math", "extracted": "C", "guessed": False, "correct": True},
    ]
    metrics = mmlu_metrics(records)
    assert metrics["accuracy"] == 0.75
    assert metrics["no_answer"] == 2 and metrics["guessed"] == 1
    assert metrics["by_category"]["math"] == {"questions": 2, "accuracy": 0.5}
    assert metrics["groups"]["Avg"] == pytest.approx((1.0 * 1101 + 0.5 * 1351) / (1101 + 1351))
