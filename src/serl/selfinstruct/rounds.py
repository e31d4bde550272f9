"""One self-instruction generation round, as `serl train` (trainer/selfplay.py) and `serl generate`
(selfinstruct/standalone.py) both run it, from the run's `selfinstruct` config section and with the same seeds.

A round builds `generation_batch_size` few-shot prompts, generates one response each with the current policy, and
screens the responses (parsing, rules, novelty) into candidate records, which the log then holds. Its draws are
seeded from (run seed, step, attempt, round), so a resumed run replays the same round."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from serl.seeding import derive_seed
from serl.selfinstruct.novelty import NoveltyIndex
from serl.selfinstruct.pools import InstructionLog, Pools
from serl.selfinstruct.prompts import Instruction, build_generation_prompt, generation_params
from serl.selfinstruct.screen import screen_responses

if TYPE_CHECKING:
    from serl.config import SelfInstructConfig


def generation_round(
    engine: Any,
    tokenizer: Any,
    pools: Pools,
    index: NoveltyIndex,
    si: SelfInstructConfig,
    instruction: Instruction,
    *,
    seed: int,
    step: int,
    attempt: int,
    round_: int,
    log: InstructionLog | None = None,
    held_out: NoveltyIndex | None = None,
) -> list[dict[str, Any]]:
    """Generate and screen one round; the records are written to LOG (or only applied to POOLS without one).
    HELD_OUT: the evaluation questions, for the contamination check (`screen_responses`)."""
    rng = random.Random(derive_seed(seed, "fewshot", step, attempt, round_))
    prompts = [
        build_generation_prompt(
            tokenizer,
            pools.seeds,
            pools.kept(),
            rng,
            num_shots=si.few_shot,
            max_generated=si.max_generated_shots,
            prompt_max_tokens=si.prompt_max_len,
            instruction=instruction,
            overflow=si.prompt_overflow,
            examples_turn=si.examples_turn,
        )
        for _ in range(si.generation_batch_size)
    ]
    params = generation_params(
        max_new_tokens=si.max_new_tokens,
        temperature=si.temperature,
        top_p=si.top_p,
        presence_penalty=si.presence_penalty,
        seed=derive_seed(seed, "generate", step, attempt, round_),
    )
    completions = engine.generate([p.engine_input for p in prompts], params, n=1)
    records = screen_responses(
        [p.continues + c.text for p, c in zip(prompts, completions, strict=True)],
        pools,
        index,
        step=step,
        scope=si.novelty_scope,
        faithful_capitalize=si.faithful_capitalize,
        min_words=si.min_words,
        max_words=si.max_words,
        reject_stated_results=si.reject_stated_results,
        held_out=held_out,
        drop_contaminated=si.drop_contaminated,
        contamination_threshold=si.contamination_threshold,
    )
    if log is not None:
        log.write(records, pools)
    else:
        for record in records:
            pools.apply(record)
    return records
