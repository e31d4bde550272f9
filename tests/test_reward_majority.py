"""Majority vote: hand-computed groups, both methods, and a property test that `fast` equals `reference`."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serl.reward import GroupVote, clear_equivalence_cache, is_equivalent, majority_vote
from serl.reward.disproof import certainly_different
from serl.reward.equivalence import equivalent_raw
from serl.reward.extract import extract_raw

METHODS = ["fast", "reference"]


@pytest.mark.parametrize("method", METHODS)
def test_tie_goes_to_the_lowest_index(method: str) -> None:
    vote = majority_vote([r"\boxed{1}", r"\boxed{2}", r"\boxed{2}", r"\boxed{1}"], method=method)
    # counts [2, 2, 2, 2]: response 0 wins, so the 1s are rewarded, not the 2s
    assert vote.rewards == [1.0, 0.0, 0.0, 1.0]
    assert vote.majority_answer == "1"
    assert vote.majority_index == 0
    assert vote.majority_ratio == 0.5
    assert vote.cluster_sizes == [2, 2]


def test_equivalence_is_not_transitive() -> None:
    assert is_equivalent("$x=2$", "$2$")
    assert is_equivalent("$2$", "$y=2$")
    assert not is_equivalent("$x=2$", "$y=2$")
    assert is_equivalent("$2=x$", "$x=2$")
    assert not is_equivalent("$2=x$", "$2$")


@pytest.mark.parametrize("method", METHODS)
def test_non_transitive_group(method: str) -> None:
    group = ["$2=x$", "$x=2$", "$2$", "$2$", "$2$", "$y=2$", "$y=2$"]
    # counts: 2=x -> 2 (itself, x=2); x=2 -> 5 (itself, 2=x, three 2s); 2 -> 6 (three 2s, x=2, two y=2);
    # y=2 -> 5 (two y=2, three 2s). "2" wins. 2=x is equivalent to the rewarded x=2 but not to the winner: 0.
    vote = majority_vote(group, method=method)
    assert vote.rewards == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert vote.majority_index == 2
    assert vote.majority_size == 6
    assert vote.majority_ratio == pytest.approx(6 / 7)
    assert vote.cluster_sizes == [7]


@pytest.mark.parametrize("method", METHODS)
def test_half_in_three_notations(method: str) -> None:
    vote = majority_vote([r"The answer is $\frac{1}{2}$", "0.5", "1/2", r"\boxed{3}"], method=method)
    assert vote.rewards == [1.0, 1.0, 1.0, 0.0]
    assert vote.majority_answer == r"\frac{1}{2}"
    assert vote.answers == [r"\frac{1}{2}", "0.5", "1/2", "3"]
    assert vote.majority_ratio == 0.75
    assert vote.cluster_sizes == [3, 1]


@pytest.mark.parametrize("method", METHODS)
def test_all_distinct(method: str) -> None:
    group = [r"\boxed{1}", r"\boxed{2}", r"\boxed{3}"]
    zero = majority_vote(group, method=method)
    assert zero.rewards == [0.0, 0.0, 0.0]
    assert zero.majority_answer is None and zero.majority_index is None and not zero.has_majority
    assert zero.majority_ratio == pytest.approx(1 / 3)  # the reference's count/n, for the difficulty filter
    assert zero.cluster_sizes == [1, 1, 1]
    first = majority_vote(group, method=method, no_majority="first")  # the reference: one-hot on response 0
    assert first.rewards == [1.0, 0.0, 0.0]
    assert first.majority_answer == "1" and first.majority_index == 0 and not first.has_majority


@pytest.mark.parametrize("method", METHODS)
def test_all_without_answer(method: str) -> None:
    group = ["", "no idea", "I cannot solve this", ""]
    zero = majority_vote(group, method=method)
    assert zero.rewards == [0.0] * 4
    assert zero.answers == [None] * 4
    assert zero.majority_ratio == 0.25
    first = majority_vote(group, method=method, no_majority="first")
    assert first.rewards == [1.0, 0.0, 0.0, 0.0]  # identical empty texts still do not agree: no answer to compare
    assert first.majority_answer is None


def test_single_and_empty_groups() -> None:
    assert majority_vote([r"\boxed{4}"]).rewards == [0.0]
    assert majority_vote([r"\boxed{4}"], no_majority="first").rewards == [1.0]
    empty = majority_vote([])
    assert empty == GroupVote([], None, 0.0, [], [])


@pytest.mark.parametrize("method", METHODS)
def test_multiple_choice_letters(method: str) -> None:
    group = ["The answer is (B)", "Answer: B", "I think C", "so the answer is B.", "A"]
    vote = majority_vote(group, extractor="choice", method=method)
    assert vote.answers == ["B", "B", "C", "B", "A"]
    assert vote.rewards == [1.0, 1.0, 0.0, 1.0, 0.0]
    assert vote.majority_answer == "B"
    assert vote.cluster_sizes == [3, 1, 1]


@pytest.mark.parametrize("method", METHODS)
def test_number_extractor(method: str) -> None:
    vote = majority_vote(
        ["It costs 1,000 dollars", "so 1000.0", r"\boxed{999}", "about 1000/1"], extractor="number", method=method
    )
    assert vote.answers == ["1,000", "1000.0", "999", "1000/1"]
    assert vote.rewards == [1.0, 1.0, 0.0, 1.0]


@pytest.mark.parametrize("method", METHODS)
def test_prompt_and_response_quirk(method: str) -> None:
    prompt = "Problem: how many legs do 2 dogs have?\n"
    group = ["no idea", "not sure", r"\boxed{8}"]
    # The reference scores prompt + response: both prose answers inherit the prompt's "2" and form a majority.
    quirk = majority_vote(group, prompt=prompt, score_prompt_and_response=True, method=method)
    assert quirk.answers == ["2", "2", "8"]
    assert quirk.rewards == [1.0, 1.0, 0.0]
    # By default only the response is scored: a response without an answer never joins a majority.
    strict = majority_vote(group, prompt=prompt, method=method)
    assert strict.answers == [None, None, "8"]
    assert strict.rewards == [0.0, 0.0, 0.0]


def test_bad_options_fail_fast() -> None:
    with pytest.raises(ValueError, match="extractor"):
        majority_vote(["1"], extractor="latex")
    with pytest.raises(ValueError, match="method"):
        majority_vote(["1"], method="slow")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="prompt"):
        majority_vote(["1"], score_prompt_and_response=True)


# Forms that are equivalent, non-equivalent, one-way only (2=x verifies against \{2\} as gold, not the other way),
# non-transitive (x=2 ≡ 2 ≡ y=2), answerless, and duplicated.
ANSWER_POOL = [
    r"\boxed{\frac{1}{2}}",
    r"The answer is $\frac{2}{4}$",
    "0.5",
    "1/2",
    r"\boxed{0.50}",
    "$2$",
    "$x=2$",
    "$y=2$",
    "$2=x$",
    r"$\{2\}$",
    r"$2\%$",
    "$0.02$",
    r"$\frac{1}{3}$",
    "0.333333",
    "0.33333",
    r"$(2,3)$",
    r"$\{2,3\}$",
    "final answer is 7. I hope",
    "Answer: 7",
    "",
    "no idea at all",
]
TRICKY = ["$2$", "$x=2$", "$y=2$", "$2=x$", r"$\{2\}$", r"$2\%$", "$0.02$", ""]


def _assert_fast_equals_reference(group: list[str], no_majority: str, cold_cache: bool) -> None:
    if cold_cache:
        clear_equivalence_cache()
    fast = majority_vote(group, method="fast", no_majority=no_majority)  # type: ignore[arg-type]
    reference = majority_vote(group, method="reference", no_majority=no_majority)  # type: ignore[arg-type]
    assert not reference.timed_out
    assert fast == reference


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.sampled_from(ANSWER_POOL), min_size=1, max_size=9),
    st.sampled_from(["zero", "first"]),
    st.booleans(),
)
def test_fast_equals_reference(group: list[str], no_majority: str, cold_cache: bool) -> None:
    _assert_fast_equals_reference(group, no_majority, cold_cache)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(TRICKY), min_size=2, max_size=7), st.sampled_from(["zero", "first"]))
def test_fast_equals_reference_on_one_way_and_non_transitive_forms(group: list[str], no_majority: str) -> None:
    _assert_fast_equals_reference(group, no_majority, cold_cache=True)


# Constants around the same few values: equal ones in other notations, near misses inside and outside 1e-6.
CONSTANTS = [
    "$1$",
    "$1.0$",
    "$1.0000001$",
    "$1.001$",
    r"$\frac{1}{3}$",
    "0.333333",
    "0.3333",
    r"$\sqrt{2}$",
    "1.414214",
    "1.41",
    r"$2\pi$",
    "6.283185",
    r"$\frac{\sqrt{8}}{2}$",
    "$3+4i$",
    r"$\sqrt{-1}$",
    "-1",
    "$10^{6}$",
    "1000001",
    "$x^2 + 1$",
    "$(x+1)^2 - 2x$",
    "$6+9i$",
    r"$\sin^2 x + \cos^2 x$",
    "$x - x + 2$",
    "$2x$",
    r"$\frac{y}{y}$",
]
# Sets, intervals, tuples and relations around the same values, for the set and relation rules of the disproof.
STRUCTURES = [
    "$(1, 2)$",
    "$[1, 2]$",
    "$(1, 2]$",
    r"$\{1, 2\}$",
    r"$\{2, 1\}$",
    "$1, 2$",
    r"$(1, 2) \cup (2, 3)$",
    r"$(1, 3)$",
    r"$[1, \infty)$",
    r"$(-\infty, 1]$",
    r"$\{1\}$",
    "$x = 1$",
    "$1 = x$",
    "$x > 1$",
    "$1 < x < 2$",
    "$y = 2x + 1$",
    "$2x + 1$",
    r"$1 \pm \sqrt{2}$",
    r"$\{x, 1\}$",
]


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(CONSTANTS + STRUCTURES), st.sampled_from(CONSTANTS + STRUCTURES))
def test_the_disproof_never_hides_a_match(a_text: str, b_text: str) -> None:
    a, b = extract_raw(a_text), extract_raw(b_text)
    assert a is not None and b is not None
    if certainly_different(a, b):
        assert not equivalent_raw(a, b)


def test_the_disproof_settles_plain_values_and_leaves_the_rest_to_math_verify() -> None:
    def different(a_text: str, b_text: str) -> bool:
        a, b = extract_raw(a_text), extract_raw(b_text)
        assert a is not None and b is not None
        return certainly_different(a, b)

    assert different(r"$\frac{1}{3}$", "0.3") and different(r"$\frac{1}{3}$", "$x^2$")
    assert different("$(1, 3]$", "$(1, 3)$") and different("$(1, 3)$", "$(1, 4)$")
    assert different("$7$", r"$(0,9) \cup (9,36)$") and different("$x^2 + 1$", r"$[2, \infty)$")
    assert different(r"$\{1, 2, 3\}$", r"$\{1, 2\}$") and different(r"$\{1, 2\}$", r"$\{1, 5\}$")
    assert different(r"$\text{east}$", r"$\text{west}$") and different("$x$", "$y$")  # symbols: by name
    # Equal, or decided only by math-verify's special rules (rounding, percentages, assignments, solve()).
    for a_text, b_text in [
        (r"$\frac{1}{3}$", "0.333333"),
        (r"$2\%$", "$2$"),
        ("$x=2$", "$2$"),
        ("$x=2$", "$y=3$"),
        ("$(1, 2)$", r"$\{1, 2\}$"),
        (r"$\sin^2 x + \cos^2 x$", "$1$"),
        ("$x$", "$x$"),
    ]:
        assert not different(a_text, b_text), (a_text, b_text)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from([*STRUCTURES, "$1$", "$2$", "$0.5$"]), min_size=2, max_size=6))
def test_fast_equals_reference_on_sets_intervals_and_relations(group: list[str]) -> None:
    _assert_fast_equals_reference(group, "zero", cold_cache=True)
