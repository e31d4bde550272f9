"""Parsing numbered items out of generated responses (serl-reference §1.4)."""

from __future__ import annotations

from serl.selfinstruct.parsing import extract_items


def test_several_items_per_response_with_preamble_dropped():
    response = (
        "Sure! Here are new problems:\n"
        "9. What is $3 + 4$?\n"
        "10. A train travels 60 km in 1.5 hours.\nWhat is its average speed?\n"
        "11.   How many primes are below 20?  \n"
    )
    assert extract_items(response) == [
        "What is $3 + 4$?",
        "A train travels 60 km in 1.5 hours.\nWhat is its average speed?",  # line breaks inside stay
        "How many primes are below 20?",
    ]


def test_a_solution_leaks_into_the_last_item():
    solution = "Solution: $7 \\cdot 8 = 56$, so the answer is 56."
    response = "9. Find $x$ if $2x + 3 = 11$.\n10. Compute $7 \\cdot 8$.\n\n" + solution
    items = extract_items(response)
    assert items == [
        "Find $x$ if $2x + 3 = 11$.",
        "Compute $7 \\cdot 8$.\n\n" + solution,
    ]


def test_no_numbering_yields_nothing():
    assert extract_items("What is the sum of the first ten odd numbers?") == []
    assert extract_items("") == []
    assert extract_items("Version 2.0 is out") == []  # "2.0" has no whitespace after the dot


def test_first_item_may_start_mid_line():
    # The reference's first match can begin at any "<digits>.<whitespace>", not only at a line start.
    assert extract_items("It costs 5. Then 6. Next") == ["Then 6. Next"]


def test_item_boundaries_need_a_newline_before_the_number():
    # "3. " in the middle of a line does not start a new item; "\n4. " does.
    assert extract_items("1. Add 2 and 3. Then double it.\n4. Subtract 1 from 9.") == [
        "Add 2 and 3. Then double it.",
        "Subtract 1 from 9.",
    ]


def test_empty_items_are_returned_for_the_rules_to_drop():
    assert extract_items("9. \n10. Real question here please") == ["10. Real question here please"]
    assert extract_items("9.  Real question here\n10.\tSecond one is here") == [
        "Real question here",
        "Second one is here",
    ]
