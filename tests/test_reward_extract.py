"""Answer extraction: math (math-verify, reference priorities), the MMLU-Pro choice cascade, plain numbers."""

from __future__ import annotations

import re
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from serl.reward import extract_answer, extract_choice


def test_math_prefers_boxed_over_a_later_bare_number() -> None:
    answer = extract_answer(r"So the result is \boxed{\frac{1}{2}}. Check: 3 + 4 = 7")
    assert answer is not None
    assert answer.text == r"\frac{1}{2}"
    assert answer.kind == "math"


def test_math_final_answer_anchor_beats_boxed() -> None:
    # priority 0 ("final answer is ... I hope") comes before priority 50 (\boxed), as in the reference
    answer = extract_answer(r"\boxed{3} and the final answer is 5. I hope it is correct.")
    assert answer is not None and answer.text == "5"


def test_math_without_anchor_takes_the_rightmost_number() -> None:
    answer = extract_answer("first 12 then 15")
    assert answer is not None and answer.text == "15"


def test_math_canonical_form_tells_apart_what_verify_might_not() -> None:
    half, point_five = extract_answer(r"$\frac{1}{2}$"), extract_answer("0.5")
    assert half is not None and point_five is not None
    assert half.canonical != point_five.canonical  # same value, different parse: clustered apart, merged by verify
    again = extract_answer(r"so $\frac{1}{2}$")
    assert again is not None and again.canonical == half.canonical


def test_math_no_answer() -> None:
    assert extract_answer("") is None
    assert extract_answer("I do not know.") is None
    assert extract_answer(r"\boxed{}") is None


def test_display_text_is_always_writable() -> None:
    answer = extract_answer("\\boxed{1\ud800}")  # a lone surrogate, as decoding invalid UTF-8 can leave
    assert answer is not None
    answer.text.encode("utf-8")  # does not raise
    long = extract_answer("$" + "+".join(["x"] * 2000) + "$")
    assert long is not None and len(long.text) <= 500


def test_choice_cascade_by_hand() -> None:
    assert extract_choice("Thinking... the answer is (C).") == "C"
    assert extract_choice("Answer: E\nso the answer is D") == "D"  # step 1 wins wherever it is
    assert extract_choice("Answer: A, no, Answer: B\nAnswer: C") == "B"  # step 2: last on the first line with one
    assert extract_choice("Answer:\n  G") == "G"  # \s* crosses the newline
    assert extract_choice("I pick E because F is wrong.") == "F"  # step 3: the last standalone A-J
    assert extract_choice("no capital letters here") is None
    assert extract_choice("XYZ KLM") is None
    assert extract_answer("The answer is (J)", "choice").canonical == "J"  # type: ignore[union-attr]


def _reference_choice(text: str) -> str | None:
    """MMLU-Pro's evaluate_from_local.py extraction, minus the random guess."""
    match = re.search(r"answer is \(?([A-J])\)?", text)
    if match:
        return match.group(1)
    match = re.search(r".*[aA]nswer:\s*([A-J])", text)
    if match:
        return match.group(1)
    match = re.search(r"\b[A-J]\b(?!.*\b[A-J]\b)", text, re.DOTALL)
    return match.group(0) if match else None


PIECES = ["A", "B", "J", "K", "a", " ", "\n", "answer is ", "Answer: ", "answer:", "(", ")", ".", "x", "I "]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=25).map("".join))
def test_choice_matches_the_reference_regexes(text: str) -> None:
    assert extract_choice(text) == _reference_choice(text)


def test_choice_is_linear_on_long_text() -> None:
    text = "A " * 50_000 + "x" * 50_000  # the reference's step-3 regex is quadratic here
    started = time.monotonic()
    assert extract_choice(text) == "A"
    assert time.monotonic() - started < 1.0


def test_number_extractor() -> None:
    assert extract_answer("we get 1,234.5 apples", "number").canonical == "2469/2"  # type: ignore[union-attr]
    assert extract_answer(r"so \boxed{-3/4} and 7 more", "number").canonical == "-3/4"  # type: ignore[union-attr]
    assert extract_answer(r"\boxed{x} and 7", "number") is None  # a boxed non-number is not a number answer
    assert extract_answer("no digits", "number") is None
    assert extract_answer("1/0", "number") is None
    assert extract_answer("9" * 10_000, "number") is None  # more digits than int() accepts
