"""Self-instruction on its own (`serl generate`): generation rounds until N problems pass every filter.

Each round is the one `serl train` runs (`selfinstruct.rounds`), from the same config section and seeds. With
`difficulty=True` the accepted problems are then rolled out as the run's `rollout` section says, scored by the
run's majority vote, and only those whose mean reward lies within the difficulty bounds count (they also join the
kept pool that later prompts draw from): the same difficulty rule as the training loop's.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from serl.seeding import derive_seed
from serl.selfinstruct.difficulty import difficulty_fate, group_difficulty
from serl.selfinstruct.novelty import NoveltyIndex
from serl.selfinstruct.pools import CANDIDATE_FATES, GeneratedProblem, InstructionLog, Pools, fate_record
from serl.selfinstruct.prompts import Instruction, load_instruction
from serl.selfinstruct.rounds import generation_round

if TYPE_CHECKING:
    from serl.config import SerlConfig


@dataclass
class GenerationOutcome:
    problems: list[dict[str, Any]]  # the first N problems that passed every filter, as output records
    # log lines per fate over all rounds: each candidate's screening fate, then (difficulty on) an accepted
    # problem's kept / rejected:difficulty, so the values sum to more than the candidates; see `candidates`
    fates: Counter[str] = field(default_factory=Counter)
    rounds: int = 0
    seconds: float = 0.0

    @property
    def candidates(self) -> int:
        """Candidates screened: each got exactly one screening fate (accepted, rejected:rule:*, :novelty)."""
        return sum(v for k, v in self.fates.items() if is_screening_fate(k))


def is_screening_fate(fate: str) -> bool:
    """True for a candidate's first fate, False for the later ones of an accepted problem (kept, ...)."""
    return fate in CANDIDATE_FATES or fate.startswith("rejected:rule:")


def generate_problems(
    engine: Any,
    tokenizer: Any,
    pools: Pools,
    cfg: SerlConfig,
    *,
    n: int,
    log: InstructionLog | None = None,
    max_rounds: int = 100,
    difficulty: bool = False,
    instruction: Instruction | None = None,
    on_round: Callable[[GenerationOutcome], None] | None = None,
) -> GenerationOutcome:
    """Run rounds until N problems pass (or MAX_ROUNDS ran); fates go to LOG and POOLS as they happen. Round r is
    seeded as step r of a training run's first attempt; INSTRUCTION (default: `selfinstruct.prompt_file`)."""
    if n < 1 or max_rounds < 1:
        raise ValueError("n and max_rounds must be at least 1")
    if difficulty and cfg.rollout.n_samples_per_prompt < 2:
        raise ValueError("the difficulty filter needs rollout.n_samples_per_prompt >= 2")
    instruction = instruction or load_instruction(cfg.selfinstruct.prompt_file)
    outcome = GenerationOutcome(problems=[])
    index = NoveltyIndex(cfg.selfinstruct.rouge_threshold)
    started = time.perf_counter()

    def record(records: list[dict[str, Any]]) -> None:
        if log is not None:
            log.write(records, pools)
        else:
            for r in records:
                pools.apply(r)
        outcome.fates.update(r["fate"] for r in records)

    while outcome.rounds < max_rounds and len(outcome.problems) < n:
        step = outcome.rounds + 1
        screened = generation_round(
            engine,
            tokenizer,
            pools,
            index,
            cfg.selfinstruct,
            instruction,
            seed=cfg.train.seed,
            step=step,
            attempt=1,
            round_=1,
            log=log,
        )
        outcome.fates.update(r["fate"] for r in screened)
        accepted = {r["id"]: r for r in screened if r["fate"] == "accepted"}
        problems = [pools.history[i] for i in accepted]
        means: dict[int, float] = {}
        if difficulty and problems:
            means = _reward_means(engine, tokenizer, problems, cfg, step)
            lo, hi = cfg.reward.difficulty_low, cfg.reward.difficulty_high
            record(
                [
                    fate_record(p.id, difficulty_fate(means[p.id], lo, hi), step=step, reward_mean=means[p.id])
                    for p in problems
                ]
            )
            problems = [p for p in problems if pools.history[p.id].passed_difficulty]
        for problem in problems[: n - len(outcome.problems)]:
            outcome.problems.append(_output_record(problem, accepted[problem.id], means.get(problem.id)))
        outcome.rounds += 1
        outcome.seconds = time.perf_counter() - started
        if on_round is not None:
            on_round(outcome)
    return outcome


def _reward_means(
    engine: Any, tokenizer: Any, problems: list[GeneratedProblem], cfg: SerlConfig, step: int
) -> dict[int, float]:
    """Roll each problem out and score it as a training step does; each group's mean reward (the difficulty input)."""
    from serl.reward.scorer import Scorer
    from serl.rollout import roll_out

    groups = roll_out(
        engine, tokenizer, [p.text for p in problems], cfg.rollout, seed=derive_seed(cfg.train.seed, "rollout", step, 1)
    )
    texts = [[c.text for c in group] for group in groups]
    scores = Scorer(cfg.reward).score([p.text for p in problems], [None] * len(problems), texts)
    return {p.id: group_difficulty(rewards) for p, rewards in zip(problems, scores.rewards, strict=True)}


def _output_record(problem: GeneratedProblem, screened: dict[str, Any], reward_mean: float | None) -> dict:
    record = {"id": problem.id, "problem": problem.text, "novelty_score": screened["score"]}
    record["nearest"] = screened["nearest"]
    if reward_mean is not None:
        record["reward_mean"] = reward_mean
    return record
