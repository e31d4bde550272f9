"""The embedded arithmetic generator: deterministic, correct integer answers, small numbers, disjoint splits."""

from __future__ import annotations

import ast
import hashlib
import json
import operator
import os
import re
import subprocess
import sys
from collections import Counter
from fractions import Fraction

import pytest

from serl.data import Problem, generate_arithmetic, load_problems, split_of
from serl.data.arithmetic import LEVELS, TEMPLATES

OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def evaluate(expression: str) -> tuple[Fraction, int]:
    """Exact value of an arithmetic expression and its number of operations."""

    def walk(node: ast.AST) -> tuple[Fraction, int]:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return Fraction(node.value), 0
        if isinstance(node, ast.BinOp) and type(node.op) in OPERATORS:
            (left, left_ops), (right, right_ops) = walk(node.left), walk(node.right)
            return OPERATORS[type(node.op)](left, right), left_ops + right_ops + 1
        raise ValueError(f"unexpected node {ast.dump(node)}")

    return walk(ast.parse(expression, mode="eval").body)


def digest(problems: list[Problem]) -> str:
    return hashlib.sha256(json.dumps([(p.id, p.prompt, p.label, p.meta) for p in problems]).encode()).hexdigest()


@pytest.fixture(scope="module")
def train() -> list[Problem]:
    return load_problems("embedded:arithmetic")


@pytest.fixture(scope="module")
def test() -> list[Problem]:
    return load_problems("embedded:arithmetic-test")


def test_embedded_sets_are_the_generator_output(train: list[Problem], test: list[Problem]) -> None:
    assert train == generate_arithmetic(500, seed=0, split="train")
    assert test == generate_arithmetic(200, seed=0, split="test")
    assert len({p.prompt for p in train}) == 500 and len({p.id for p in train}) == 500
    assert len({p.prompt for p in test}) == 200 and len({p.id for p in test}) == 200


def test_the_default_seed_set_is_pinned(train: list[Problem]) -> None:
    # Answers checked by hand. A change here changes every experiment that uses the default data: do it on purpose.
    assert [(p.prompt, p.label) for p in train[:3]] == [
        ("A theater has 10 rows with 6 seats in each row. 16 seats are taken. How many are empty?", "44"),
        ("Isla is 12 years old and her cousin is 5 years younger. How old was her cousin 2 years ago?", "5"),
        ("A boat travels 20 kilometers every hour. How many kilometers does it travel in 3 hours?", "60"),
    ]
    # ids, prompts and labels as they were before levels existed (meta has gained "level" since)
    unchanged = hashlib.sha256(json.dumps([(p.id, p.prompt, p.label) for p in train]).encode()).hexdigest()
    assert unchanged == "cfd2ce0980dfa9ea05c77fcfcb9fb02bf9dc6e94f812351335c31eac07a306ea"
    assert all(p.meta["level"] == 4 for p in train)


def test_generation_does_not_depend_on_the_process(train: list[Problem]) -> None:
    code = "from serl.data import generate_arithmetic; print(repr(generate_arithmetic(500)))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    output = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert output.strip() == repr(train)


def test_train_and_test_never_overlap() -> None:
    many_train = generate_arithmetic(3000, seed=1, split="train")
    many_test = generate_arithmetic(1000, seed=2, split="test")
    normalise = lambda text: " ".join(text.lower().split())  # noqa: E731
    assert not {normalise(p.prompt) for p in many_train} & {normalise(p.prompt) for p in many_test}
    assert all(split_of(p.prompt) == "train" for p in many_train)
    assert all(split_of(p.prompt) == "test" for p in many_test)
    assert split_of("  A ROPE 30 meters long ") == split_of("a rope 30 meters long")


def test_answers_are_exact_integers_from_the_stated_numbers(train: list[Problem], test: list[Problem]) -> None:
    for problem in train + test:
        value, operations = evaluate(problem.meta["expression"])
        assert value.denominator == 1 and 0 <= value <= 1000, problem
        assert problem.label == str(value.numerator), problem
        assert operations == problem.meta["steps"] and 1 <= operations <= 3, problem
        stated = set(re.findall(r"\d+", problem.prompt))
        used = set(re.findall(r"\d+", problem.meta["expression"].removeprefix("2*")))  # round trip: "2*" implied
        assert not used - stated, problem  # every number in the arithmetic is in the text
        assert all(int(number) <= 200 for number in stated), problem  # small numbers for a 135M model


def test_every_template_and_step_count_appears(train: list[Problem]) -> None:
    assert {p.meta["template"] for p in train} == set(TEMPLATES)
    steps = Counter(p.meta["steps"] for p in train)
    assert set(steps) == {1, 2, 3} and steps[3] >= 25


def test_seeds_change_the_problems_and_arguments_are_checked() -> None:
    assert generate_arithmetic(20, seed=1) != generate_arithmetic(20, seed=2)
    assert generate_arithmetic(20, seed=3) == generate_arithmetic(20, seed=3)
    with pytest.raises(ValueError, match="split must be one of train, test"):
        generate_arithmetic(10, split="validation")
    with pytest.raises(ValueError, match="n must be at least 1"):
        generate_arithmetic(0)


@pytest.mark.parametrize("level", [1, 2, 3])
def test_easier_levels_are_one_step_small_and_disjoint(level: int) -> None:
    train = load_problems(f"embedded:arithmetic-l{level}")
    test = load_problems(f"embedded:arithmetic-l{level}-test")
    assert (len(train), len(test)) == (500, 500)
    assert not {p.prompt for p in train} & {p.prompt for p in test}
    one_step = {"shopping_total", "sharing_equal", "distance_speed", "distance_rope", "ages_times", "steps_savings"}
    assert {p.meta["template"] for p in train} == (one_step if level == 3 else set(LEVELS[level].templates))
    for problem in train + test:
        value, operations = evaluate(problem.meta["expression"])
        assert operations == problem.meta["steps"] == 1 and problem.meta["level"] == level, problem
        assert value.denominator == 1 and problem.label == str(value.numerator), problem
        numbers = [int(number) for number in re.findall(r"\d+", problem.prompt)]
        assert max(numbers) <= (200 if level == 3 else 144), problem
    assert train[0].id == f"arithmetic-l{level}-train-0000" and split_of(test[0].prompt) == "test"


def test_level_hand_values_and_argument_check() -> None:
    bare = generate_arithmetic(200, seed=0, split="train", level=1)
    assert {p.meta["template"] for p in bare} == {"bare_add", "bare_subtract", "bare_multiply", "bare_divide"}
    assert [(p.prompt, p.label) for p in bare[:2]] == [("What is 25 - 14?", "11"), ("What is 35 / 5?", "7")]
    words = load_problems("embedded:arithmetic-l2")
    assert (words[0].prompt, words[0].label) == (
        "Grace has 28 cards and Leo has 16 cards. How many cards do they have together?",
        "44",
    )
    with pytest.raises(ValueError, match="level must be one of 1, 2, 3, 4"):
        generate_arithmetic(10, level=5)
