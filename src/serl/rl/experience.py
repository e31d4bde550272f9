"""Experience: everything the policy update needs about a set of rollout sequences, kept per sequence so groups can be
selected after scoring (the difficulty filter) and concatenated across rollouts (accumulation).

Token ids are stored unpadded; per-token tensors are right-padded to the widest response. Rows [g·n, (g+1)·n) are the
n samples of group g.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from serl.rl.advantages import compute_advantages, estimator_whitens
from serl.rl.kl import kl_estimate

if TYPE_CHECKING:
    from serl.config import AlgoConfig


@dataclass
class Experience:
    prompt_ids: list[list[int]]
    response_ids: list[list[int]]
    action_mask: torch.Tensor  # [N, R] bool
    old_logprobs: torch.Tensor | None  # [N, R] policy log-probs at rollout time; None: deferred to training
    ref_logprobs: torch.Tensor | None  # [N, R] kept only when KL is a loss term
    kl: torch.Tensor  # [N, R] per-token KL estimate old vs reference (zeros without a reference)
    advantages: torch.Tensor  # [N, R]
    rewards: torch.Tensor  # [N] raw rewards, before any baseline
    returns: torch.Tensor  # [N] Σ_t of the per-token rewards
    group_size: int
    whiten_pending: bool = False  # advantages still to be whitened over the training batch (whiten_scope="train")
    policy_version: int | None = None  # with deferred old log-probs: the trainer's optimizer steps at rollout time

    def __len__(self) -> int:
        return len(self.prompt_ids)

    def to_state(self) -> dict[str, Any]:
        """Plain data (tensors, token lists, numbers) for a checkpoint."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Experience:
        return cls(**state)

    @property
    def num_groups(self) -> int:
        return len(self) // self.group_size

    def select(self, rows: Sequence[int] | torch.Tensor) -> Experience:
        """The given sequences, in the given order (tensors sliced, token lists copied by reference)."""
        index = torch.as_tensor(rows, dtype=torch.long)
        picked = index.tolist()
        return replace(
            self,
            prompt_ids=[self.prompt_ids[i] for i in picked],
            response_ids=[self.response_ids[i] for i in picked],
            action_mask=self.action_mask[index],
            old_logprobs=None if self.old_logprobs is None else self.old_logprobs[index],
            ref_logprobs=None if self.ref_logprobs is None else self.ref_logprobs[index],
            kl=self.kl[index],
            advantages=self.advantages[index],
            rewards=self.rewards[index],
            returns=self.returns[index],
        )

    def select_groups(self, groups: Sequence[int], group_size: int | None = None) -> Experience:
        """The whole groups with these indices; ``group_size`` is only checked against the stored one."""
        n = self.group_size
        if group_size is not None and group_size != n:
            raise ValueError(f"group_size={group_size} but this experience holds groups of {n}")
        for g in groups:
            if not 0 <= g < self.num_groups:
                raise IndexError(f"group {g} out of range: this experience has {self.num_groups} groups")
        return self.select([g * n + k for g in groups for k in range(n)])

    @staticmethod
    def concat(experiences: Sequence[Experience]) -> Experience:
        """One experience holding all sequences in order; per-token tensors are re-padded to the widest response."""
        if not experiences:
            raise ValueError("Experience.concat needs at least one experience")
        first = experiences[0]
        for exp in experiences[1:]:
            if exp.group_size != first.group_size or exp.whiten_pending != first.whiten_pending:
                raise ValueError("cannot concatenate experiences with different group_size or whiten_pending")
            if (exp.ref_logprobs is None) != (first.ref_logprobs is None):
                raise ValueError("cannot concatenate experiences with and without reference log-probs")
            if (exp.old_logprobs is None) != (first.old_logprobs is None) or exp.policy_version != first.policy_version:
                raise ValueError(
                    "cannot concatenate experiences with deferred old log-probs made under different policies "
                    "(groups carried over an update need old log-probs scored at rollout time)"
                )
        width = max(exp.action_mask.shape[1] for exp in experiences)

        def cat(name: str) -> torch.Tensor:
            return torch.cat([F.pad(getattr(exp, name), (0, width - exp.action_mask.shape[1])) for exp in experiences])

        return Experience(
            prompt_ids=[ids for exp in experiences for ids in exp.prompt_ids],
            response_ids=[ids for exp in experiences for ids in exp.response_ids],
            action_mask=cat("action_mask"),
            old_logprobs=None if first.old_logprobs is None else cat("old_logprobs"),
            ref_logprobs=None if first.ref_logprobs is None else cat("ref_logprobs"),
            kl=cat("kl"),
            advantages=cat("advantages"),
            rewards=torch.cat([exp.rewards for exp in experiences]),
            returns=torch.cat([exp.returns for exp in experiences]),
            group_size=first.group_size,
            whiten_pending=first.whiten_pending,
            policy_version=first.policy_version,
        )


def token_rows(
    prompt_ids: Sequence[Sequence[int]],
    response_ids: Sequence[Sequence[int]],
    rewards: torch.Tensor,
    group_size: int,
) -> tuple[list[list[int]], list[list[int]], torch.Tensor]:
    """Checked rows of a rollout: (prompts, responses) as int lists and the [N, R] action mask of the responses."""
    count = len(prompt_ids)
    if count == 0 or rewards.numel() != count or len(response_ids) != count:
        raise ValueError(
            f"make_experience needs as many prompts, responses and rewards (got {count}, {len(response_ids)}, "
            f"{rewards.numel()}), at least one"
        )
    if count % group_size:
        raise ValueError(f"{count} sequences do not split into groups of {group_size}")
    if not torch.isfinite(rewards).all():
        raise ValueError("rewards must be finite; give a failed or unparsable response reward 0")
    prompts = [[int(t) for t in ids] for ids in prompt_ids]
    responses = [[int(t) for t in ids] for ids in response_ids]
    lengths = torch.tensor([len(r) for r in responses])
    return prompts, responses, torch.arange(int(lengths.max())) < lengths[:, None]


def assemble_experience(
    prompts: list[list[int]],
    responses: list[list[int]],
    action_mask: torch.Tensor,
    rewards: torch.Tensor,
    old_logprobs: torch.Tensor | None,
    ref_logprobs: torch.Tensor | None,
    *,
    algo: AlgoConfig,
    group_size: int,
) -> Experience:
    """The experience of a scored rollout: per-token KL (when there are reference log-probs), advantages and returns
    as ALGO computes them (serl-reference §4). KL goes into the per-token reward, or stays out of it as a loss term
    (`use_kl_loss`, which keeps the reference log-probs for the update)."""
    kl = torch.zeros(action_mask.shape, dtype=torch.float32)
    if ref_logprobs is not None:
        kl = kl_estimate(old_logprobs, ref_logprobs, action_mask, estimator=algo.kl_estimator)
    advantages, returns = compute_advantages(
        rewards,
        action_mask,
        None if algo.use_kl_loss else kl,
        estimator=algo.advantage_estimator,
        group_size=group_size,
        kl_coef=algo.kl_coef,
        gamma=algo.gamma,
        reward_clip=algo.reward_clip,
        whiten=algo.whiten_scope == "rollout",
        advantage_std_norm=algo.advantage_std_norm,
        rloo_whiten=algo.rloo_whiten,
    )
    whitens = estimator_whitens(algo.advantage_estimator, rloo_whiten=algo.rloo_whiten)
    return Experience(
        prompt_ids=prompts,
        response_ids=responses,
        action_mask=action_mask,
        old_logprobs=old_logprobs,
        ref_logprobs=ref_logprobs if algo.use_kl_loss else None,
        kl=kl,
        advantages=advantages,
        rewards=rewards,
        returns=returns,
        group_size=group_size,
        whiten_pending=whitens and algo.whiten_scope == "train",
    )
