"""MMLU-Pro: chain-of-thought prompts, answer extraction, per-category and group accuracy (reference §6.3).

Prompts follow TIGER-Lab's `evaluate_from_local.py`: a header naming the category, then k worked examples of the
same category, then the question ending in "Answer: Let's think step by step.". No chat template, greedy decoding,
stop at "Question:".

The reference takes its k = 5 exemplars from the validation split, which the shared data does not include. Here
they come from a user-given JSONL file in the validation split's layout (question, options, answer, cot_content,
category); the first k of the question's category are used, in file order. k = 0 (zero-shot) needs no file.

Answer extraction is `serl.reward.extract.extract_choice` (the reference cascade without its random guess). The
reference's guess for unanswered questions is off by default; with `random_guess=True` each unanswered question
gets one draw, seeded by its id, and the number of guesses is reported (the reference draws twice, keeps the second).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serl.data import DataError, Problem, load_problems
from serl.evaluation.metrics import mean
from serl.evaluation.runner import run_eval
from serl.reward.extract import extract_choice
from serl.rollout.base import Completion, RolloutEngine, SamplingParams

LETTERS = "ABCDEFGHIJ"
STOP = ("Question:",)
MAX_PROMPT_TOKENS = 2048  # the reference shrinks k until the prompt is shorter than max_model_len - max_tokens
GUESS_SEED = 12345  # the reference's random.seed
HEADER = (
    "The following are multiple choice questions (with answers) about {category}. Think step by step and then "
    'finish your answer with "the answer is (X)" where X is the correct letter choice.\n\n\n'
)

# Test-split category sizes (reference `mmlu_pro_acc`); groups are weighted averages of category accuracies by these.
CATEGORY_SIZES = {
    "biology": 717, "business": 789, "chemistry": 1132, "computer science": 410, "economics": 844,
    "engineering": 969, "health": 818, "history": 381, "law": 1101, "math": 1351, "other": 924,
    "philosophy": 499, "physics": 1299, "psychology": 798,
}  # fmt: skip
GROUPS = {
    "STEM": ("biology", "chemistry", "computer science", "engineering", "math", "physics"),
    "Humanities": ("history", "law", "philosophy"),
    "Social": ("business", "economics", "health", "psychology"),
    "Other": ("other",),
}


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    options: tuple[str, ...]  # "N/A" padding removed
    answer: str  # gold letter
    category: str
    cot_content: str = ""  # worked answer, exemplars only


def to_question(problem: Problem) -> Question:
    """A loaded record (question -> prompt, answer -> label) as a Question; one-line DataError when malformed."""
    meta = problem.meta
    options = meta.get("options")
    if not isinstance(options, list) or not all(isinstance(option, str) for option in options):
        raise DataError(f"question {problem.id}: 'options' must be a list of strings")
    options = [option for option in options if option != "N/A"]
    if not 1 <= len(options) <= len(LETTERS):
        raise DataError(f"question {problem.id}: needs 1 to {len(LETTERS)} options, found {len(options)}")
    answer = (problem.label or "").strip()
    if answer not in LETTERS[: len(options)]:
        raise DataError(f"question {problem.id}: answer {answer!r} is not one of {len(options)} option letters")
    category = meta.get("category")
    if not isinstance(category, str) or not category:
        raise DataError(f"question {problem.id}: missing 'category'")
    cot = meta.get("cot_content") or ""
    return Question(problem.id, problem.prompt, tuple(options), answer, category, str(cot))


def load_questions(
    source: str | Path, *, max_samples: int | None = None, categories: Sequence[str] | None = None
) -> list[Question]:
    """MMLU-Pro questions from a JSONL/JSON/parquet file or hub name, in file order.

    categories keeps only those categories; max_samples keeps the first N questions *of each category*, so a slice
    still covers every group (the test file is ordered by category).
    """
    questions = [to_question(problem) for problem in load_problems(source, "question", "answer")]
    if categories:
        unknown = sorted(set(categories) - {q.category for q in questions})
        if unknown:
            raise DataError(f"{source}: no questions in categories {', '.join(unknown)}")
        questions = [q for q in questions if q.category in categories]
    if max_samples is None:
        return questions
    kept: list[Question] = []
    per_category: dict[str, int] = {}
    for question in questions:
        per_category[question.category] = per_category.get(question.category, 0) + 1
        if per_category[question.category] <= max_samples:
            kept.append(question)
    return kept


def format_question(question: Question, *, with_answer: bool) -> str:
    """One question block: "Question:", the options lettered A., B., …, then the worked answer or the CoT cue."""
    text = f"Question:\n{question.question}\nOptions:\n"
    text += "".join(f"{letter}. {option}\n" for letter, option in zip(LETTERS, question.options, strict=False))
    if not with_answer:
        return text + "Answer: Let's think step by step."
    cot = question.cot_content.replace("A: Let's think step by step.", "Answer: Let's think step by step.")
    return text + cot + "\n\n"


def build_prompt(
    question: Question,
    exemplars: Sequence[Question] = (),
    *,
    count_tokens: Callable[[str], int] | None = None,
    max_prompt_tokens: int = MAX_PROMPT_TOKENS,
) -> str:
    """Header, the given exemplars (drop from the end until the prompt fits max_prompt_tokens), then the question."""
    k = len(exemplars)
    while True:
        prompt = HEADER.format(category=question.category)
        prompt += "".join(format_question(example, with_answer=True) for example in exemplars[:k])
        prompt += format_question(question, with_answer=False)
        if k == 0 or count_tokens is None or count_tokens(prompt) < max_prompt_tokens:
            return prompt
        k -= 1


def exemplars_by_category(exemplars: Sequence[Question], k: int) -> dict[str, list[Question]]:
    """The first k exemplars of each category, in file order."""
    chosen: dict[str, list[Question]] = {}
    for example in exemplars:
        bucket = chosen.setdefault(example.category, [])
        if len(bucket) < k:
            bucket.append(example)
    return chosen


def score_response(response: str, question: Question, *, random_guess: bool = False) -> tuple[str | None, str, bool]:
    """(extracted letter, letter scored, guessed). Unanswered questions score as wrong ("") unless random_guess,
    which draws an option from a generator seeded by the question id, so a resumed run guesses the same."""
    extracted = extract_choice(response)
    if extracted is not None:
        return extracted, extracted, False
    if not random_guess:
        return None, "", False
    rng = random.Random(f"{GUESS_SEED}:{question.id}")
    return None, LETTERS[rng.randrange(len(question.options))], True


def group_accuracy(accuracy: Mapping[str, float], sizes: Mapping[str, int] = CATEGORY_SIZES) -> dict[str, float | None]:
    """STEM/Humanities/Social/Other and Avg: category accuracies averaged with weights `sizes`.

    Categories not evaluated are left out of their group; a group with none is None.
    """

    def weighted(categories: Sequence[str]) -> float | None:
        present = [c for c in categories if c in accuracy]
        total = sum(sizes[c] for c in present)
        return sum(accuracy[c] * sizes[c] for c in present) / total if total else None

    unknown = sorted(set(accuracy) - set(sizes))
    if unknown:
        raise ValueError(f"no size for categories {', '.join(unknown)}")
    result = {group: weighted(categories) for group, categories in GROUPS.items()}
    result["Avg"] = weighted(list(sizes))
    return result


def mmlu_metrics(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Accuracy overall (micro), per category, per group (weighted as the reference), plus no-answer/guess counts."""
    if not records:
        raise ValueError("no questions to score")
    by_category: dict[str, list[bool]] = {}
    for record in records:
        by_category.setdefault(record["category"], []).append(bool(record["correct"]))
    categories = {
        cat: {"questions": len(hits), "accuracy": mean([float(h) for h in hits])}
        for cat, hits in sorted(by_category.items())
    }
    return {
        "questions": len(records),
        "accuracy": mean([float(bool(r["correct"])) for r in records]),
        "no_answer": sum(r["extracted"] is None for r in records),
        "guessed": sum(bool(r.get("guessed")) for r in records),
        "groups": group_accuracy({cat: v["accuracy"] for cat, v in categories.items()}),
        "by_category": categories,
    }


def evaluate_mmlu_pro(
    engine: RolloutEngine,
    questions: Sequence[Question],
    *,
    exemplars: Sequence[Question] = (),
    shots: int = 0,
    count_tokens: Callable[[str], int] | None = None,
    max_new_tokens: int = 2048,
    random_guess: bool = False,
    batch_size: int = 64,
    records_path: str | Path | None = None,
    extra_settings: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> tuple[dict[str, Any], list[dict]]:
    """Greedy CoT evaluation; returns (metrics, per-question records)."""
    pool = exemplars_by_category(exemplars, shots) if shots > 0 else {}
    if shots > 0:
        missing = sorted({q.category for q in questions} - set(pool))
        if missing:
            raise DataError(
                f"the exemplar file has no examples for {', '.join(missing)} "
                "(k-shot uses exemplars of the question's own category); use --shots 0 or add exemplars"
            )
    prompts = [build_prompt(q, pool.get(q.category, []), count_tokens=count_tokens) for q in questions]
    by_id = {q.id: q for q in questions}

    def score_batch(problems: list[Problem], prompts: list[str], groups: list[list[Completion]]) -> list[dict]:
        records = []
        for problem, prompt, (completion,) in zip(problems, prompts, groups, strict=True):
            question = by_id[problem.id]
            extracted, pred, guessed = score_response(completion.text, question, random_guess=random_guess)
            records.append({
                "id": question.id,
                "category": question.category,
                "prompt": prompt,
                "response": completion.text,
                "finish_reason": completion.finish_reason,
                "extracted": extracted,
                "pred": pred,
                "guessed": guessed,
                "gold": question.answer,
                "correct": pred == question.answer,
            })  # fmt: skip
        return records

    params = SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=max_new_tokens, stop=STOP)
    settings = {"task": "mmlu_pro", "shots": shots, "max_new_tokens": max_new_tokens, "random_guess": random_guess}
    records = run_eval(
        engine,
        [Problem(q.id, q.question, q.answer) for q in questions],
        prompts,
        params=params,
        n=1,
        score_batch=score_batch,
        batch_size=batch_size,
        records_path=records_path,
        settings={**settings, **(extra_settings or {})},
        overwrite=overwrite,
        progress=progress,
        description="MMLU-Pro",
    )
    return mmlu_metrics(records), records
