"""Self-instruction on its own (`serl generate`): generation rounds until N problems pass every filter.

Each round builds few-shot prompts, generates with the rollout engine, and screens the responses (rules,
novelty). With `rollouts > 0` the accepted problems are then rolled out that many times each, majority-voted,
and only those within the difficulty bounds count (they also join the kept pool that later prompts draw from).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from serl.rollout.base import RolloutEngine, SamplingParams
from serl.selfinstruct.difficulty import difficulty_fate
from serl.selfinstruct.novelty import NoveltyIndex
from serl.selfinstruct.pools import CANDIDATE_FATES, GeneratedProblem, InstructionLog, Pools, fate_record
from serl.selfinstruct.prompts import Instruction, build_generation_prompt, generation_params
from serl.selfinstruct.screen import NoveltyScope, screen_responses


@dataclass
class GenerationOutcome:
    problems: list[dict[str, Any]]  # the first N problems that passed every filter, as output records
    # log lines per fate over all rounds: each candidate's screening fate, then (rollouts > 0) an accepted
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
    engine: RolloutEngine,
    tokenizer: Any,
    pools: Pools,
    rng: random.Random,
    *,
    n: int,
    log: InstructionLog | None = None,
    prompts_per_round: int = 8,
    max_rounds: int = 100,
    num_shots: int = 8,
    max_generated: int = 2,
    prompt_max_tokens: int | None = 1024,
    max_new_tokens: int = 256,
    instruction: Instruction | None = None,
    scope: NoveltyScope = "all",
    threshold: float = 0.7,
    faithful_capitalize: bool = False,
    rollouts: int = 0,
    rollout_format: str = "chat_boxed",
    rollout_max_new_tokens: int = 256,
    difficulty_low: float = 0.2,
    difficulty_high: float = 0.8,
    on_round: Callable[[GenerationOutcome], None] | None = None,
) -> GenerationOutcome:
    """Run rounds until N problems pass (or MAX_ROUNDS ran); fates go to LOG and POOLS as they happen."""
    if n < 1 or prompts_per_round < 1 or max_rounds < 1:
        raise ValueError("n, prompts_per_round and max_rounds must be at least 1")
    outcome = GenerationOutcome(problems=[])
    index = NoveltyIndex(threshold)
    started = time.perf_counter()

    def record(records: list[dict[str, Any]]) -> None:
        if log is not None:
            log.write(records, pools)
        else:
            for r in records:
                pools.apply(r)
        outcome.fates.update(r["fate"] for r in records)

    while outcome.rounds < max_rounds and len(outcome.problems) < n:
        step = outcome.rounds
        prompts = [
            build_generation_prompt(
                tokenizer,
                pools.seeds,
                pools.kept(),
                rng,
                num_shots=num_shots,
                max_generated=max_generated,
                prompt_max_tokens=prompt_max_tokens,
                instruction=instruction,
            ).text
            for _ in range(prompts_per_round)
        ]
        params = generation_params(max_new_tokens=max_new_tokens, seed=rng.getrandbits(31))
        responses = [c.text for c in engine.generate(prompts, params)]
        screened = screen_responses(
            responses, pools, index, step=step, scope=scope, faithful_capitalize=faithful_capitalize
        )
        record(screened)
        accepted = {r["id"]: r for r in screened if r["fate"] == "accepted"}
        problems = [pools.history[i] for i in accepted]
        ratios: dict[int, float] = {}
        if rollouts > 0 and problems:
            ratios = _majority_ratios(
                engine, tokenizer, problems, rng, rollouts, rollout_format, rollout_max_new_tokens
            )
            fates = {i: difficulty_fate(r, difficulty_low, difficulty_high) for i, r in ratios.items()}
            record([fate_record(p.id, fates[p.id], step=step, ratio=ratios[p.id]) for p in problems])
            problems = [p for p in problems if pools.history[p.id].passed_difficulty]
        for problem in problems[: n - len(outcome.problems)]:
            outcome.problems.append(_output_record(problem, accepted[problem.id], ratios.get(problem.id)))
        outcome.rounds += 1
        outcome.seconds = time.perf_counter() - started
        if on_round is not None:
            on_round(outcome)
    return outcome


def _majority_ratios(
    engine: RolloutEngine,
    tokenizer: Any,
    problems: list[GeneratedProblem],
    rng: random.Random,
    rollouts: int,
    rollout_format: str,
    max_new_tokens: int,
) -> dict[int, float]:
    """Roll each problem out ROLLOUTS times (T 1.0, as the reference's rollouts); majority-vote each."""
    from serl.reward import score_groups
    from serl.rollout.formats import format_prompt

    prompts = [format_prompt(tokenizer, p.text, rollout_format) for p in problems]
    seed = rng.getrandbits(31)
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=max_new_tokens, seed=seed)
    texts = [c.text for c in engine.generate(prompts, params, n=rollouts)]
    groups = [texts[i * rollouts : (i + 1) * rollouts] for i in range(len(problems))]
    votes = score_groups(groups)
    return {p.id: vote.majority_ratio for p, vote in zip(problems, votes, strict=True)}


def _output_record(problem: GeneratedProblem, screened: dict[str, Any], ratio: float | None) -> dict:
    record = {"id": problem.id, "problem": problem.text, "novelty_score": screened["score"]}
    record["nearest"] = screened["nearest"]
    if ratio is not None:
        record["majority_ratio"] = ratio
    return record
