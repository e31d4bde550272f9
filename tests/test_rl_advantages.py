"""Advantage estimators and KL against hand-computed numbers (serl-reference §4.2-4.4).

The batch throughout: 2 prompts × 4 samples, rewards [1, 0, 1, 1 | 0, 0, 1, 0], ragged response lengths
[3, 1, 2, 4 | 2, 3, 1, 2] (18 action tokens, width 4).
"""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from serl.rl import (
    compute_advantages,
    discounted_returns,
    effective_gamma,
    estimator_whitens,
    kl_estimate,
    masked_whiten,
    shape_rewards,
    token_level_rewards,
)

REWARDS = torch.tensor([1.0, 0, 1, 1, 0, 0, 1, 0])
LENGTHS = [3, 1, 2, 4, 2, 3, 1, 2]
MASK = torch.arange(4) < torch.tensor(LENGTHS)[:, None]
# a per-token KL that differs by position, so the order of the reverse cumulative sum matters: kl_t = 0.1·(t+1)
KL = 0.1 * (torch.arange(4) + 1.0).expand(8, 4) * MASK
BETA = 0.5

# r̃ by hand: group means 0.75 and 0.25; rloo baselines (3 − r)/3 and (1 − r)/3; unbiased group std 0.5 for both
SHAPED = {
    "reinforce": [1, 0, 1, 1, 0, 0, 1, 0],
    "rloo": [1 / 3, -1, 1 / 3, 1 / 3, -1 / 3, -1 / 3, 1, -1 / 3],
    "reinforce_baseline": [0.25, -0.75, 0.25, 0.25, -0.25, -0.25, 0.75, -0.25],
    "dr_grpo": [0.25, -0.75, 0.25, 0.25, -0.25, -0.25, 0.75, -0.25],
    "grpo": [0.5, -1.5, 0.5, 0.5, -0.5, -0.5, 1.5, -0.5],
}
WHITENED = {"reinforce": True, "rloo": True, "reinforce_baseline": True, "dr_grpo": False, "grpo": False}


def expected_advantages(shaped: list[float], kl_coef: float, whiten: bool, std_norm: bool = True) -> list[list[float]]:
    """A plain-Python restatement: A_t = r̃ − β·Σ_{t' ≥ t} kl_{t'}, then whitening over all 18 tokens."""
    rows = []
    for r, length in zip(shaped, LENGTHS, strict=True):
        kls = [0.1 * (t + 1) for t in range(length)]
        rows.append([r - kl_coef * sum(kls[t:]) for t in range(length)])
    if whiten:
        flat = [a for row in rows for a in row]
        mean, std = statistics.fmean(flat), math.sqrt(statistics.pvariance(flat))
        rows = [[(a - mean) / (std if std_norm else 1.0) for a in row] for row in rows]
    return rows


def as_rows(advantages: torch.Tensor) -> list[list[float]]:
    return [advantages[i, :length].tolist() for i, length in enumerate(LENGTHS)]


def assert_rows_close(actual: list[list[float]], expected: list[list[float]]) -> None:
    for got, want in zip(actual, expected, strict=True):
        assert got == pytest.approx(want, abs=1e-5)


def test_kl_estimators_by_hand():
    logp = torch.tensor([[0.0, -1.0, -2.0, 0.0]])
    ref = torch.tensor([[-0.5, -0.5, -2.0, 9.0]])  # δ = [0.5, −0.5, 0, (padding)]
    mask = torch.tensor([[True, True, True, False]])
    assert kl_estimate(logp, ref, mask, estimator="k1").tolist()[0] == pytest.approx([0.5, -0.5, 0, 0])
    assert kl_estimate(logp, ref, mask, estimator="k2").tolist()[0] == pytest.approx([0.125, 0.125, 0, 0])
    k3 = [math.exp(-0.5) - 0.5, math.exp(0.5) - 1.5, 0, 0]
    assert kl_estimate(logp, ref, mask, estimator="k3").tolist()[0] == pytest.approx(k3, abs=1e-7)
    with pytest.raises(ValueError, match="k1, k2 or k3"):
        kl_estimate(logp, ref, mask, estimator="k4")


@pytest.mark.parametrize("estimator", list(SHAPED))
def test_shaped_rewards_by_hand(estimator):
    got = shape_rewards(REWARDS, estimator=estimator, group_size=4)
    assert got.tolist() == pytest.approx(SHAPED[estimator], abs=1e-6)


def test_grpo_equal_rewards_give_zero_and_eps_is_1e_9():
    assert shape_rewards(torch.ones(4), estimator="grpo", group_size=4).tolist() == [0, 0, 0, 0]
    # std of [0, 1e-9] ≈ 7.07e-10, so the 1e-9 epsilon (OpenRLHF) is visible: (x − mean) / (std + 1e-9)
    tiny = shape_rewards(torch.tensor([0.0, 1e-9]), estimator="grpo", group_size=2)
    std = 1e-9 / math.sqrt(2)
    assert tiny[1].item() == pytest.approx(0.5e-9 / (std + 1e-9), rel=1e-4)


def test_group_size_errors_are_clear():
    with pytest.raises(ValueError, match="groups of 3"):
        shape_rewards(REWARDS, estimator="rloo", group_size=3)
    with pytest.raises(ValueError, match="at least 2 samples"):
        shape_rewards(REWARDS, estimator="grpo", group_size=1)
    with pytest.raises(ValueError, match="unknown advantage estimator"):
        shape_rewards(REWARDS, estimator="ppo", group_size=4)


@pytest.mark.parametrize("estimator", list(SHAPED))
@pytest.mark.parametrize("kl_coef", [0.0, BETA], ids=["no_kl", "kl_in_reward"])
def test_each_estimator_with_and_without_kl(estimator, kl_coef):
    advantages, returns = compute_advantages(REWARDS, MASK, KL, estimator=estimator, group_size=4, kl_coef=kl_coef)
    assert_rows_close(as_rows(advantages), expected_advantages(SHAPED[estimator], kl_coef, WHITENED[estimator]))
    assert (advantages[~MASK] == 0).all()
    # info['return'] = Σ_t R_t = r̃ − β·Σ_t kl_t
    expected_returns = [r - kl_coef * 0.1 * n * (n + 1) / 2 for r, n in zip(SHAPED[estimator], LENGTHS, strict=True)]
    assert returns.tolist() == pytest.approx(expected_returns, abs=1e-6)


def test_reinforce_whitening_literal_numbers():
    # 10 tokens carry 1 and 8 carry 0: mean 5/9, population var 20/81, so 1 → 4/√20 and 0 → −5/√20
    advantages, _ = compute_advantages(REWARDS, MASK, estimator="reinforce", group_size=4)
    assert advantages[0, :3].tolist() == pytest.approx([4 / math.sqrt(20)] * 3, abs=1e-6)
    assert advantages[1, :1].tolist() == pytest.approx([-5 / math.sqrt(20)], abs=1e-6)
    centred, _ = compute_advantages(REWARDS, MASK, estimator="reinforce", group_size=4, advantage_std_norm=False)
    assert centred[0, 0].item() == pytest.approx(4 / 9) and centred[1, 0].item() == pytest.approx(-5 / 9)


def test_kl_in_reward_literal_numbers():
    # sequence 0: kl [0.1, 0.2, 0.3], β 0.5, r 1 → R = [−0.05, −0.1, 0.85] → A = [0.7, 0.75, 0.85]
    advantages, returns = compute_advantages(
        REWARDS, MASK, KL, estimator="reinforce", group_size=4, kl_coef=BETA, whiten=False
    )
    assert advantages[0, :3].tolist() == pytest.approx([0.7, 0.75, 0.85], abs=1e-6)
    assert returns[0].item() == pytest.approx(0.7)


def test_rloo_whitening_switch():
    assert estimator_whitens("rloo", rloo_whiten=True) and not estimator_whitens("rloo", rloo_whiten=False)
    assert not estimator_whitens("grpo") and not estimator_whitens("dr_grpo") and estimator_whitens("reinforce")
    raw, _ = compute_advantages(REWARDS, MASK, estimator="rloo", group_size=4, rloo_whiten=False)
    assert as_rows(raw) == [[pytest.approx(r)] * n for r, n in zip(SHAPED["rloo"], LENGTHS, strict=True)]


def test_gamma_discounting_for_reinforce():
    # sequence 0 (3 tokens, reward 1 on the last): returns [γ², γ, 1]
    advantages, _ = compute_advantages(REWARDS, MASK, estimator="reinforce", group_size=4, gamma=0.5, whiten=False)
    assert advantages[0, :3].tolist() == pytest.approx([0.25, 0.5, 1.0])
    assert advantages[3].tolist() == pytest.approx([0.125, 0.25, 0.5, 1.0])
    token_rewards = torch.tensor([[1.0, 2.0, 3.0]])
    assert discounted_returns(token_rewards, torch.ones(1, 3), gamma=0.5).tolist()[0] == pytest.approx([2.75, 3.5, 3])


@pytest.mark.parametrize("estimator", ["rloo", "reinforce_baseline", "grpo", "dr_grpo"])
def test_gamma_is_forced_to_one_for_grouped_estimators(estimator):
    with pytest.warns(UserWarning, match="forced to 1.0"):
        discounted, _ = compute_advantages(
            REWARDS, MASK, KL, estimator=estimator, group_size=4, kl_coef=BETA, gamma=0.9
        )
    undiscounted, _ = compute_advantages(REWARDS, MASK, KL, estimator=estimator, group_size=4, kl_coef=BETA)
    assert torch.equal(discounted, undiscounted)
    assert effective_gamma("reinforce", 0.9) == 0.9


def test_reward_clip_applies_after_the_baseline():
    rewards = torch.tensor([30.0, -30.0, 4.0, 0.0])
    mask = torch.ones(4, 2, dtype=torch.bool)
    clipped = token_level_rewards(rewards, mask, reward_clip=10.0)
    assert clipped[:, 1].tolist() == [10, -10, 4, 0] and clipped[:, 0].tolist() == [0, 0, 0, 0]
    assert token_level_rewards(rewards, mask, reward_clip=None)[:, 1].tolist() == [30, -30, 4, 0]
    # reinforce_baseline: group mean 1 → r̃ = [29, −31, 3, −1] → clip → [10, −10, 3, −1]
    advantages, _ = compute_advantages(
        rewards, mask, estimator="reinforce_baseline", group_size=4, reward_clip=10.0, whiten=False
    )
    assert advantages[:, 0].tolist() == [10, -10, 3, -1]


def test_reward_lands_on_the_last_action_and_rows_without_actions_get_nothing():
    mask = torch.tensor([[True, True, False], [False, False, False]])
    rewards = token_level_rewards(torch.tensor([2.0, 5.0]), mask, torch.full((2, 3), 0.1), kl_coef=1.0)
    assert rewards.tolist()[0] == pytest.approx([-0.1, 1.9, 0.0])
    assert rewards.tolist()[1] == [0, 0, 0]


def test_whitening_over_a_subset_differs_from_the_rollout_scope():
    # whiten_scope="train": the statistics come from the kept groups only
    raw, _ = compute_advantages(REWARDS, MASK, estimator="reinforce_baseline", group_size=4, whiten=False)
    rollout, _ = compute_advantages(REWARDS, MASK, estimator="reinforce_baseline", group_size=4)
    group_one = masked_whiten(raw[:4], MASK[:4])
    assert abs(group_one[0, 0].item() - rollout[0, 0].item()) > 0.1
    flat = [0.25] * 3 + [-0.75] + [0.25] * 2 + [0.25] * 4  # group one's tokens
    mean, std = statistics.fmean(flat), math.sqrt(statistics.pvariance(flat))
    assert group_one[0, 0].item() == pytest.approx((0.25 - mean) / std, abs=1e-6)
