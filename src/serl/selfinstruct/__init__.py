"""Self-instruction: few-shot generation prompts, parsing, rule/novelty/difficulty filters and persistent
pools.

One generation round, as the trainer and `serl generate` run it::

    pools = rebuild_pools(run_dir, seed_texts)               # empty run dir: just the seeds
    log, index = InstructionLog(run_dir, iteration=1), NoveltyIndex(0.7)
    prompts = [build_generation_prompt(tok, pools.seeds, pools.kept(), rng).text for _ in range(4)]
    responses = [c.text for c in engine.generate(prompts, generation_params(max_new_tokens=1024))]
    log.write(screen_responses(responses, pools, index, step=step), pools)   # rule + novelty fates
    batch = pools.pending()[:16]                                           # roll out, vote, then:
    log.write([fate_record(p.id, difficulty_fate(v.majority_ratio), step=step, ratio=v.majority_ratio)
               for p, v in zip(batch, votes)], pools)
    log.write([fate_record(i, "trained", step=step) for i in trained_ids], pools)
"""

from __future__ import annotations

from serl.selfinstruct.difficulty import difficulty_fate, passes_difficulty
from serl.selfinstruct.filters import RULES, clean_item, rule_violation
from serl.selfinstruct.novelty import NoveltyIndex, NoveltyResult, rouge_l, rouge_tokens
from serl.selfinstruct.parsing import extract_items
from serl.selfinstruct.pools import GeneratedProblem, InstructionLog, Pools, fate_record, rebuild_pools
from serl.selfinstruct.prompts import (
    GenerationPrompt,
    Instruction,
    build_generation_prompt,
    generation_params,
    load_instruction,
)
from serl.selfinstruct.screen import comparison_set, screen_responses, sync_index

__all__ = [
    "RULES",
    "GeneratedProblem",
    "GenerationPrompt",
    "Instruction",
    "InstructionLog",
    "NoveltyIndex",
    "NoveltyResult",
    "Pools",
    "build_generation_prompt",
    "clean_item",
    "comparison_set",
    "difficulty_fate",
    "extract_items",
    "fate_record",
    "generation_params",
    "load_instruction",
    "passes_difficulty",
    "rebuild_pools",
    "rouge_l",
    "rouge_tokens",
    "rule_violation",
    "screen_responses",
    "sync_index",
]
