"""PolicyTrainer: turns scored rollouts into an Experience (old and reference log-probs, KL, advantages) and runs the
PPO-clip update on it with micro-batches, AdamW, grad-norm clipping and the cosine schedule (serl-reference §4-5).

Usage by the training loop::

    trainer = PolicyTrainer(model, ref_model, algo=cfg.algo, train=cfg.train, pad_token_id=tok.pad_token_id,
                            total_optimizer_steps=2000)
    exp = trainer.make_experience(prompt_ids, response_ids, rewards, group_size=n)  # whole rollout
    kept = Experience.concat([exp.select_groups([g]) for g in passing_groups])  # difficulty filter
    metrics = trainer.train(kept)
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from serl.parallel import Parallel
from serl.rl.choices import AUTOCAST_DTYPES, ESTIMATORS, KL_ESTIMATORS, LOSS_AGGREGATIONS, WHITEN_SCOPES, check_choice
from serl.rl.experience import Experience, assemble_experience, token_rows
from serl.rl.kl import kl_estimate
from serl.rl.logprobs import plain_output_weight, response_logprobs
from serl.rl.loss import aggregate_loss, clipped_policy_loss
from serl.rl.masked import masked_mean, masked_whiten
from serl.rl.optim import load_optimizer_state, make_optimizer, optimizer_state
from serl.rl.prefix import shared_prompt_logprobs
from serl.rl.schedule import cosine_schedule
from serl.rl.sequences import build_sequences

if TYPE_CHECKING:
    from serl.config import AlgoConfig, TrainConfig

# running sums over one train() call, turned into averages by _summary
TOTALS = (
    "loss",
    "policy_loss",
    "kl_loss",
    "grad_norm",
    "steps",
    "nonfinite_steps",
    "tokens",
    "clipped",
    "entropy",
    "ratio",
)


class PolicyTrainer:
    def __init__(
        self,
        model: nn.Module,
        ref_model: nn.Module | None = None,
        *,
        algo: AlgoConfig,
        train: TrainConfig,
        pad_token_id: int,
        total_optimizer_steps: int,
        temperature: float = 1.0,
        reference_context: Callable[[], AbstractContextManager] | None = None,
        parallel: Parallel | None = None,
        defer_old_logprobs: bool = False,
        forward_batch_size: int | None = None,
        logprob_chunk_tokens: int = 256,
    ) -> None:
        """The update as ALGO (estimator, KL, clipping, loss aggregation) and TRAIN (batch sizes, optimizer, schedule,
        seed, prompt sharing) configure it; ``temperature`` is the rollout's (log-probs of logits / T). ``parallel``
        (default: one plain process) shares the work out over the ranks of a launch; ``train_batch_size`` (sequences
        per optimizer step) stays global. ``forward_batch_size`` (default ``micro_train_batch_size``) is the batch
        of the gradient-free log-prob passes.

        ``ref_model`` None with ``algo.kl_coef`` > 0 needs ``reference_context``: a factory of a context inside which
        ``model`` itself is the reference (e.g. a PEFT model's ``disable_adapter``); ``kl_coef`` = 0 skips it.

        ``defer_old_logprobs``: with ``kl_coef`` = 0 nothing needs the rollout policy's log-probs before training, so
        make_experience skips that forward. train() then takes them from the update's own forward, detached (ratio
        1: the same loss and gradient), when one optimizer step of one epoch covers the batch, and otherwise scores
        them before its first update. Exact only while the weights are those of the rollout: train() refuses an
        experience made before an earlier update, so leave it off where groups carry over to later steps.

        ``train.share_prompts``: a micro-batch's rows that share a prompt run it through the decoder once
        (`serl.rl.prefix`; same loss and gradient). Where micro-batch composition cannot change the update (one
        optimizer step per epoch and a loss that is not a per-micro-batch mean) micro-batches take whole groups."""
        check_choice(algo.advantage_estimator, ESTIMATORS, "advantage estimator")
        check_choice(algo.kl_estimator, KL_ESTIMATORS, "kl estimator")
        check_choice(algo.loss_agg, LOSS_AGGREGATIONS, "loss aggregation")
        check_choice(algo.whiten_scope, WHITEN_SCOPES, "whiten_scope")
        if train.autocast_dtype is not None:
            check_choice(train.autocast_dtype, AUTOCAST_DTYPES, "autocast dtype")
        micro = train.micro_train_batch_size
        if micro < 1 or train.train_batch_size % micro:
            raise ValueError(
                f"train_batch_size ({train.train_batch_size}) must be a positive multiple of micro_batch_size ({micro})"
            )
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0 for log-probs, got {temperature}")
        if algo.kl_coef > 0 and ref_model is None and reference_context is None:
            raise ValueError("kl_coef > 0 needs a reference model or a reference_context")
        self.algo, self.train_cfg = algo, train
        self.ref_model, self.reference_context = ref_model, reference_context
        self.pad_token_id = pad_token_id
        self.forward_batch_size = forward_batch_size or micro
        self.temperature, self.logprob_chunk_tokens = temperature, logprob_chunk_tokens
        self.defer_old_logprobs = defer_old_logprobs
        self.parallel = parallel or Parallel()
        self.rank, self.world = self.parallel.rank, self.parallel.world
        # log-probs through the model's own forward: needed inside a DDP/FSDP/DeepSpeed wrapper
        self.through_forward = self.parallel.wraps_model

        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the policy model has no trainable parameters")
        optimizer_name = train.optimizer
        if optimizer_name == "adamw" and self.parallel.offloads_optimizer():
            optimizer_name = "deepspeed_cpu_adam"  # as the reference's --adam_offload
        optimizer = make_optimizer(
            params,
            optimizer_name,
            lr=train.learning_rate,
            betas=tuple(train.adam_betas),
            weight_decay=train.weight_decay,
        )
        self.model, self.optimizer = self.parallel.prepare(model, optimizer, micro)
        self.params = [p for p in self.model.parameters() if p.requires_grad]  # FSDP replaces them
        self.device = self.parallel.device(params[0].device)
        self.schedule_total_steps = total_optimizer_steps
        self.scheduler = self._schedule(total_optimizer_steps)
        # Micro-batch shuffling draws only from this generator, whose state is checkpointed: exact resume.
        self.generator = torch.Generator().manual_seed(train.seed)
        self.optimizer_steps = 0

    def _schedule(self, total_steps: int) -> Any:
        return cosine_schedule(
            self.optimizer,
            total_steps=total_steps,
            warmup_ratio=self.train_cfg.lr_warmup_ratio,
            min_lr_ratio=self.train_cfg.min_lr_ratio,
        )

    # ------------------------------------------------------------------------------------------------ experience

    def make_experience(
        self,
        prompt_ids: Sequence[Sequence[int]],
        response_ids: Sequence[Sequence[int]],
        rewards: torch.Tensor | Sequence[float],
        *,
        group_size: int,
    ) -> Experience:
        """Score-aware experience for a whole rollout; groups are contiguous runs of ``group_size`` sequences."""
        rewards = torch.as_tensor(rewards, dtype=torch.float32).flatten()
        prompts, responses, action_mask = token_rows(prompt_ids, response_ids, rewards, group_size)
        deferred = self.defer_old_logprobs and self.algo.kl_coef <= 0
        old_logprobs = None if deferred else self._forward_logprobs(self.model, prompts, responses, action_mask)
        ref_logprobs = None
        if self.algo.kl_coef > 0:
            with self._reference_model() as reference:
                ref_logprobs = self._forward_logprobs(reference, prompts, responses, action_mask)
        experience = assemble_experience(
            prompts, responses, action_mask, rewards, old_logprobs, ref_logprobs, algo=self.algo, group_size=group_size
        )
        return replace(experience, policy_version=self.optimizer_steps) if deferred else experience

    @contextlib.contextmanager
    def _reference_model(self) -> Iterator[nn.Module]:
        if self.ref_model is not None:
            yield self.ref_model
        else:
            assert self.reference_context is not None
            with self.reference_context():
                yield self.model

    def _autocast(self) -> AbstractContextManager:
        """torch.autocast in `train.autocast_dtype` over the model's weights, or nothing."""
        dtype = self.train_cfg.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=getattr(torch, dtype))

    def _forward_logprobs(
        self, model: nn.Module, prompts: list[list[int]], responses: list[list[int]], action_mask: torch.Tensor
    ) -> torch.Tensor:
        """Gradient-free log-probs [N, R] in eval mode, batched by similar length to cut padding."""
        out = torch.zeros(action_mask.shape, dtype=torch.float32)
        order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]) + len(responses[i]), i))
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for rows, keep in self.parallel.forward_batches(order, self.forward_batch_size):
                    batch = build_sequences(
                        [prompts[i] for i in rows], [responses[i] for i in rows], pad_token_id=self.pad_token_id
                    ).to(self.device)
                    with self._autocast():
                        logprobs, _ = response_logprobs(
                            model,
                            batch,
                            temperature=self.temperature,
                            chunk_tokens=self.logprob_chunk_tokens,
                            through_forward=self.through_forward,
                        )
                    if keep:
                        out[rows, : logprobs.shape[1]] = logprobs.float().cpu()
        finally:
            model.train(was_training)
        # each row was filled on exactly one rank, zeros elsewhere: a sum assembles them
        return self.parallel.sum(out.to(self.device)).cpu() if self.world > 1 else out

    # ------------------------------------------------------------------------------------------------ training

    def train(self, experience: Experience) -> dict[str, float]:
        """max_epochs passes over shuffled micro-batches; one optimizer step per ``train_batch_size`` sequences (the
        last step of a pass may be smaller). Returns averaged metrics."""
        if len(experience) == 0:
            raise ValueError("cannot train on an empty experience")
        if self.algo.use_kl_loss and self.algo.kl_coef > 0 and experience.ref_logprobs is None:
            raise ValueError("use_kl_loss needs an experience made by a trainer with use_kl_loss (reference log-probs)")
        experience = self._with_old_logprobs(experience)
        advantages = experience.advantages
        if experience.whiten_pending:
            advantages = masked_whiten(advantages, experience.action_mask, std_norm=self.algo.advantage_std_norm)
        micro = self.train_cfg.micro_train_batch_size
        accumulation = self.train_cfg.train_batch_size // micro
        totals = dict.fromkeys(TOTALS, 0.0)
        lr = self.optimizer.param_groups[0]["lr"]
        self.model.train()
        for _ in range(self.train_cfg.max_epochs):
            order = self._epoch_order(experience)
            micro_batches = [order[i : i + micro] for i in range(0, len(order), micro)]
            for first in range(0, len(micro_batches), accumulation):
                lr = self.optimizer.param_groups[0]["lr"]
                self._optimizer_step(experience, advantages, micro_batches[first : first + accumulation], totals)
        if self.world > 1:  # per-rank sums of the micro-batch figures -> run-wide sums
            keys = ("loss", "policy_loss", "kl_loss", "tokens", "clipped", "entropy", "ratio")
            local = torch.tensor([totals[k] for k in keys], dtype=torch.float64, device=self.device)
            totals.update(zip(keys, self.parallel.sum(local).tolist(), strict=True))
        return self._summary(experience, advantages, totals, lr)

    def _epoch_order(self, experience: Experience) -> list[int]:
        """Rows in a random order; whole groups in a random order where micro-batch composition cannot change the
        update, so that the rows of a micro-batch share prompts (see share_prompts)."""
        n, train = experience.group_size, self.train_cfg
        one_step = len(experience) <= train.train_batch_size
        invariant = self.algo.loss_agg != "token_mean_micro" or len(experience) <= train.micro_train_batch_size
        if not (train.share_prompts and one_step and invariant and n > 1):
            return torch.randperm(len(experience), generator=self.generator).tolist()
        groups = torch.randperm(experience.num_groups, generator=self.generator).tolist()
        return [g * n + k for g in groups for k in range(n)]

    def _prompt_sharing_weight(self, prompts: list[list[int]]) -> torch.Tensor | None:
        """The output projection when these rows repeat a prompt and the shared-prompt pass applies, else None."""
        if not self.train_cfg.share_prompts or self.through_forward or len({tuple(p) for p in prompts}) == len(prompts):
            return None
        if any(getattr(m, "gradient_checkpointing", False) for m in self.model.modules()):
            return None  # checkpointed layers run without a KV cache
        return plain_output_weight(self.model)

    def _with_old_logprobs(self, experience: Experience) -> Experience:
        """Score deferred old log-probs now, unless one optimizer step of one epoch covers the batch: then every
        micro-batch sees the rollout weights and its own detached forward gives them (see defer_old_logprobs)."""
        if experience.old_logprobs is not None:
            return experience
        if experience.policy_version != self.optimizer_steps:
            raise ValueError(
                f"experience with deferred old log-probs was made at optimizer step {experience.policy_version}, the "
                f"policy is now at {self.optimizer_steps}: use defer_old_logprobs=False when groups carry over"
            )
        if self.train_cfg.max_epochs == 1 and len(experience) <= self.train_cfg.train_batch_size:
            return experience
        old = self._forward_logprobs(self.model, experience.prompt_ids, experience.response_ids, experience.action_mask)
        return replace(experience, old_logprobs=old)

    def _optimizer_step(
        self, experience: Experience, advantages: torch.Tensor, micro_batches: list[list[int]], totals: dict
    ) -> None:
        rows = [i for micro in micro_batches for i in micro]
        step_shape = {
            "step_tokens": int(experience.action_mask[rows].sum()),
            "step_sequences": len(rows),
            "step_micro_batches": len(micro_batches),
        }
        clip = self.train_cfg.max_grad_norm
        max_norm = clip if clip and clip > 0 else math.inf

        def loss_of(rows: list[int], counted: bool) -> torch.Tensor:
            with self._autocast():  # the forward only: backward follows the dtypes it recorded
                return self._micro_batch_loss(experience, advantages, rows, step_shape, totals if counted else {})

        grad_norm = self.parallel.backward_step(self.model, self.params, micro_batches, loss_of, max_norm)
        if torch.isfinite(grad_norm):
            self.optimizer.step()
            self.scheduler.step()
            totals["grad_norm"] += float(grad_norm)
        else:  # a poisoned batch must not poison the weights: skip the update (as DeepSpeed does on overflow)
            totals["nonfinite_steps"] += 1
        self.optimizer.zero_grad(set_to_none=True)
        self.optimizer_steps += 1
        totals["steps"] += 1

    def _micro_batch_loss(
        self,
        experience: Experience,
        advantages: torch.Tensor,
        rows: list[int],
        step_shape: dict[str, int],
        totals: dict,
    ) -> torch.Tensor:
        prompts, responses = [experience.prompt_ids[i] for i in rows], [experience.response_ids[i] for i in rows]
        options = {"temperature": self.temperature, "chunk_tokens": self.logprob_chunk_tokens, "with_entropy": True}
        weight = self._prompt_sharing_weight(prompts)
        if weight is not None:
            logprobs, entropy, mask = shared_prompt_logprobs(
                self.model, weight, prompts, responses, pad_token_id=self.pad_token_id, **options
            )
        else:
            batch = build_sequences(prompts, responses, pad_token_id=self.pad_token_id).to(self.device)
            logprobs, entropy = response_logprobs(self.model, batch, through_forward=self.through_forward, **options)
            mask = batch.action_mask
        width, index = mask.shape[1], torch.tensor(rows)

        def take(values: torch.Tensor) -> torch.Tensor:
            return values[index, :width].to(self.device)

        # deferred old log-probs (one on-policy update): same weights as the rollout, so the detached forward is exact
        old = logprobs.detach() if experience.old_logprobs is None else take(experience.old_logprobs)
        per_token, ratio, clipped = clipped_policy_loss(
            logprobs,
            old,
            take(advantages),
            eps_clip_low=self.algo.eps_clip_low,
            eps_clip_high=self.algo.eps_clip_high,
        )
        policy_loss = aggregate_loss(per_token, mask, mode=self.algo.loss_agg, **step_shape)
        loss = policy_loss
        if self.algo.use_kl_loss and self.algo.kl_coef > 0:
            kl = kl_estimate(logprobs, take(experience.ref_logprobs), mask, estimator=self.algo.kl_estimator)
            # the reference's KL loss is a sequence mean of token means, whatever the policy-loss aggregation
            kl_loss = aggregate_loss(kl, mask, mode="seq_mean_token_mean", **step_shape)
            loss = loss + self.algo.kl_coef * kl_loss
            totals["kl_loss"] = totals.get("kl_loss", 0.0) + float(kl_loss.detach())
        for key, value in (
            ("loss", loss.detach()),
            ("policy_loss", policy_loss.detach()),
            ("tokens", mask.sum()),
            ("clipped", (clipped & mask).sum()),
            ("entropy", (entropy * mask).sum()),
            ("ratio", (ratio.detach() * mask).sum()),
        ):
            totals[key] = totals.get(key, 0.0) + float(value)
        return loss

    def _summary(
        self, experience: Experience, advantages: torch.Tensor, totals: dict[str, float], lr: float
    ) -> dict[str, float]:
        mask = experience.action_mask
        steps, tokens = max(totals["steps"], 1.0), max(totals["tokens"], 1.0)
        adv_mean = masked_mean(advantages, mask)
        metrics = {
            "loss": totals["loss"] / steps,
            "policy_loss": totals["policy_loss"] / steps,
            "kl": float(masked_mean(experience.kl, mask)),
            "clip_frac": totals["clipped"] / tokens,
            "ratio": totals["ratio"] / tokens,
            "entropy": totals["entropy"] / tokens,
            "grad_norm": totals["grad_norm"] / max(steps - totals["nonfinite_steps"], 1.0),
            "lr": lr,
            "adv_mean": float(adv_mean),
            "adv_std": float(masked_mean((advantages - adv_mean) ** 2, mask).sqrt()),
            "reward": float(experience.rewards.mean()),
            "return": float(experience.returns.mean()),
            "response_length": float(mask.sum(-1).float().mean()),
            "optimizer_steps": totals["steps"],
            "nonfinite_steps": totals["nonfinite_steps"],
        }
        if self.algo.use_kl_loss:
            metrics["kl_loss"] = totals["kl_loss"] / steps
        return metrics

    # ------------------------------------------------------------------------------------------------ state

    def reset_schedule(self, total_optimizer_steps: int) -> None:
        """A fresh warmup + cosine over ``total_optimizer_steps`` (a new iteration); Adam moments are kept unless
        `reset_optimizer_state` is called too."""
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"]
        self.schedule_total_steps = total_optimizer_steps
        self.scheduler = self._schedule(total_optimizer_steps)

    def reset_optimizer_state(self) -> None:
        """Forget the Adam moments and step counts (what a new run from the weights would start with)."""
        if self.uses_deepspeed:
            raise NotImplementedError("resetting the optimizer state is not implemented under DeepSpeed")
        self._plain_optimizer().state.clear()

    def _plain_optimizer(self) -> Any:
        return getattr(self.optimizer, "optimizer", self.optimizer)  # accelerate wraps the torch optimizer

    @property
    def uses_deepspeed(self) -> bool:
        return self.parallel.deepspeed

    def state_dict(self) -> dict[str, Any]:
        """Optimizer, schedule and shuffling state (the model weights are saved by the caller). The optimizer state is
        keyed by parameter name and whole, so no world size or strategy is baked in. A collective under FSDP: call it
        on every rank."""
        # ZeRO partitions the optimizer state inside its engine: a DeepSpeed run's checkpoints hold none (not resumable)
        optimizer = None if self.uses_deepspeed else optimizer_state(self.model, self._plain_optimizer())
        return {
            "optimizer": optimizer,
            "deepspeed": self.uses_deepspeed,
            "scheduler": self.scheduler.state_dict(),
            "schedule_total_steps": self.schedule_total_steps,
            "generator": self.generator.get_state(),
            "optimizer_steps": self.optimizer_steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()`'s output, saved on any world size; under FSDP every rank passes the whole state."""
        load_optimizer_state(self.model, self._plain_optimizer(), state["optimizer"])
        self.schedule_total_steps = state["schedule_total_steps"]
        self.scheduler = self._schedule(self.schedule_total_steps)
        self.scheduler.load_state_dict(state["scheduler"])
        for group, lr in zip(self.optimizer.param_groups, self.scheduler.get_last_lr(), strict=True):
            group["lr"] = lr  # building the scheduler reset it to the first step's value
        self.generator.set_state(state["generator"])
        self.optimizer_steps = state["optimizer_steps"]
