"""The SeRL loop: per step, fill a batch of problems that pass the difficulty filter (generating and filtering new ones
in serl mode), roll out n responses each, vote, train on exactly that batch, sync the engine; iterations, evaluation,
checkpoints and exact resume around it.

Exact resume: every random draw comes from a seed derived from (run seed, step, attempt, purpose), never from a
global generator that drifts, so a resumed run replays exactly what an uninterrupted one does. Append-only outputs are
cut back to the byte sizes recorded in the checkpoint, so a killed step leaves no duplicate records behind.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from serl.config import SerlConfig, dump_yaml
from serl.io import append_jsonl, atomic_write_json, atomic_write_text, flush_and_uncache, truncate_to
from serl.parallel import export_sharded, full_state_dict, load_full_state_dict, shards_parameters, world_of
from serl.rundir import RunDir
from serl.trainer.checkpoint import (
    capture_rng,
    export_hf,
    latest_checkpoint,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from serl.trainer.distributed import ShardedEngine, mirror_instructions
from serl.trainer.logger import RunLogger
from serl.trainer.sources import DatasetSource, RolloutProblem, StalledError, derive_seed


@dataclass
class PassedGroup:
    """One problem's rollout group that passed the difficulty filter, waiting to be trained on."""

    problem: RolloutProblem
    experience: Any  # serl.rl Experience holding this group's n sequences
    majority_ratio: float
    passed_at_step: int


@dataclass
class StepStats:
    groups_scored: int = 0
    groups_kept: int = 0
    attempts: int = 0
    votes: list = field(default_factory=list)
    gt_rewards: list = field(default_factory=list)
    times: dict[str, float] = field(default_factory=dict)

    def add_time(self, phase: str, seconds: float) -> None:
        self.times[phase] = self.times.get(phase, 0.0) + seconds


class SerlTrainer:
    def __init__(self, cfg: SerlConfig, run_dir: Path, logger: RunLogger, accelerator: Any | None = None):
        """ACCELERATOR (see trainer/distributed.py): None runs a plain single process."""
        from serl.data import load_problems
        from serl.models import load_policy
        from serl.trainer.memory import apply_lora, enable_gradient_checkpointing

        self.cfg = cfg
        self.run_dir = run_dir
        self.logger = logger
        self.accelerator = accelerator
        self.rank, self.world = world_of(accelerator)
        self.is_main = self.rank == 0
        torch.manual_seed(cfg.train.seed)
        logger.phase("load", cfg.model.policy)
        self.lora = cfg.model.lora.rank > 0
        self.device = str(accelerator.device) if accelerator is not None else "cpu"
        dtype = cfg.model.dtype
        if accelerator is not None and dtype == "auto" and not self.lora:
            dtype = "fp32"  # fp32 master weights; bf16 compute comes from the launch config's mixed_precision
        self.model, self.tokenizer = load_policy(cfg.model.policy, dtype=dtype, device=self.device)
        if cfg.model.gradient_checkpointing:
            enable_gradient_checkpointing(self.model)
        if self.lora:
            lora = cfg.model.lora
            self.model = apply_lora(
                self.model, rank=lora.rank, alpha=lora.alpha, dropout=lora.dropout, target_modules=lora.target_modules
            )
        self.reference = None if self.lora else self._load_reference()  # LoRA: the base, adapter disabled
        self.engine = self._make_engine()
        self.seeds = load_problems(
            cfg.data.seed_path, cfg.data.input_key, cfg.data.label_key, max_samples=cfg.data.max_samples
        )
        if cfg.train.mode == "serl":
            from serl.trainer.selfplay import InstructionSource

            # ranks > 0 screen the same gathered candidates into a mirror of the instruction log (see distributed.py)
            source_dir = RunDir(run_dir).rank_dir(self.rank)
            self.source = InstructionSource(cfg, self.seeds, self.tokenizer, self.engine, source_dir, logger)
        else:
            train = self.seeds
            if cfg.data.train_path:
                train = load_problems(
                    cfg.data.train_path, cfg.data.input_key, cfg.data.label_key, max_samples=cfg.data.max_samples
                )
            self.source = DatasetSource(train, cfg.train.seed)
        self.eval_sets = {
            name: load_problems(name, cfg.eval.input_key, cfg.eval.label_key, max_samples=cfg.eval.max_samples)
            for name in cfg.eval.datasets
        }
        self.policy = self._make_policy_trainer()
        self.step = 0  # completed training steps
        self.iteration = 1
        self.step_in_iteration = 0
        self.carried: list[PassedGroup] = []

    # ---------------------------------------------------------------------------------------------------- setup

    @property
    def steps_per_iteration(self) -> int:
        return max(1, self.cfg.train.instructions_per_iteration // self.cfg.train.rollout_batch_size)

    @property
    def total_steps(self) -> int:
        total = self.steps_per_iteration * self.cfg.train.num_iterations
        return min(total, self.cfg.train.max_steps) if self.cfg.train.max_steps else total

    def _optimizer_steps_per_iteration(self) -> int:
        return optimizer_steps_per_iteration(self.cfg)

    def _load_reference(self) -> torch.nn.Module | None:
        if self.cfg.algo.kl_coef <= 0:
            return None
        from serl.models import load_model

        spec = self.cfg.model.reference or self.cfg.model.policy
        reference = load_model(spec, dtype=self.cfg.model.dtype, device=self.device)
        reference.eval().requires_grad_(False)
        return reference

    def _make_engine(self) -> Any:
        from serl.rollout import engine_options, make_engine

        cfg = self.cfg
        engine_model: Any = self.model
        options = engine_options(cfg.rollout, seed=cfg.train.seed, rank=self.rank, world=self.world)
        if cfg.rollout.engine == "vllm":
            # vLLM loads its own copy and copies the (still unsharded) module's weights in once, keeping no reference;
            # with LoRA it holds the base weights and the merged adapter is synced in after each step
            engine_model = cfg.model.policy if self.lora else self.model
        elif shards_parameters(self.accelerator):
            engine_model = copy.deepcopy(self.model)  # FSDP/ZeRO-3 shard the policy; decoding needs whole weights
        elif self.lora:
            options["kv_cache"] = "dynamic"  # the static decoder reads the base projections and would skip the adapter
        engine = make_engine(cfg.rollout.engine, engine_model, self.tokenizer, **options)
        return ShardedEngine(engine, self.accelerator) if self.world > 1 else engine

    def _sync_engine(self) -> None:
        """Gather-and-load the new weights into the rollout engine (free when it shares the policy module)."""
        if self.lora and self.cfg.rollout.engine != "hf":
            from serl.trainer.memory import lora_merged_weights

            self.engine.update_weights(lora_merged_weights(self.model))
        elif shards_parameters(self.accelerator):
            # Every rank joins each gather, and each full tensor is loaded while it is gathered: no whole copy is built.
            if self.cfg.rollout.engine == "vllm":
                self.engine.update_weights(self.policy.model)  # VLLMEngine gathers parameter by parameter
            else:
                from serl.parallel import full_parameters

                for name, tensor in full_parameters(self.policy.model):
                    self.engine.update_weights({name: tensor})
        else:
            self.engine.update_weights(self.model)

    def _make_policy_trainer(self) -> Any:
        from serl.trainer.memory import lora_reference_context

        reference_context = lora_reference_context(self.model) if self.lora else None
        return make_policy_trainer(
            self.cfg,
            self.model,
            self.reference,
            pad_token_id=self.tokenizer.pad_token_id,
            total_optimizer_steps=self._optimizer_steps_per_iteration(),
            reference_context=reference_context,
            accelerator=self.accelerator,
        )

    # ---------------------------------------------------------------------------------------------------- run

    def fit(self) -> None:
        cfg = self.cfg
        if self.step == 0 and cfg.eval.at_start and self.eval_sets:
            self.evaluate()
        while self.step < self.total_steps:
            if self.step_in_iteration >= self.steps_per_iteration:
                self._end_iteration()
            metrics = self.train_step()
            self.logger.log_step(metrics)
            if self.step_in_iteration >= self.steps_per_iteration or self.step >= self.total_steps:
                continue_after = self.step < self.total_steps
                self._finish_iteration_outputs(final=not continue_after)
            elif cfg.train.save_every and self.step % cfg.train.save_every == 0:
                self.save()
        self.logger.info(f"training finished after {self.step} steps; run dir: {self.run_dir}")

    def _finish_iteration_outputs(self, final: bool) -> None:
        """Iteration end: optional eval, an HF export, and a resumable checkpoint."""
        if self.eval_sets:
            self.evaluate()
        self.logger.phase("save", f"iteration {self.iteration}")
        target = self.run_dir / "checkpoints" / f"iter_{self.iteration:02d}_hf"
        if shards_parameters(self.accelerator):
            export_sharded(self.accelerator, self.policy.model, self.tokenizer, target)
        elif self.is_main:
            export_hf(self.model, self.tokenizer, target)
        self.save()

    def _end_iteration(self) -> None:
        """Start the next iteration from the current weights with a fresh LR schedule (serl-reference §9.9)."""
        self.iteration += 1
        self.step_in_iteration = 0
        self.policy.reset_schedule(self._optimizer_steps_per_iteration())
        if hasattr(self.source, "set_iteration"):
            self.source.set_iteration(self.iteration)
        self.logger.info(f"iteration {self.iteration} begins at step {self.step + 1}")

    def train_step(self) -> dict[str, Any]:
        cfg = self.cfg
        step = self.step + 1
        started = time.perf_counter()
        stats = StepStats()
        batch = self._collect_passing_groups(step, stats)
        self.logger.phase("train", f"step {step}")
        t0 = time.perf_counter()
        from serl.rl import Experience

        experience = Experience.concat([g.experience for g in batch])
        if self.cfg.log.debug_dump and self.is_main:
            self._dump(f"batch_step_{step:06d}.pt", experience)
        self.engine.sleep()  # a colocated vLLM engine frees its GPU memory for the update
        train_metrics = self.policy.train(experience)
        stats.add_time("train", time.perf_counter() - t0)
        if hasattr(self.source, "mark_trained"):
            self.source.mark_trained([g.problem for g in batch], step)
        self._sync_engine()
        self.step = step
        self.step_in_iteration += 1
        metrics: dict[str, Any] = {"step": step, "iteration": self.iteration}
        metrics.update(self._reward_metrics(stats))
        metrics.update({f"train/{k}": v for k, v in train_metrics.items()})
        metrics.update(self.source.step_metrics() if hasattr(self.source, "step_metrics") else {})
        metrics.update({f"time/{k}_s": round(v, 3) for k, v in stats.times.items()})
        metrics["time/step_s"] = round(time.perf_counter() - started, 3)
        metrics["attempts"] = stats.attempts
        ends_iteration = self.step_in_iteration >= self.steps_per_iteration or step >= self.total_steps
        if cfg.eval.every and step % cfg.eval.every == 0 and not ends_iteration:  # the iteration end evaluates anyway
            metrics.update({f"eval/{k}": v for k, v in self.evaluate().items()})
        return metrics

    # ---------------------------------------------------------------------------------------------------- rollout

    def _collect_passing_groups(self, step: int, stats: StepStats) -> list[PassedGroup]:
        cfg = self.cfg
        need = cfg.train.rollout_batch_size
        # Groups that passed during an earlier step are stale under `expire` (the reference's one-step expiry);
        # groups from this same step (saved when a stalled run stopped) are always reused.
        stale = [g for g in self.carried if g.passed_at_step < step]
        buffer = [g for g in self.carried if g.passed_at_step >= step]
        if stale and cfg.train.carryover == "keep":
            buffer = stale + buffer
        elif stale:
            self.logger.info(f"step {step}: {len(stale)} passing group(s) from step {step - 1} expired")
            if hasattr(self.source, "mark_expired"):
                self.source.mark_expired([g.problem for g in stale], step)
        self.carried = []
        try:
            while len(buffer) < need:
                stats.attempts += 1
                if stats.attempts > cfg.train.max_attempts_per_step:
                    raise StalledError(
                        f"step {step}: only {len(buffer)}/{need} problems passed the difficulty filter "
                        f"[{cfg.reward.difficulty_low}, {cfg.reward.difficulty_high}] after "
                        f"{cfg.train.max_attempts_per_step} rollout attempts. Widen the bounds, raise "
                        "train.max_attempts_per_step, or check the policy's outputs in rollouts/."
                    )
                problems = self._next_problems(step, stats)
                buffer.extend(self._rollout_and_filter(problems, step, stats))
        except StalledError as err:
            self.carried = buffer
            path = self.save()
            raise StalledError(f"{err} State saved in {path}; resume with serl train --resume {self.run_dir}") from err
        self.carried = buffer[need:]
        return buffer[:need]

    def _next_problems(self, step: int, stats: StepStats) -> list[RolloutProblem]:
        t0 = time.perf_counter()
        self.logger.phase("generate" if self.cfg.train.mode == "serl" else "data", f"step {step}")
        problems = (
            self.source.next_batch(self.cfg.train.rollout_batch_size, step=step, attempt=stats.attempts)
            if (self.cfg.train.mode == "serl")
            else self.source.next_batch(self.cfg.train.rollout_batch_size)
        )
        stats.add_time("generate", time.perf_counter() - t0)
        return problems

    def _rollout_and_filter(self, problems: list[RolloutProblem], step: int, stats: StepStats) -> list[PassedGroup]:
        from serl.rollout.base import SamplingParams
        from serl.rollout.formats import format_prompt

        cfg = self.cfg
        n = cfg.rollout.n_samples_per_prompt
        self.logger.phase("rollout", f"step {step}: {len(problems)}×{n}")
        t0 = time.perf_counter()
        prompts = [
            self._truncate_prompt(format_prompt(self.tokenizer, p.text, cfg.rollout.prompt_format)) for p in problems
        ]
        params = SamplingParams(
            temperature=cfg.rollout.temperature,
            top_p=cfg.rollout.top_p,
            top_k=cfg.rollout.top_k,
            max_new_tokens=cfg.rollout.max_new_tokens,
            stop=tuple(cfg.rollout.stop),
            seed=derive_seed(cfg.train.seed, "rollout", step, stats.attempts),
        )
        self.model.eval()
        completions = self.engine.generate(prompts, params, n=n)
        stats.add_time("rollout", time.perf_counter() - t0)

        self.logger.phase("reward", f"step {step}")
        t0 = time.perf_counter()
        responses = [c.text for c in completions]
        groups = [responses[i * n : (i + 1) * n] for i in range(len(problems))]
        rewards, votes, gt = self._score(problems, groups)
        stats.add_time("reward", time.perf_counter() - t0)

        self.logger.phase("experience", f"step {step}: log-probs of {len(completions)} responses")
        t0 = time.perf_counter()
        experience = self.policy.make_experience(
            [c.prompt_ids for c in completions],
            [c.response_ids for c in completions],
            torch.tensor([r for group in rewards for r in group], dtype=torch.float32),
            group_size=n,
        )
        stats.add_time("experience", time.perf_counter() - t0)

        lo, hi = cfg.reward.difficulty_low, cfg.reward.difficulty_high
        self.logger.phase("filter", f"step {step}: difficulty {lo} ≤ majority ratio ≤ {hi}")
        passed: list[PassedGroup] = []
        ratios = []
        for i, problem in enumerate(problems):
            ratio = sum(rewards[i]) / n  # raw reward mean, as the reference's online filter
            ratios.append(ratio)
            if lo <= ratio <= hi:
                passed.append(PassedGroup(problem, experience.select_groups([i], group_size=n), ratio, step))
        stats.groups_scored += len(problems)
        stats.groups_kept += len(passed)
        stats.votes.extend(votes)
        stats.gt_rewards.extend(gt)
        if hasattr(self.source, "record_difficulty"):
            self.source.record_difficulty(problems, ratios, [lo <= r <= hi for r in ratios], step)
        self._write_rollouts(step, stats.attempts, problems, groups, rewards, ratios, votes)
        return passed

    def _truncate_prompt(self, prompt: str) -> str:
        """Right-truncate to rollout.prompt_max_len tokens, as the reference's tokenizer call does."""
        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if len(ids) <= self.cfg.rollout.prompt_max_len:
            return prompt
        return self.tokenizer.decode(ids[: self.cfg.rollout.prompt_max_len])

    def _score(self, problems: list[RolloutProblem], groups: list[list[str]]):
        """Rewards per group: majority vote (serl, maj) or ground truth (gt); GT rewards too wherever labels exist."""
        from serl.reward import gt_rewards, score_groups

        r = self.cfg.reward
        votes = []
        labelled = [p.label is not None for p in problems]
        gt: list[list[float]] = []
        if any(labelled):
            flat = [(resp, p.label) for p, g in zip(problems, groups, strict=True) if p.label is not None for resp in g]
            scores = gt_rewards([x[0] for x in flat], [x[1] for x in flat], num_workers=r.num_workers, match=r.gt_match)
            n = len(groups[0])
            gt = [scores[i * n : (i + 1) * n] for i in range(len(flat) // n)]
        if self.cfg.train.mode == "gt":
            if not all(labelled):
                raise ValueError("train.mode=gt needs a label for every problem (data.label_key)")
            return gt, [], gt
        votes = score_groups(
            groups,
            prompts=[p.text for p in problems],
            num_workers=r.num_workers,
            extractor=r.extractor,
            method=r.majority_method,
            score_prompt_and_response=r.score_prompt_and_response,
            timeout_s=r.timeout_s,
            no_majority=r.no_majority,
        )
        return [v.rewards for v in votes], votes, gt if all(labelled) else []

    def _reward_metrics(self, stats: StepStats) -> dict[str, Any]:
        from serl.reward import batch_metrics

        out: dict[str, Any] = {
            "filter/groups_scored": stats.groups_scored,
            "filter/groups_kept": stats.groups_kept,
            "filter/groups_rejected_difficulty": stats.groups_scored - stats.groups_kept,
            "filter/kept_ratio": stats.groups_kept / max(1, stats.groups_scored),
        }
        if stats.votes:
            gt = stats.gt_rewards if len(stats.gt_rewards) == len(stats.votes) else None
            reward = batch_metrics(stats.votes, gt_rewards=gt)
            reward.pop("majority_ratios", None)  # per-group values live in rollouts/
            reward["majority_ratio_mean"] = reward.pop("majority_ratio")
            out.update({f"reward/{k}": v for k, v in reward.items()})
        elif stats.gt_rewards:
            flat = [x for g in stats.gt_rewards for x in g]
            out["reward/ground_truth_ratio"] = sum(flat) / max(1, len(flat))
            out["reward/pass@n"] = sum(any(g) for g in stats.gt_rewards) / len(stats.gt_rewards)
        return out

    def _write_rollouts(self, step, attempt, problems, groups, rewards, ratios, votes) -> None:
        if not self.is_main:
            return
        keep_every = max(1, self.cfg.log.rollout_keep_every)
        records = []
        for i, problem in enumerate(problems):
            if i % keep_every:
                continue
            records.append(
                {
                    "step": step,
                    "attempt": attempt,
                    "uid": problem.uid,
                    "problem": problem.text,
                    "label": problem.label,
                    "responses": groups[i],
                    "rewards": rewards[i],
                    "majority_ratio": ratios[i],
                    "majority_answer": votes[i].majority_answer if votes else None,
                }
            )
        append_jsonl(self.run_dir / "rollouts" / f"step_{step:06d}.jsonl", records, fsync=False)

    # ---------------------------------------------------------------------------------------------------- eval

    def evaluate(self) -> dict[str, float]:
        from serl.evaluation import evaluate_math

        cfg = self.cfg
        self.logger.phase("eval", f"step {self.step}")
        t0 = time.perf_counter()
        self.model.eval()
        results: dict[str, float] = {}
        for name, problems in self.eval_sets.items():
            metrics, records = evaluate_math(
                self.engine,
                self.tokenizer,
                problems,
                fmt=cfg.eval.prompt_format or cfg.rollout.prompt_format,
                n=1,
                temperature=0.0,
                max_new_tokens=cfg.eval.max_new_tokens,
            )
            short = Path(name).stem if not name.startswith("embedded:") else name.removeprefix("embedded:")
            results.update({f"{short}/{k}": v for k, v in metrics.items() if isinstance(v, int | float)})
            if self.is_main:
                append_jsonl(self.run_dir / "eval" / f"step_{self.step:06d}_{short}.jsonl", records, fsync=False)
        if self.is_main:
            path = self.run_dir / "eval" / f"step_{self.step:06d}.json"
            atomic_write_json(path, {"step": self.step, "metrics": results})
        self.logger.log_eval(self.step, results)
        self.logger.phase("eval", f"done in {time.perf_counter() - t0:.0f}s")
        return results

    # ---------------------------------------------------------------------------------------------------- state

    def close(self) -> None:
        if hasattr(self.source, "close"):
            self.source.close()

    def _append_only_files(self) -> list[Path]:
        files = [self.run_dir / "metrics.jsonl"]
        for sub in ("instructions", "rollouts", "eval"):
            files.extend(sorted((self.run_dir / sub).glob("*.jsonl")))
        return [file for file in files if file.exists()]  # a stall before step 1 leaves no metrics.jsonl yet

    def save(self) -> Path:
        """A resumable checkpoint, written by rank 0: unwrapped weights and state that no world size is baked into."""
        self.logger.phase("save", f"step {self.step}")
        model_state = full_state_dict(self.accelerator, self.policy.model, self.model)  # collective when sharded
        policy_state = self.policy.state_dict()  # collective too: the optimizer state is gathered under FSDP
        if self.cfg.log.debug_dump and self.world > 1:
            self._dump(f"rank{self.rank}_weights_step_{self.step:06d}.pt", self.model.state_dict())
        if not self.is_main:
            self.accelerator.wait_for_everyone()  # the checkpoint exists once rank 0 passes this barrier too
            return self.run_dir / "checkpoints" / f"step_{self.step:06d}"
        state = {
            "step": self.step,
            "iteration": self.iteration,
            "step_in_iteration": self.step_in_iteration,
            "policy": policy_state,
            "source": self.source.state_dict(),
            "carried": self.carried,
            "rng": capture_rng(),  # the global generators (dropout, LoRA dropout); sampling has its own seeds
            "file_sizes": {str(p.relative_to(self.run_dir)): p.stat().st_size for p in self._append_only_files()},
        }
        path = save_checkpoint(
            self.run_dir / "checkpoints", self.step, model_state, state, self.cfg.train.keep_checkpoints
        )
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()
        return path

    def _dump(self, name: str, value: Any) -> None:
        """log.debug_dump: keep a step's global training batch or a rank's weights under RUN_DIR/debug/."""
        folder = self.run_dir / "debug"
        folder.mkdir(exist_ok=True)
        torch.save(value, folder / name)
        flush_and_uncache(folder / name)

    def resume(self) -> bool:
        """Restore the latest checkpoint; cut append-only outputs back to what it had seen. False if none exists."""
        path = latest_checkpoint(self.run_dir / "checkpoints")
        if path is None:
            return False
        model_state, state = load_checkpoint(path)
        if self.policy.uses_deepspeed or state["policy"].get("deepspeed"):
            raise NotImplementedError(
                "resume of DeepSpeed runs is not implemented (ZeRO keeps the optimizer state partitioned in its "
                "engine); continue from the run's HF export checkpoints/iter_XX_hf as model.policy, or train with "
                "FSDP, DDP or one process, whose checkpoints resume on any world size"
            )
        load_full_state_dict(self.policy.model, self.model, model_state)
        known = state["file_sizes"]
        for file in self._append_only_files() if self.is_main else []:
            rel = str(file.relative_to(self.run_dir))
            if rel in known:
                truncate_to(file, known[rel])
            else:
                file.unlink()  # written after the checkpoint: the resumed run writes it again
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()  # rank 0 has cut the files back
            mirror_instructions(self.run_dir, self.rank)
        self.step, self.iteration = state["step"], state["iteration"]
        self.step_in_iteration = state["step_in_iteration"]
        self.policy.load_state_dict(state["policy"])
        self.source.load_state_dict(state["source"])
        self.carried = state["carried"]
        if "rng" in state:  # absent in checkpoints written before it was saved
            restore_rng(state["rng"])
        self._sync_engine()
        self.logger.info(f"resumed from {path.name}: step {self.step}, iteration {self.iteration}")
        return True


def optimizer_steps_per_iteration(cfg: SerlConfig) -> int:
    """Length of one iteration's LR schedule, in optimizer steps."""
    t = cfg.train
    steps = max(1, t.instructions_per_iteration // t.rollout_batch_size)
    sequences = t.rollout_batch_size * cfg.rollout.n_samples_per_prompt
    return steps * t.max_epochs * max(1, sequences // t.train_batch_size)


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
    from serl.parallel import Parallel
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


def prepare_run_dir(cfg: SerlConfig, run_dir: Path | None, resume: bool) -> Path:
    if run_dir is None:
        run_dir = Path(cfg.log.run_dir or f"runs/{cfg.preset}-{time.strftime('%Y%m%d-%H%M%S')}")
    if resume:
        if not (run_dir / "config.yaml").exists():
            raise FileNotFoundError(f"--resume: {run_dir}/config.yaml not found; is this a serl run directory?")
    else:
        if (run_dir / "checkpoints").exists() and any((run_dir / "checkpoints").iterdir()):
            raise FileExistsError(f"{run_dir} already holds checkpoints; use --resume {run_dir} or another run dir")
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", dump_yaml(cfg))
    return run_dir
