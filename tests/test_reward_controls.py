"""Reward controls: the shuffle keeps the kept groups' rewards as a multiset and leaves the others; invert flips."""

from __future__ import annotations

from collections import Counter

import pytest

from serl.reward.controls import apply_control


def test_none_returns_a_copy() -> None:
    rewards = [[1.0, 0.0], [0.0, 0.0]]
    out = apply_control(rewards, [True, False], "none", seed=0)
    assert out == rewards and out[0] is not rewards[0]


def test_invert_flips_every_reward() -> None:
    assert apply_control([[1.0, 0.0, 1.0], [0.0]], [True, False], "invert", seed=0) == [[0.0, 1.0, 0.0], [1.0]]


def test_shuffle_permutes_across_kept_groups_only() -> None:
    rewards = [[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0]]
    kept = [True, False, True, True]
    out = apply_control(rewards, kept, "shuffle", seed=3)
    assert out[1] == rewards[1]  # a rejected group is never trained on: untouched
    assert [len(g) for g in out] == [4, 4, 4, 4]
    before = Counter(r for g, k in zip(rewards, kept, strict=True) if k for r in g)
    after = Counter(r for g, k in zip(out, kept, strict=True) if k for r in g)
    assert before == after == Counter({0.0: 7, 1.0: 5})  # same rewards, so the same batch mean (5/12)
    assert [out[g] for g in (0, 2, 3)] != [rewards[g] for g in (0, 2, 3)]  # this seed moves them
    assert apply_control(rewards, kept, "shuffle", seed=3) == out  # deterministic
    assert apply_control(rewards, kept, "shuffle", seed=4) != out


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown reward control 'noise'"):
        apply_control([[1.0]], [True], "noise", seed=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="1 filter decisions for 2 groups"):
        apply_control([[1.0], [0.0]], [True], "shuffle", seed=0)
