"""Pathological answers, threads and worker processes: the reward always ends, within its time limit."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time

import pytest

from serl.reward import gt_reward, gt_rewards, is_equivalent, majority_vote, score_groups
from serl.reward.limits import ScoringTimeout, time_limit
from serl.reward.pool import map_isolated

TIMEOUT_S = 1.0
PATHOLOGICAL = {
    "power tower": r"The answer is $9^9^9^9^9$",
    "boxed power tower": r"\boxed{9^{9^{9^{9^{9}}}}}",
    "100 kB response": " ".join(["step", "17", "$y$", "{", "so"] * 5000)[:100_000],
    "100 kB of digits": "1" * 100_000,
    "nested braces": "\\boxed{" + "{" * 5000 + "1" + "}" * 5000 + "}",
    "nested fractions": "$" + "\\frac{1}{" * 2000 + "3" + "}" * 2000 + "$",
    "lone surrogates": "The answer is \ud800\udfff \\boxed{1\ud800}",
    "invalid utf-8": b"\xff\xfe answer \\boxed{\xc3\x28} \xed\xa0\x80".decode("utf-8", "replace"),
}
GOOD = [r"\boxed{2}", "so it is 2", "$2$"]


@pytest.mark.parametrize("name", list(PATHOLOGICAL))
def test_pathological_answer_in_a_group(name: str) -> None:
    started = time.monotonic()
    vote = majority_vote([PATHOLOGICAL[name], *GOOD], timeout_s=TIMEOUT_S)
    assert time.monotonic() - started < 5 * TIMEOUT_S
    assert vote.rewards == [0.0, 1.0, 1.0, 1.0]  # the pathological one is out, the others still agree
    assert vote.majority_answer == "2"


def test_all_pathological_answers_in_one_group_both_methods() -> None:
    timeout_s = 0.5
    for method in ("fast", "reference"):
        started = time.monotonic()
        vote = majority_vote([*PATHOLOGICAL.values(), *GOOD], timeout_s=timeout_s, method=method)  # type: ignore[arg-type]
        assert time.monotonic() - started < 5 * timeout_s, method
        assert vote.timed_out and len(vote.rewards) == len(PATHOLOGICAL) + len(GOOD)


def test_ground_truth_and_equivalence_on_pathological_answers() -> None:
    timeout_s = 0.5
    for text in PATHOLOGICAL.values():
        started = time.monotonic()
        assert gt_reward(text, "2", timeout_s=timeout_s) == 0.0
        assert not is_equivalent(text, "$3$", timeout_s=timeout_s)
        assert time.monotonic() - started < 2 * 5 * timeout_s  # two calls
    assert gt_reward(r"\boxed{2}", PATHOLOGICAL["nested braces"], timeout_s=timeout_s) == 0.0  # bad gold: 0, not 1


def test_pathological_groups_in_the_process_pool() -> None:
    timeout_s = TIMEOUT_S
    groups = [[text, *GOOD] for text in PATHOLOGICAL.values()] + [[*PATHOLOGICAL.values()]]
    started = time.monotonic()
    votes = score_groups(groups, num_workers=2, timeout_s=timeout_s)
    elapsed = time.monotonic() - started
    # 9 groups on 2 workers, each bounded by 5 × timeout_s (budget 3 × timeout_s, then the worker is killed)
    assert elapsed < 5 * timeout_s * len(groups) / 2
    assert [vote.rewards for vote in votes[:-1]] == [[0.0, 1.0, 1.0, 1.0]] * len(PATHOLOGICAL)
    assert multiprocessing.active_children() == []


def test_calls_from_a_thread_run_in_a_killable_worker() -> None:
    results: dict[str, object] = {}

    def work() -> None:
        results["vote"] = majority_vote([PATHOLOGICAL["nested braces"], *GOOD], timeout_s=TIMEOUT_S)
        results["equivalent"] = is_equivalent("$x=2$", "$2$")
        results["gt"] = gt_reward("the answer is 7", "7")

    started = time.monotonic()
    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert time.monotonic() - started < 5 * TIMEOUT_S + 3  # plus the start of three worker processes
    assert results["vote"].rewards == [0.0, 1.0, 1.0, 1.0]  # type: ignore[attr-defined]
    assert results["equivalent"] is True
    assert results["gt"] == 1.0
    assert multiprocessing.active_children() == []


def test_pool_kills_a_stuck_worker_and_replaces_it() -> None:
    started = time.monotonic()
    results = map_isolated(time.sleep, [0.01, 60, 0.01, 0.01], timeout_s=1.0, on_timeout=lambda s: "killed")
    assert results == [None, "killed", None, None]
    assert time.monotonic() - started < 10
    assert multiprocessing.active_children() == []


def test_pool_survives_a_worker_that_dies() -> None:
    assert map_isolated(os._exit, [3], timeout_s=5.0, on_timeout=lambda code: f"died {code}") == ["died 3"]
    assert multiprocessing.active_children() == []


def test_pool_reraises_a_bug_and_leaves_no_process() -> None:
    with pytest.raises(RuntimeError, match="ValueError"):
        map_isolated(int, ["1", "not a number", "3"], timeout_s=5.0, on_timeout=lambda _: 0, num_workers=2)
    assert multiprocessing.active_children() == []


def test_gt_rewards_pool_matches_in_process() -> None:
    responses = [r"\boxed{7}", "it is 8", PATHOLOGICAL["power tower"], r"\boxed{\frac{1}{2}}", ""]
    labels = ["7", "7", "7", "0.5", "3"]
    expected = [1.0, 0.0, 0.0, 1.0, 0.0]
    assert gt_rewards(responses, labels, num_workers=0) == expected
    assert gt_rewards(responses, labels, num_workers=2) == expected
    assert multiprocessing.active_children() == []


def test_an_outer_alarm_survives_reward_calls() -> None:
    fired: list[bool] = []
    previous = signal.signal(signal.SIGALRM, lambda *_: fired.append(True))
    try:
        signal.setitimer(signal.ITIMER_REAL, 30.0)
        majority_vote([r"\boxed{1}", "1"])
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 20.0 < remaining < 30.0  # still armed, minus the time spent
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        time.sleep(0.2)
        assert fired == [True]  # and the caller's own handler is back
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class _SlowFinalizer:
    def __del__(self) -> None:
        time.sleep(0.3)  # the timer fires here, where an exception cannot propagate


def test_a_timeout_inside_a_finalizer_is_dropped_and_the_work_still_stops() -> None:
    seen: list[object] = []
    previous_hook = sys.unraisablehook
    sys.unraisablehook = seen.append
    started = time.monotonic()
    try:
        with pytest.raises(ScoringTimeout), time_limit(0.1):
            _SlowFinalizer()  # dropped at once: __del__ runs (and is interrupted) right here
            while True:  # the re-fire reaches the body after the finalizer swallowed the first one
                pass
    finally:
        sys.unraisablehook = previous_hook
    assert time.monotonic() - started < 2.0
    assert [u for u in seen if isinstance(getattr(u, "exc_value", None), ScoringTimeout)] == []
    assert sys.unraisablehook is previous_hook


def test_other_unraisable_exceptions_still_reach_the_hook() -> None:
    class BrokenFinalizer:
        def __del__(self) -> None:
            raise ValueError("finalizer bug")

    seen: list[object] = []
    previous_hook = sys.unraisablehook
    sys.unraisablehook = seen.append
    try:
        with time_limit(5.0):
            BrokenFinalizer()
    finally:
        sys.unraisablehook = previous_hook
    assert [type(u.exc_value) for u in seen] == [ValueError]
