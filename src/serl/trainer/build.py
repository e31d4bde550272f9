"""The parts the SeRL loop trains with, built from a config: the policy (with LoRA and gradient checkpointing), the
reference, the rollout engine and its weight sync, the problem source, the scorer, the policy trainer and the
in-training evaluation. `run_training` builds them with `build_parts`; tests hand the loop stand-ins instead."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from serl.config import SerlConfig
from serl.parallel import Parallel, full_parameters, shards_parameters
from serl.reward.scorer import Scorer
from serl.rundir import RunDir
from serl.trainer.evals import TrainingEval, load_eval_sets
from serl.trainer.sources import DatasetSource, ProblemSource


@dataclass
class TrainingParts:
    model: torch.nn.Module  # the policy, unwrapped (checkpoints and HF exports read it)
    tokenizer: Any
    engine: Any  # a RolloutEngine: generate(prompts, params, n), sleep()
    sync_weights: Callable[[], None]  # after each update and on resume: the engine gets the policy's weights
    source: ProblemSource
    scorer: Any  # score(prompts, labels, groups) -> serl.reward.scorer.Scores
    policy: Any  # a serl.rl.PolicyTrainer
    evaluate: Callable[[int], dict[str, float]] | None = None  # None: no eval sets
    canary: Callable[[int], float] | None = None  # the canary set's pass@1 after a step; None: no eval.canary
    parallel: Parallel = field(default_factory=Parallel)


def build_parts(cfg: SerlConfig, run_dir: Path, logger: Any, accelerator: Any | None = None) -> TrainingParts:
    """Everything from the config, in a fixed order (the LoRA adapter's initialisation draws from the seeded global
    generator). ACCELERATOR (trainer/distributed.py): None runs a plain single process."""
    from serl.data import load_problems
    from serl.models import load_policy
    from serl.trainer.memory import apply_lora, enable_gradient_checkpointing, lora_reference_context

    parallel = Parallel(accelerator)
    torch.manual_seed(cfg.train.seed)
    logger.phase("load", cfg.model.policy)
    lora = cfg.model.lora.rank > 0
    device = str(accelerator.device) if accelerator is not None else "cpu"
    dtype = cfg.model.dtype
    if accelerator is not None and dtype == "auto" and not lora:
        dtype = "fp32"  # fp32 master weights; bf16 compute comes from the launch config's mixed_precision
    model, tokenizer = load_policy(cfg.model.policy, dtype=dtype, device=device)
    if cfg.model.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if lora:
        options = cfg.model.lora
        model = apply_lora(
            model,
            rank=options.rank,
            alpha=options.alpha,
            dropout=options.dropout,
            target_modules=options.target_modules,
        )
    reference = None if lora else load_reference(cfg, device)  # LoRA: the base, adapter disabled
    engine = make_rollout_engine(cfg, model, tokenizer, accelerator=accelerator)
    d = cfg.data
    seeds = load_problems(d.seed_path, d.input_key, d.label_key, max_samples=d.max_samples, max_chars=d.max_chars)
    eval_sets, canary = load_eval_sets(cfg)
    source: ProblemSource
    if cfg.train.mode == "serl":
        from serl.trainer.selfplay import InstructionSource

        # ranks > 0 screen the same gathered candidates into a mirror of the instruction log (see distributed.py)
        source_dir = RunDir(run_dir).rank_dir(parallel.rank)
        held_out = [p.prompt for problems in [*eval_sets.values(), canary] for p in problems]
        source = InstructionSource(cfg, seeds, tokenizer, engine, source_dir, logger, held_out=held_out)
    else:
        train = seeds
        if d.train_path:
            train = load_problems(
                d.train_path, d.input_key, d.label_key, max_samples=d.max_samples, max_chars=d.max_chars
            )
        source = DatasetSource(train, cfg.train.seed)
    evaluate = None
    if eval_sets or canary:
        main = parallel.rank == 0
        evaluate = TrainingEval(cfg, engine, model, tokenizer, run_dir, logger, main, sets=eval_sets, canary=canary)
    policy = make_policy_trainer(
        cfg,
        model,
        reference,
        pad_token_id=tokenizer.pad_token_id,
        total_optimizer_steps=optimizer_steps_per_iteration(cfg),
        reference_context=lora_reference_context(model) if lora else None,
        accelerator=accelerator,
    )
    return TrainingParts(
        model=model,
        tokenizer=tokenizer,
        engine=engine,
        sync_weights=weight_sync(cfg, model, policy, engine, accelerator),
        source=source,
        scorer=Scorer(cfg.reward, ground_truth=cfg.train.mode == "gt"),
        policy=policy,
        evaluate=evaluate,
        canary=evaluate.canary if canary and evaluate is not None else None,
        parallel=parallel,
    )


def optimizer_steps_per_iteration(cfg: SerlConfig) -> int:
    """The LR horizon of one iteration, in optimizer steps, as the reference sets it (serl-reference §1.7):
    `instructions_per_iteration * n_samples_per_prompt // train_batch_size` (2000 · 16 / 16 = 2000). It counts one
    optimizer step per `train_batch_size` sequences of one epoch; with more epochs, or batches that do not split
    evenly, the schedule reaches its floor before the iteration ends, as the reference's does."""
    t = cfg.train
    return max(1, t.instructions_per_iteration * cfg.rollout.n_samples_per_prompt // t.train_batch_size)


def load_reference(cfg: SerlConfig, device: str) -> torch.nn.Module | None:
    """The frozen reference model for the KL term; None when `algo.kl_coef` is 0."""
    if cfg.algo.kl_coef <= 0:
        return None
    from serl.models import load_model

    spec = cfg.model.reference or cfg.model.policy
    reference = load_model(spec, dtype=cfg.model.dtype, device=device)
    reference.eval().requires_grad_(False)
    return reference


def make_rollout_engine(cfg: SerlConfig, model: torch.nn.Module, tokenizer: Any, accelerator: Any | None) -> Any:
    """The rollout engine for this process: on several processes, a `ShardedEngine` over one engine per rank."""
    from serl import rollout
    from serl.parallel import world_of
    from serl.trainer.distributed import ShardedEngine

    rank, world = world_of(accelerator)
    lora = cfg.model.lora.rank > 0
    engine_model: Any = model
    options = rollout.engine_options(cfg.rollout, seed=cfg.train.seed, rank=rank, world=world)
    if cfg.rollout.engine == "vllm":
        # vLLM loads its own copy and copies the (still unsharded) module's weights in once, keeping no reference;
        # with LoRA it holds the base weights and the merged adapter is synced in after each step
        engine_model = cfg.model.policy if lora else model
    elif shards_parameters(accelerator):
        engine_model = copy.deepcopy(model)  # FSDP/ZeRO-3 shard the policy; decoding needs whole weights
    elif lora:
        options["kv_cache"] = "dynamic"  # the static decoder reads the base projections and would skip the adapter
    engine = rollout.make_engine(cfg.rollout.engine, engine_model, tokenizer, **options)
    return ShardedEngine(engine, accelerator) if world > 1 else engine


def weight_sync(cfg: SerlConfig, model: torch.nn.Module, policy: Any, engine: Any, accelerator: Any | None):
    """A function that gathers and loads the policy's new weights into the engine (free when the engine shares the
    policy module: then `update_weights` only refreshes a rollout-dtype copy, if any)."""

    def sync() -> None:
        if cfg.model.lora.rank > 0 and cfg.rollout.engine != "hf":
            from serl.trainer.memory import lora_merged_weights

            engine.update_weights(lora_merged_weights(model))
        elif shards_parameters(accelerator):
            # Every rank joins each gather, and each full tensor is loaded while it is gathered: no whole copy is built.
            if cfg.rollout.engine == "vllm":
                engine.update_weights(policy.model)  # VLLMEngine gathers parameter by parameter
            else:
                for name, tensor in full_parameters(policy.model):
                    engine.update_weights({name: tensor})
        else:
            engine.update_weights(model)

    return sync


def make_policy_trainer(
    cfg: SerlConfig,
    model: torch.nn.Module,
    reference: torch.nn.Module | None,
    *,
    pad_token_id: int,
    total_optimizer_steps: int,
    reference_context: Any = None,
    accelerator: Any | None = None,
) -> Any:
    """The PolicyTrainer the loop trains with, from the config (tests build the same one to compare updates)."""
    from serl.rl import PolicyTrainer

    return PolicyTrainer(
        model,
        reference,
        algo=cfg.algo,
        train=cfg.train,
        pad_token_id=pad_token_id,
        total_optimizer_steps=total_optimizer_steps,
        temperature=cfg.rollout.temperature,
        reference_context=reference_context,
        parallel=Parallel(accelerator),
        defer_old_logprobs=cfg.train.carryover == "expire",  # kept groups train after an update: score them at rollout
    )
