"""How the HF engine's static decoder splits a batch into KV-cache segments (pure function, no model)."""

from __future__ import annotations

import itertools

import pytest

from serl.rollout import decoders
from serl.rollout.decoders import SEGMENT_OVERHEAD, split_by_length


def test_a_long_prompt_gets_its_own_cache() -> None:
    # cost = rows x (longest + reserve / 2) + 256 per range, reserve 64:
    #   one range        12 x 332 + 256                       = 4240
    #   [10, 10] [300]   8 x 42 + 256 + 4 x 332 + 256         = 2176  <- best
    #   [10] [10] [300]  4 x 42 + 256 + 4 x 42 + 256 + 1584   = 2432
    #   [10] [10, 300]   4 x 42 + 256 + 8 x 332 + 256         = 3336
    assert SEGMENT_OVERHEAD == 256
    assert split_by_length([10, 10, 300], [4, 4, 4], reserve=64) == [(0, 2), (2, 3)]


def test_similar_lengths_share_one_cache() -> None:
    # one range: 2 x 12 + 256 = 280; two ranges: 10 + 256 + 12 + 256 = 534
    assert split_by_length([10, 12], [1, 1], reserve=0) == [(0, 2)]
    assert split_by_length([57], [4], reserve=128) == [(0, 1)]
    assert split_by_length([], [], reserve=128) == [(0, 0)]


def test_ranges_cover_every_prompt_once_in_order() -> None:
    lengths = [57, 60, 64, 70, 90, 110, 135, 167, 210, 251, 358, 399]
    ranges = split_by_length(lengths, [4] * len(lengths), reserve=128)
    assert ranges[0][0] == 0 and ranges[-1][1] == len(lengths)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges)) and all(lo < hi for lo, hi in ranges)
    assert len(ranges) > 1


def test_the_ablation_switch_keeps_one_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decoders, "SEGMENTS", False)
    assert split_by_length([10, 10, 300], [4, 4, 4], reserve=64) == [(0, 3)]
