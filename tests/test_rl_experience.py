"""Experience selection (the difficulty filter keeps whole groups) and concatenation (accumulation across rollouts)."""

from __future__ import annotations

import pytest
import torch

from serl.rl import Experience


def make_experience(lengths: list[int], offset: float, group_size: int = 2, whiten_pending: bool = False) -> Experience:
    width = max(lengths)
    mask = torch.arange(width) < torch.tensor(lengths)[:, None]
    values = (offset + torch.arange(len(lengths), dtype=torch.float32))[:, None].expand(-1, width) * mask
    return Experience(
        prompt_ids=[[100 + i] for i in range(len(lengths))],
        response_ids=[[7] * n for n in lengths],
        action_mask=mask,
        old_logprobs=-values,
        ref_logprobs=None,
        kl=values / 10,
        advantages=values,
        rewards=offset + torch.arange(len(lengths), dtype=torch.float32),
        returns=torch.zeros(len(lengths)),
        group_size=group_size,
        whiten_pending=whiten_pending,
    )


def test_select_groups_keeps_whole_groups_in_order():
    exp = make_experience([1, 2, 3, 4, 5, 6], offset=0.0)
    kept = exp.select_groups([2, 0], group_size=2)
    assert kept.prompt_ids == [[104], [105], [100], [101]]
    assert kept.rewards.tolist() == [4, 5, 0, 1]
    assert kept.action_mask.sum(-1).tolist() == [5, 6, 1, 2]
    assert kept.advantages[0, :5].tolist() == [4] * 5 and len(kept) == 4 and kept.num_groups == 2


def test_select_groups_rejects_bad_indices_and_sizes():
    exp = make_experience([1, 2, 3, 4], offset=0.0)
    with pytest.raises(IndexError, match="2 groups"):
        exp.select_groups([2])
    with pytest.raises(ValueError, match="groups of 2"):
        exp.select_groups([0], group_size=4)


def test_concat_repads_per_token_tensors_to_the_widest_response():
    short, long = make_experience([1, 2], offset=0.0), make_experience([5, 3], offset=10.0)
    both = Experience.concat([short, long])
    assert both.action_mask.shape == (4, 5)
    assert both.action_mask.sum(-1).tolist() == [1, 2, 5, 3]
    assert both.advantages[1].tolist() == [1, 1, 0, 0, 0]  # right-padded with zeros
    assert both.old_logprobs[2].tolist() == [-10] * 5
    assert both.rewards.tolist() == [0, 1, 10, 11] and both.prompt_ids[2] == [100]


def test_concat_refuses_mixed_experiences():
    with pytest.raises(ValueError, match="at least one"):
        Experience.concat([])
    with pytest.raises(ValueError, match="group_size"):
        Experience.concat([make_experience([1, 2], 0.0), make_experience([1, 2, 3], 0.0, group_size=3)])
    with pytest.raises(ValueError, match="whiten_pending"):
        Experience.concat([make_experience([1, 2], 0.0), make_experience([1, 2], 0.0, whiten_pending=True)])


def test_experience_survives_a_checkpoint(tmp_path):
    from serl.trainer.checkpoint import load_checkpoint, save_checkpoint

    # the training loop checkpoints leftover passing groups: tensors to safetensors, token ids to JSON, no pickle
    exp = make_experience([1, 3], offset=1.0)
    path = save_checkpoint(tmp_path, 1, {}, {"carried": [exp.to_state()]}, keep=1)
    loaded = Experience.from_state(load_checkpoint(path)[1]["carried"][0])
    assert loaded.response_ids == exp.response_ids and loaded.ref_logprobs is None
    assert all(torch.equal(getattr(loaded, k), getattr(exp, k)) for k in ("action_mask", "old_logprobs", "advantages"))
    assert loaded.action_mask.dtype == torch.bool and loaded.group_size == 2
