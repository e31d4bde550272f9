"""The collapse guard's bookkeeping, by hand: new bests, a margin, patience, a rollback, and its checkpoint state."""

from __future__ import annotations

from serl.trainer.canary import CanaryGuard


def test_acts_after_patience_evaluations_more_than_the_margin_below_the_best() -> None:
    guard = CanaryGuard(patience=2, margin=0.05)
    verdicts = [guard.observe(step, acc) for step, acc in enumerate([0.20, 0.30, 0.26, 0.24, 0.27, 0.24, 0.20])]
    # 0.26 and 0.27 lie within the margin of 0.30 (not below it); 0.24 breaks the margin, 0.27 resets the count
    assert verdicts == ["best", "best", "ok", "ok", "ok", "ok", "act"]
    assert (guard.best, guard.best_step, guard.below) == (0.30, 1, 2)


def test_watch_only_never_acts_and_a_rollback_restarts_the_count() -> None:
    watch = CanaryGuard(patience=0, margin=0.0)
    assert [watch.observe(s, a) for s, a in enumerate([0.5, 0.1, 0.1, 0.1])] == ["best", "ok", "ok", "ok"]
    assert watch.below == 3
    guard = CanaryGuard(patience=1, margin=0.0)
    assert [guard.observe(s, a) for s, a in enumerate([0.5, 0.4])] == ["best", "act"]
    guard.rolled_back()
    assert (guard.below, guard.rollbacks) == (0, 1)
    assert guard.observe(2, 0.5) == "ok"  # equal to the best: not below, not a new best


def test_state_round_trip_leaves_the_settings_to_the_config() -> None:
    guard = CanaryGuard(patience=3, margin=0.1)
    guard.observe(4, 0.4)
    guard.observe(5, 0.2)
    state = guard.state_dict()
    assert state == {"best": 0.4, "best_step": 4, "below": 1, "rollbacks": 0}
    other = CanaryGuard(patience=5, margin=0.2)
    other.load_state_dict(state)
    assert (other.patience, other.margin, other.best, other.below) == (5, 0.2, 0.4, 1)
    assert guard.metrics(0.2) == {"pass@1": 0.2, "best": 0.4, "best_step": 4, "below_best": 1, "rollbacks": 0}
