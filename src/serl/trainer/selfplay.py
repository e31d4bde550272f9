"""Self-instruction as a problem source for the loop: generation rounds until enough novel problems wait for rollout,
and every fate written to the instruction log, from which the pools are rebuilt exactly on resume."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from serl import rundir as names
from serl.config import SerlConfig
from serl.data import Problem
from serl.rollout.base import RolloutEngine
from serl.selfinstruct.novelty import NoveltyIndex
from serl.selfinstruct.pools import InstructionLog, fate_record, rebuild_pools
from serl.selfinstruct.prompts import load_instruction
from serl.selfinstruct.rounds import generation_round
from serl.selfinstruct.screen import NEAR_HELD_OUT_BOUND
from serl.trainer.sources import Fate, RolloutProblem, StalledError


class InstructionSource:
    def __init__(
        self,
        cfg: SerlConfig,
        seeds: list[Problem],
        tokenizer: Any,
        engine: RolloutEngine,
        run_dir: Path,
        logger: Any,
        held_out: Sequence[str] = (),
    ):
        """HELD_OUT: the evaluation questions; generated problems too close to one are contaminated (screen.py)."""
        self.cfg = cfg
        self.si = cfg.selfinstruct
        self.seed_texts = [p.prompt for p in seeds]
        self.tokenizer = tokenizer
        self.engine = engine
        self.run_dir = run_dir
        self.logger = logger
        self.instruction = load_instruction(self.si.prompt_file)
        self.counts: Counter[str] = Counter()
        self.held_out: NoveltyIndex | None = None
        if held_out:
            # scores are exact above the index's threshold: the lower of the logged bound and the drop bound
            threshold = min(NEAR_HELD_OUT_BOUND, self.si.contamination_threshold)
            self.held_out = NoveltyIndex(threshold=threshold)
            self.held_out.add_many((f"held-out:{i}", text) for i, text in enumerate(dict.fromkeys(held_out)))
        self.start_iteration(1)
        self._rebuild()

    def _rebuild(self) -> None:
        self.pools = rebuild_pools(self.run_dir, self.seed_texts)
        if self.pools.torn_lines:
            self.logger.warning(f"instruction log: ignored {self.pools.torn_lines} torn line(s) while rebuilding")
        self.index = NoveltyIndex(threshold=self.si.rouge_threshold)

    def start_iteration(self, iteration: int) -> None:
        self.iteration = iteration
        self.log = InstructionLog(self.run_dir, iteration)

    def next_batch(self, size: int, *, step: int, attempt: int) -> list[RolloutProblem]:
        """The oldest `size` problems waiting for rollout, running generation rounds until there are enough."""
        rounds = 0
        while len(self.pools.pending()) < size:
            rounds += 1
            if rounds > self.cfg.train.max_attempts_per_step:
                raise StalledError(
                    f"step {step}: self-instruction produced only {len(self.pools.pending())}/{size} novel problems "
                    f"in {rounds - 1} generation rounds; see {self.log.path} for the rejected candidates"
                )
            self._generation_round(step, attempt, rounds)
        return [RolloutProblem(uid=f"gen-{p.id}", text=p.text, generated_id=p.id) for p in self.pools.pending()[:size]]

    def _generation_round(self, step: int, attempt: int, round_: int) -> None:
        self.logger.phase("generate", f"step {step}: round {round_}, {len(self.pools.pending())} problems waiting")
        records = generation_round(
            self.engine,
            self.tokenizer,
            self.pools,
            self.index,
            self.si,
            self.instruction,
            seed=self.cfg.train.seed,
            step=step,
            attempt=attempt,
            round_=round_,
            log=self.log,
            held_out=self.held_out,
        )
        self.counts["candidates"] += len(records)
        self.counts.update(r["fate"] for r in records)
        self.counts["screened"] += sum(not r["fate"].startswith("rejected:rule:") for r in records)
        self.counts["contaminated"] += sum(bool(r.get("contaminated")) for r in records)
        self.counts["near_held_out"] += sum(bool(r.get("near_held_out")) for r in records)

    def observe(self, step: int, fates: Sequence[Fate]) -> None:
        """Log each generated problem's fate: kept / rejected:difficulty (with the filter's input), trained, expired.
        With `selfinstruct.expire_pending`, a training step also expires every problem still waiting for rollout, as
        the reference clears its batch buffer after each step (serl-reference §1.6); they are logged as expired."""
        records = []
        for f in fates:
            extra = {} if f.reward_mean is None else {"reward_mean": f.reward_mean}
            records.append(fate_record(f.problem.generated_id, f.fate, step=step, **extra))
        if self.si.expire_pending and any(f.fate == "trained" for f in fates):
            records += [fate_record(p.id, "expired", step=step) for p in self.pools.pending()]
        self.log.write(records, self.pools)

    def step_metrics(self) -> dict[str, float]:
        """Candidate fates since the last call, as `selfinstruct/*` metrics."""
        prefix = names.SELFINSTRUCT
        out = {
            f"{prefix}candidates": self.counts["candidates"],
            f"{prefix}accepted": self.counts["accepted"],
            f"{prefix}rejected_novelty": self.counts["rejected:novelty"],
            names.KEPT_POOL: len(self.pools.kept_ids),
        }
        if self.held_out is not None:  # share of the candidates that passed the rules
            out[names.CONTAMINATED] = self.counts["contaminated"]
            out[names.SCREENED] = self.counts["screened"]
            out[names.CONTAMINATED_SHARE] = self.counts["contaminated"] / max(1, self.counts["screened"])
            out[names.NEAR_HELD_OUT] = self.counts["near_held_out"]
            out[names.NEAR_HELD_OUT_SHARE] = self.counts["near_held_out"] / max(1, self.counts["screened"])
        for fate, count in self.counts.items():
            if fate.startswith("rejected:rule:"):
                out[f"{prefix}rejected_rule:{fate.removeprefix('rejected:rule:')}"] = count
        self.counts.clear()
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"iteration": self.iteration}  # the pools live in the instruction files

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Called after the trainer cut the instruction files back to the checkpoint: rebuild from them."""
        self.start_iteration(state["iteration"])
        self._rebuild()
        self.counts.clear()

    def close(self) -> None:
        """Nothing to release: the instruction log is appended and synced one batch at a time."""
