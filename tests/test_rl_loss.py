"""PPO-clip loss with a deliberately shifted old log-prob, the aggregation modes, and the LR schedule, by hand."""

from __future__ import annotations

import math

import pytest
import torch

from serl.rl import aggregate_loss, clipped_policy_loss, lr_multiplier
from serl.rl.schedule import cosine_schedule

# logp = 0 everywhere and old = −shift, so ratio = exp(shift)
SHIFT = torch.tensor([0.5, -0.5, 0.1, -0.1, -0.5, 0.5])
ADV = torch.tensor([1.0, 1.0, -1.0, -1.0, -1.0, -1.0])
E = math.exp


def run_loss(eps_low: float, eps_high: float):
    logp = torch.zeros(6, requires_grad=True)
    loss, ratio, clipped = clipped_policy_loss(logp, -SHIFT, ADV, eps_clip_low=eps_low, eps_clip_high=eps_high)
    loss.sum().backward()
    return loss.detach(), ratio.detach(), clipped, logp.grad


def test_ratio_and_clipping_by_hand():
    loss, ratio, clipped, grad = run_loss(0.2, 0.2)
    assert ratio.tolist() == pytest.approx([E(0.5), E(-0.5), E(0.1), E(-0.1), E(-0.5), E(0.5)])
    # token 0: A>0, ρ=1.65 > 1.2 → capped at 1.2; token 4: A<0, ρ=0.61 < 0.8 → capped at 0.8;
    # token 5: A<0, ρ=1.65 — the pessimistic side is never clipped
    assert loss.tolist() == pytest.approx([-1.2, -E(-0.5), E(0.1), E(-0.1), 0.8, E(0.5)])
    assert clipped.tolist() == [True, False, False, False, True, False]
    assert clipped.float().mean().item() == pytest.approx(2 / 6)  # the clip fraction
    # clipped tokens contribute no gradient; the others −ρ·A
    expected_grad = [0.0, -E(-0.5), E(0.1), E(-0.1), 0.0, E(0.5)]
    assert grad.tolist() == pytest.approx(expected_grad)


def test_clip_higher_uses_separate_bounds():
    loss, _, clipped, _ = run_loss(0.1, 0.28)
    assert loss[0].item() == pytest.approx(-1.28)  # 1 + ε_high
    assert loss[4].item() == pytest.approx(0.9)  # 1 − ε_low
    assert clipped.tolist() == [True, False, False, False, True, False]


def test_ratio_is_one_when_nothing_shifted():
    logp = torch.randn(3, 5)
    loss, ratio, clipped = clipped_policy_loss(logp, logp.clone(), torch.ones(3, 5))
    assert torch.allclose(ratio, torch.ones(3, 5)) and not clipped.any()
    assert torch.allclose(loss, -torch.ones(3, 5))


PER_TOKEN = torch.tensor([[1.0, 2.0, 3.0], [4.0, 99.0, 99.0]])
MASK = torch.tensor([[True, True, True], [True, False, False]])


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("token_mean_micro", (1 + 2 + 3 + 4) / 4 / 2),  # token mean 2.5, one of 2 micro-batches
        ("token_mean_global", (1 + 2 + 3 + 4) / 8),  # 8 action tokens in the whole step
        ("seq_mean_token_mean", (2 + 4) / 4),  # sequence means 2 and 4, 4 sequences in the step
    ],
)
def test_aggregation_modes_by_hand(mode, expected):
    got = aggregate_loss(PER_TOKEN, MASK, mode=mode, step_tokens=8, step_sequences=4, step_micro_batches=2)
    assert got.item() == pytest.approx(expected)


def test_aggregation_rejects_unknown_mode():
    with pytest.raises(ValueError, match="token_mean_micro"):
        aggregate_loss(PER_TOKEN, MASK, mode="mean", step_tokens=4, step_sequences=2, step_micro_batches=1)


def test_micro_shares_add_up_to_the_global_token_mean():
    # two micro-batches of ragged sequences: the shares sum to the token mean over the whole step
    a, b = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 0.0], [5.0, 7.0]])
    mask_a, mask_b = torch.tensor([[True, True]]), torch.tensor([[True, False], [True, True]])
    shares = sum(
        aggregate_loss(x, m, mode="token_mean_global", step_tokens=5, step_sequences=3, step_micro_batches=2)
        for x, m in ((a, mask_a), (b, mask_b))
    )
    assert shares.item() == pytest.approx((1 + 2 + 3 + 5 + 7) / 5)
    micro = sum(
        aggregate_loss(x, m, mode="token_mean_micro", step_tokens=5, step_sequences=3, step_micro_batches=2)
        for x, m in ((a, mask_a), (b, mask_b))
    )
    assert micro.item() == pytest.approx((1.5 + 5.0) / 2)  # the reference: the mean of per-micro token means


def test_schedule_values_by_hand():
    # total 10, warmup ceil(10·0.2) = 2: lr 0 on the first step, linear warmup, half cosine to 0.1
    kw = {"warmup_steps": 2, "total_steps": 10, "min_lr_ratio": 0.1}
    assert [lr_multiplier(s, **kw) for s in (0, 1, 2)] == pytest.approx([0.0, 0.5, 1.0])
    assert lr_multiplier(6, **kw) == pytest.approx(0.5 * 0.9 + 0.1)
    assert lr_multiplier(10, **kw) == pytest.approx(0.1)


def test_schedule_drives_the_optimizer():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=2.0)
    schedule = cosine_schedule(optimizer, total_steps=10, warmup_ratio=0.2, min_lr_ratio=0.1)
    seen = []
    for _ in range(11):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert seen[:3] == pytest.approx([0.0, 1.0, 2.0]) and seen[10] == pytest.approx(0.2)
    with pytest.raises(ValueError, match=">= 1"):
        cosine_schedule(optimizer, total_steps=0, warmup_ratio=0.0, min_lr_ratio=0.1)
