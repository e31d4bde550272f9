"""The SeRL loop: per step, fill a batch of problems that pass the difficulty filter (asking the problem source for
more over rollout rounds), roll out n responses each, score them, train on exactly that batch, sync the engine;
iterations, evaluation, checkpoints and exact resume around it. The parts (engine, source, scorer, policy trainer)
are built by `trainer/build.py` and handed in, so tests can run the loop's bookkeeping with stand-ins.

Exact resume: every random draw comes from a seed derived from (run seed, step, attempt, purpose), never from a
global generator that drifts, so a resumed run replays exactly what an uninterrupted one does. Append-only outputs are
cut back to the byte sizes recorded in the checkpoint, so a killed step leaves no duplicate records behind.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from serl import rundir as names
from serl.config import SerlConfig, dump_yaml
from serl.io import append_jsonl, atomic_write_text, flush_and_uncache, truncate_to
from serl.parallel import export_sharded, full_state_dict, load_full_state_dict
from serl.reward.controls import apply_control
from serl.reward.scorer import reward_metrics
from serl.rl.experience import Experience
from serl.rundir import RunDir
from serl.seeding import derive_seed
from serl.selfinstruct.difficulty import group_difficulty, passes_difficulty
from serl.trainer.batch import PassedGroup, StepStats
from serl.trainer.build import TrainingParts
from serl.trainer.canary import CanaryGuard
from serl.trainer.checkpoint import capture_rng, export_hf, load_checkpoint, restore_rng, save_checkpoint
from serl.trainer.distributed import mirror_instructions
from serl.trainer.sources import CanaryStop, Fate, RolloutProblem, StalledError


class SerlTrainer:
    def __init__(self, cfg: SerlConfig, run_dir: Path, logger: Any, parts: TrainingParts):
        self.cfg, self.run_dir, self.run, self.logger = cfg, run_dir, RunDir(run_dir), logger
        self.model, self.tokenizer, self.engine = parts.model, parts.tokenizer, parts.engine
        self.source, self.scorer, self.policy = parts.source, parts.scorer, parts.policy
        self.sync_weights, self.evaluate_policy, self.canary = parts.sync_weights, parts.evaluate, parts.canary
        self.guard = CanaryGuard(cfg.train.canary_patience, cfg.train.canary_margin)
        self.parallel = parts.parallel
        self.accelerator = parts.parallel.accelerator
        self.is_main = parts.parallel.rank == 0
        self.step = 0  # completed training steps
        self.iteration = 1
        self.step_in_iteration = 0
        self.carried: list[PassedGroup] = []
        if cfg.train.reset_optimizer_each_iteration and self.policy.uses_deepspeed:
            raise ValueError("train.reset_optimizer_each_iteration is not supported under DeepSpeed; use FSDP or DDP")

    @property
    def steps_per_iteration(self) -> int:
        return max(1, self.cfg.train.instructions_per_iteration // self.cfg.train.rollout_batch_size)

    @property
    def total_steps(self) -> int:
        total = self.steps_per_iteration * self.cfg.train.num_iterations
        return min(total, self.cfg.train.max_steps) if self.cfg.train.max_steps else total

    # ---------------------------------------------------------------------------------------------------- run

    def fit(self) -> None:
        cfg = self.cfg
        if self.step == 0 and cfg.eval.at_start:
            self.evaluate()
        if self.step == 0 and self.canary is not None:
            self._watch_canary()
        while self.step < self.total_steps:
            if self.step_in_iteration >= self.steps_per_iteration:
                self._end_iteration()
            metrics = self.train_step()
            act = False
            if self.canary is not None and self.step % cfg.eval.canary_every == 0:
                canary_metrics, act = self._watch_canary()
                metrics.update(canary_metrics)
            self.logger.log_step(metrics)
            if act:
                g = self.guard
                raise CanaryStop(
                    f"step {self.step}: canary pass@1 stayed more than {cfg.train.canary_margin} below its best "
                    f"{g.best:.3f} (step {g.best_step}) for {g.below} evaluation(s). State saved in {self.save()}; "
                    f"resume with serl train --resume {self.run_dir}, or retrain with other settings"
                )
            if self.step_in_iteration >= self.steps_per_iteration or self.step >= self.total_steps:
                self._finish_iteration_outputs()
            elif cfg.train.save_every and self.step % cfg.train.save_every == 0:
                self.save()
        self.logger.info(f"training finished after {self.step} steps; run dir: {self.run_dir}")

    def evaluate(self) -> dict[str, float]:
        return self.evaluate_policy(self.step) if self.evaluate_policy is not None else {}

    def _watch_canary(self) -> tuple[dict[str, float], bool]:
        """Evaluate the canary set; keep the best state (rollback mode) or roll back to it. True: stop the run."""
        accuracy = self.canary(self.step)
        verdict = self.guard.observe(self.step, accuracy)
        rollback = self.cfg.train.canary_action == "rollback"
        if verdict == "best" and rollback and self.is_main:
            self.logger.phase("save", f"step {self.step}: best canary state")
            model_state = full_state_dict(self.accelerator, self.policy.model, self.model)
            save_checkpoint(self.run.canary_best, self.step, model_state, {"policy": self.policy.state_dict()}, 1)
        if verdict == "act" and rollback:
            model_state, state = load_checkpoint(self.run.canary_best / f"step_{self.guard.best_step:06d}")
            load_full_state_dict(self.policy.model, self.model, model_state)
            self.policy.load_state_dict(state["policy"])
            self.sync_weights()
            self.guard.rolled_back()
            self.logger.warning(
                f"step {self.step}: canary pass@1 {accuracy:.3f} is below its best; rolled back to the "
                f"weights of step {self.guard.best_step}"
            )
        metrics = {f"{names.CANARY}{k}": v for k, v in self.guard.metrics(accuracy).items()}
        return metrics, verdict == "act" and not rollback

    def _finish_iteration_outputs(self) -> None:
        """Iteration end: optional eval, an HF export, and a resumable checkpoint."""
        self.evaluate()
        self.logger.phase("save", f"iteration {self.iteration}")
        target = self.run.hf_export(self.iteration)
        if self.parallel.shards_parameters:
            export_sharded(self.accelerator, self.policy.model, self.tokenizer, target)
        elif self.is_main:
            export_hf(self.model, self.tokenizer, target)
        self.save()

    def _end_iteration(self) -> None:
        """Start the next iteration from the current weights with a fresh LR schedule (serl-reference §9.9)."""
        self.iteration += 1
        self.step_in_iteration = 0
        self.policy.reset_schedule(self.policy.schedule_total_steps)
        if self.cfg.train.reset_optimizer_each_iteration:
            self.policy.reset_optimizer_state()
        self.source.start_iteration(self.iteration)
        self.logger.info(f"iteration {self.iteration} begins at step {self.step + 1}")

    def train_step(self) -> dict[str, Any]:
        step = self.step + 1
        started = time.perf_counter()
        stats = StepStats()
        batch = self._collect_passing_groups(step, stats)
        self.logger.phase("train", f"step {step}")
        t0 = time.perf_counter()
        experience = Experience.concat([g.experience for g in batch])
        if self.cfg.log.debug_dump and self.is_main:
            self._dump(f"batch_step_{step:06d}.pt", experience)
        self.engine.sleep()  # a colocated vLLM engine frees its GPU memory for the update
        train_metrics = self.policy.train(experience)
        stats.add_time("train", time.perf_counter() - t0)
        self.source.observe(step, [Fate(g.problem, "trained") for g in batch])
        self.sync_weights()
        self.step = step
        self.step_in_iteration += 1
        metrics: dict[str, Any] = {names.STEP: step, names.ITERATION: self.iteration}
        metrics.update(self._filter_metrics(stats))
        metrics.update(reward_metrics(stats.votes, stats.gt_rewards))
        metrics.update({f"{names.TRAIN}{k}": v for k, v in train_metrics.items()})
        metrics.update(self.source.step_metrics())
        metrics.update({names.time_key(k): round(v, 3) for k, v in stats.times.items()})
        metrics[names.STEP_TIME] = round(time.perf_counter() - started, 3)
        metrics[names.ATTEMPTS] = stats.attempts
        ends_iteration = self.step_in_iteration >= self.steps_per_iteration or step >= self.total_steps
        every = self.cfg.eval.every
        if every and step % every == 0 and not ends_iteration:  # the iteration end evaluates anyway
            metrics.update({f"{names.EVAL}{k}": v for k, v in self.evaluate().items()})
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
            self.source.observe(step, [Fate(g.problem, "expired") for g in stale])
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
                t0 = time.perf_counter()
                self.logger.phase("generate" if cfg.train.mode == "serl" else "data", f"step {step}")
                problems = self.source.next_batch(need, step=step, attempt=stats.attempts)
                stats.add_time("generate", time.perf_counter() - t0)
                buffer.extend(self._rollout_and_filter(problems, step, stats))
        except StalledError as err:
            self.carried = buffer
            path = self.save()
            raise StalledError(f"{err} State saved in {path}; resume with serl train --resume {self.run_dir}") from err
        self.carried = buffer[need:]
        return buffer[:need]

    def _rollout_and_filter(self, problems: list[RolloutProblem], step: int, stats: StepStats) -> list[PassedGroup]:
        from serl.rollout import roll_out

        cfg = self.cfg
        n = cfg.rollout.n_samples_per_prompt
        self.logger.phase("rollout", f"step {step}: {len(problems)}×{n}")
        t0 = time.perf_counter()
        self.model.eval()
        seed = derive_seed(cfg.train.seed, "rollout", step, stats.attempts)
        grouped = roll_out(self.engine, self.tokenizer, [p.text for p in problems], cfg.rollout, seed=seed)
        completions = [c for group in grouped for c in group]
        stats.add_time("rollout", time.perf_counter() - t0)

        self.logger.phase("reward", f"step {step}")
        t0 = time.perf_counter()
        groups = [[c.text for c in group] for group in grouped]
        scores = self.scorer.score([p.text for p in problems], [p.label for p in problems], groups)
        stats.add_time("reward", time.perf_counter() - t0)

        lo, hi = cfg.reward.difficulty_low, cfg.reward.difficulty_high
        self.logger.phase("filter", f"step {step}: difficulty {lo} ≤ mean reward ≤ {hi}")
        means = [group_difficulty(rewards) for rewards in scores.rewards]
        kept = [passes_difficulty(mean, lo, hi) for mean in means]
        # a control run trains on altered rewards; the filter above has decided on the true ones
        seed = derive_seed(cfg.train.seed, "control", step, stats.attempts)
        trained_rewards = apply_control(scores.rewards, kept, cfg.reward.control, seed=seed)

        self.logger.phase("experience", f"step {step}: log-probs of {len(completions)} responses")
        t0 = time.perf_counter()
        experience = self.policy.make_experience(
            [c.prompt_ids for c in completions],
            [c.response_ids for c in completions],
            torch.tensor([r for group in trained_rewards for r in group], dtype=torch.float32),
            group_size=n,
        )
        stats.add_time("experience", time.perf_counter() - t0)

        passed: list[PassedGroup] = []
        fates: list[Fate] = []
        for i, (problem, mean, keep) in enumerate(zip(problems, means, kept, strict=True)):
            fates.append(Fate(problem, "kept" if keep else "rejected:difficulty", mean))
            if keep:
                passed.append(PassedGroup(problem, experience.select_groups([i], group_size=n), mean, step))
        stats.groups_scored += len(problems)
        stats.groups_kept += len(passed)
        stats.votes.extend(scores.votes)
        stats.gt_rewards.extend(scores.gt_rewards)
        self.source.observe(step, fates)
        self._write_rollouts(step, stats.attempts, problems, groups, scores, means, trained_rewards)
        return passed

    @staticmethod
    def _filter_metrics(stats: StepStats) -> dict[str, Any]:
        return {
            names.GROUPS_SCORED: stats.groups_scored,
            names.GROUPS_KEPT: stats.groups_kept,
            names.GROUPS_REJECTED_DIFFICULTY: stats.groups_scored - stats.groups_kept,
            names.KEPT_RATIO: stats.groups_kept / max(1, stats.groups_scored),
        }

    def _write_rollouts(self, step, attempt, problems, groups, scores, means, trained_rewards) -> None:
        if not self.is_main:
            return
        keep_every = max(1, self.cfg.log.rollout_keep_every)
        records = []
        for i, problem in enumerate(problems):
            if i % keep_every:
                continue
            vote = scores.votes[i] if scores.votes else None
            records.append(
                {
                    "step": step,
                    "attempt": attempt,
                    "uid": problem.uid,
                    "problem": problem.text,
                    "label": problem.label,
                    "responses": groups[i],
                    "rewards": scores.rewards[i],
                    **({"trained_rewards": trained_rewards[i]} if self.cfg.reward.control != "none" else {}),
                    "reward_mean": means[i],  # the difficulty filter's input
                    "majority_ratio": vote.majority_ratio if vote else None,  # the vote's winner count / n
                    "majority_answer": vote.majority_answer if vote else None,
                }
            )
        append_jsonl(self.run.rollout_file(step), records, fsync=False)

    # ---------------------------------------------------------------------------------------------------- state

    def close(self) -> None:
        self.source.close()

    # what `save` writes: a resume needs every entry
    STATE_ENTRIES = (
        "step",
        "iteration",
        "step_in_iteration",
        "policy",
        "source",
        "carried",
        "canary",
        "rng",
        "file_sizes",
    )

    def save(self) -> Path:
        """A resumable checkpoint, written by rank 0: unwrapped weights and state that no world size is baked into."""
        self.logger.phase("save", f"step {self.step}")
        model_state = full_state_dict(self.accelerator, self.policy.model, self.model)  # collective when sharded
        policy_state = self.policy.state_dict()  # collective too: the optimizer state is gathered under FSDP
        if self.cfg.log.debug_dump and self.parallel.world > 1:
            self._dump(f"rank{self.parallel.rank}_weights_step_{self.step:06d}.pt", self.model.state_dict())
        if not self.is_main:
            self.accelerator.wait_for_everyone()  # the checkpoint exists once rank 0 passes this barrier too
            return self.run.checkpoints / f"step_{self.step:06d}"
        state = {
            "step": self.step,
            "iteration": self.iteration,
            "step_in_iteration": self.step_in_iteration,
            "policy": policy_state,
            "source": self.source.state_dict(),
            "carried": [group.to_state() for group in self.carried],
            "canary": self.guard.state_dict(),
            "rng": capture_rng(),  # the global generators (dropout, LoRA dropout); sampling has its own seeds
            "file_sizes": {str(p.relative_to(self.run_dir)): p.stat().st_size for p in self.run.append_only_files()},
        }
        path = save_checkpoint(self.run.checkpoints, self.step, model_state, state, self.cfg.train.keep_checkpoints)
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()
        return path

    def _dump(self, name: str, value: Any) -> None:
        """log.debug_dump: keep a step's global training batch or a rank's weights under RUN_DIR/debug/."""
        self.run.debug.mkdir(exist_ok=True)
        torch.save(value, self.run.debug / name)
        flush_and_uncache(self.run.debug / name)

    def resume(self, path: Path | None) -> None:
        """Restore the checkpoint at PATH (see `checkpoint.find_resumable`) and cut append-only outputs back to what
        it had seen; with None (stopped before the first checkpoint) drop them all and start at step 0."""
        if path is None:
            self._cut_outputs_back({})
            self.source.load_state_dict(self.source.state_dict())  # rebuilt from the emptied instruction log
            return
        model_state, state = load_checkpoint(path)
        if self.policy.uses_deepspeed or state["policy"].get("deepspeed"):
            raise NotImplementedError(
                "resume of DeepSpeed runs is not implemented (ZeRO keeps the optimizer state partitioned in its "
                "engine); continue from the run's HF export checkpoints/iter_XX_hf as model.policy, or train with "
                "FSDP, DDP or one process, whose checkpoints resume on any world size"
            )
        load_full_state_dict(self.policy.model, self.model, model_state)
        self._cut_outputs_back(state["file_sizes"])
        self.step, self.iteration = state["step"], state["iteration"]
        self.step_in_iteration = state["step_in_iteration"]
        self.policy.load_state_dict(state["policy"])
        self.source.load_state_dict(state["source"])
        self.carried = [PassedGroup.from_state(group) for group in state["carried"]]
        self.guard.load_state_dict(state["canary"])
        restore_rng(state["rng"])
        self.sync_weights()
        self.logger.info(f"resumed from {path.name}: step {self.step}, iteration {self.iteration}")

    def _cut_outputs_back(self, known: dict[str, int]) -> None:
        for file in self.run.append_only_files() if self.is_main else []:
            rel = str(file.relative_to(self.run_dir))
            if rel in known:
                truncate_to(file, known[rel])
            else:
                file.unlink()  # written after the checkpoint: the resumed run writes it again
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()  # rank 0 has cut the files back
            mirror_instructions(self.run_dir, self.parallel.rank)


def prepare_run_dir(cfg: SerlConfig, run_dir: Path | None, resume: bool) -> Path:
    if run_dir is None:
        run_dir = Path(cfg.log.run_dir or f"runs/{cfg.preset}-{time.strftime('%Y%m%d-%H%M%S')}")
    run = RunDir(run_dir)
    if resume:
        if not run.config.exists():
            raise FileNotFoundError(f"--resume: {run.config} not found; is this a serl run directory?")
    else:
        if run.checkpoints.exists() and any(run.checkpoints.iterdir()):
            raise FileExistsError(f"{run_dir} already holds checkpoints; use --resume {run_dir} or another run dir")
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run.config, dump_yaml(cfg))
    return run_dir
