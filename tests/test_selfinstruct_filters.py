"""Cleaning, capitalisation modes, each named quality rule, and the difficulty filter."""

from __future__ import annotations

import math

import pytest

from serl.selfinstruct.difficulty import difficulty_fate, passes_difficulty
from serl.selfinstruct.filters import RULES, clean_item, rule_violation, states_a_result

GOOD = "Find the value of $x$ such that $2x + 3 = 11$."


def test_whitespace_is_collapsed_and_stripped():
    cleaned = clean_item("  How many\n\n ways  can\tthree people sit?  ")
    assert cleaned == "How many ways can three people sit?"


def test_default_capitalisation_only_touches_the_first_character():
    item = "in $\\triangle ABC$, $\\Delta = 5$ and AB = 3. Find BC."
    assert clean_item(item) == "In $\\triangle ABC$, $\\Delta = 5$ and AB = 3. Find BC."


def test_faithful_capitalisation_lower_cases_the_rest_as_the_reference():
    item = "in $\\triangle ABC$, $\\Delta = 5$ and AB = 3. Find BC."
    expected = "In $\\triangle abc$, $\\delta = 5$ and ab = 3. find bc."
    assert clean_item(item, faithful_capitalize=True) == expected
    assert clean_item("ÉTÉ Is Hot", faithful_capitalize=True) == "Été is hot"


def test_first_character_titlecase_agrees_between_modes():
    # str.capitalize() title-cases the first character ("ß" -> "Ss"); the default mode does the same.
    assert clean_item("ßtraße has five letters here") == "Sstraße has five letters here"
    assert clean_item("ßtraße has five letters here", faithful_capitalize=True)[:2] == "Ss"


def test_a_good_problem_passes_every_rule():
    assert rule_violation(clean_item(GOOD)) is None


def test_empty():
    assert rule_violation(clean_item("   \n ")) == "empty"


@pytest.mark.parametrize(
    ("words", "expected"),
    [(1, "length"), (3, "length"), (4, None), (150, None), (151, "length")],
)
def test_length_window_is_4_to_150_words(words, expected):
    text = "Compute " + " ".join(["x"] * (words - 1)) if words > 1 else "Compute"
    assert len(text.split()) == words
    assert rule_violation(text) == expected


def test_length_window_is_configurable():
    assert rule_violation("What is two plus two?", min_words=6) == "length"
    assert rule_violation("What is two plus two?", max_words=4) == "length"


@pytest.mark.parametrize(
    "text",
    [
        "Look at the image and count the dots.",
        "How many edges does the GRAPHS above have?",
        "Using the picture, estimate the area now.",
        "Read the file and sum the numbers.",
        "On the map, how far is town A from town B?",
        "Draw a triangle with sides 3, 4 and 5.",
        "Plot the function $y = x^2$ on paper.",
        "Go to the store and buy 3 apples; how much?",
        "Explain what goes  to zero here, go   to the next step.",
    ],
)
def test_blacklist_words_any_case(text):
    assert rule_violation(clean_item(text)) == "blacklist"


@pytest.mark.parametrize(
    "text",
    [
        "A mapping f sends every integer n to 2n; find f(7).",  # "mapping" is not "map"
        "What is the drawer count if each drawer holds 3 socks?",  # "drawer" is not "draw"
        "How many profiles have exactly 3 followers in total?",  # "files" only as part of a word
        "Go towards the north for 3 km; how far have you gone?",  # "go towards" is not "go to"
    ],
)
def test_blacklist_matches_whole_words_only(text):
    assert rule_violation(clean_item(text)) is None


def test_write_a_program_in_both_modes():
    for faithful in (False, True):
        for text in ("Write a program that adds two numbers.", "write A Program that adds two numbers."):
            assert rule_violation(clean_item(text, faithful_capitalize=faithful)) == "write_a_program"
    assert rule_violation("Write a poem that uses the number seven.") is None


@pytest.mark.parametrize(
    "text", ["$x + 1 = 3$, find x please.", "(a) Find the sum of 2 and 3.", "#3 Find half of ten."]
)
def test_leading_punctuation(text):
    assert rule_violation(clean_item(text)) == "leading_punctuation"


@pytest.mark.parametrize(
    "text", ["Été: how many days are in June?", "Σ of 1..10 equals what number?", "“Quoted” what is 2 + 2?"]
)
def test_non_ascii_start(text):
    assert rule_violation(clean_item(text)) == "non_ascii_start"


def test_rules_report_the_first_failure_in_the_reference_order():
    assert rule_violation("image plot map") == "length"  # too short beats blacklisted
    assert rule_violation("Write a program to draw the graph of y = x.") == "blacklist"
    assert set(RULES) == {
        "empty",
        "length",
        "blacklist",
        "write_a_program",
        "leading_punctuation",
        "non_ascii_start",
        "stated_result",
    }


@pytest.mark.parametrize(
    "text",
    [
        "What is 27 * 2 = 54.",
        "What is 226/10 = 22.67 rounded to the nearest tenth of a second.",
        "What is (5 * 6) / 2 = 15?",
        "What is -3 + 5 = 2?",
        "Compute 1,000 + 500 = 1,500 again.",
        "Given that 2^10 = 1024, what is 2^11?",
        "What is 2 * (3^2) + 3 * (11 + 11) = 2 * (3^2).",  # an identity between two sums also states a value
    ],
)
def test_a_problem_that_states_the_value_of_a_sum_is_caught(text):
    assert states_a_result(text)
    assert rule_violation(text, reject_stated_results=True) == "stated_result"
    assert rule_violation(text) is None  # not a reference rule: off unless asked


@pytest.mark.parametrize(
    "text",
    [
        "What is 49 + 38?",
        "What is 32 - 45 = ?",  # asks, does not state
        "Solve 3x + 2 + 4 = 11 for x.",  # the sum before "=" holds a variable
        "Find x if x^2 + 4 = 13.",
        "If 2x + 3 = 7, what is x?",
        "Let ab2 + 3 = 5, find b.",
        "What is 2 + 3 = 5x when x is 1?",  # the right side is a term in x, not a number
        "Is 3 + 4 >= 7 or 3 == 3 true?",  # comparisons, not "="
        "Price: 5 = 5 dollars, what is 3 more?",  # no operation before "="
    ],
)
def test_equations_and_open_questions_are_not_stated_results(text):
    assert not states_a_result(text)
    assert rule_violation(text, reject_stated_results=True) is None


def test_stated_result_runs_after_the_reference_rules():
    assert rule_violation("What is 1+1=2?", reject_stated_results=True) == "length"  # three words


@pytest.mark.parametrize(
    ("ratio", "expected"),
    [
        (0.0, False),
        (0.1875, False),
        (0.2, True),
        (4 / 16, True),
        (0.5, True),
        (0.8, True),
        (12 / 16, True),
        (13 / 16, False),
        (1.0, False),
        (math.nan, False),
    ],
)
def test_difficulty_bounds_are_inclusive(ratio, expected):
    assert passes_difficulty(ratio) is expected
    assert difficulty_fate(ratio) == ("kept" if expected else "rejected:difficulty")


def test_difficulty_bound_holds_for_ratios_computed_in_float32():
    import numpy as np

    assert passes_difficulty(float(np.float32(4) / np.float32(5)))  # 0.800000012 counts as 0.8
    assert passes_difficulty(float(np.float32(1) / np.float32(5)))
    assert not passes_difficulty(0.81)


def test_difficulty_custom_and_invalid_bounds():
    assert passes_difficulty(1.0, lo=0.0, hi=1.0)
    assert not passes_difficulty(0.3, lo=0.4, hi=0.6)
    with pytest.raises(ValueError, match="lo <= hi"):
        passes_difficulty(0.5, lo=0.9, hi=0.1)


def test_stated_result_reads_long_pathological_text_in_one_pass():
    assert not states_a_result("1 + " * 5000 + "= x")
    assert states_a_result("Is " + "1 + 1 = 2 and " * 2000 + "so on?")
    assert not states_a_result("=1" * 4000)  # no operation before any "="
