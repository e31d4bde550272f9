"""Self-instruction: few-shot generation prompts, parsing, rule/novelty/difficulty filters and persistent
pools.

One generation round, as `serl train` and `serl generate` both run it (`rounds.generation_round`)::

    pools = rebuild_pools(run_dir, seed_texts)               # empty run dir: just the seeds
    log, index = InstructionLog(run_dir, iteration=1), NoveltyIndex(0.7)
    generation_round(engine, tok, pools, index, cfg.selfinstruct, instruction, seed=42, step=1, attempt=1,
                     round_=1, log=log)                      # prompts, generation, rule + novelty fates
    batch = pools.pending()[:16]                             # roll out, score, then per problem:
    mean = group_difficulty(rewards)                         # the difficulty filter's input
    log.write([fate_record(p.id, difficulty_fate(mean), step=1, reward_mean=mean)], pools)
    log.write([fate_record(i, "trained", step=1) for i in trained_ids], pools)

Public names are imported from their submodules on first use (`serl.lazy`), so importing `serl.selfinstruct.choices`
(as the config loader does) does not import torch."""

from __future__ import annotations

from serl.lazy import lazy_exports

_EXPORTS = {
    "difficulty_fate": "difficulty",
    "group_difficulty": "difficulty",
    "passes_difficulty": "difficulty",
    "RULES": "filters",
    "clean_item": "filters",
    "rule_violation": "filters",
    "NoveltyIndex": "novelty",
    "NoveltyResult": "novelty",
    "rouge_l": "novelty",
    "rouge_tokens": "novelty",
    "extract_items": "parsing",
    "GeneratedProblem": "pools",
    "InstructionLog": "pools",
    "Pools": "pools",
    "fate_record": "pools",
    "rebuild_pools": "pools",
    "GenerationPrompt": "prompts",
    "Instruction": "prompts",
    "build_generation_prompt": "prompts",
    "generation_params": "prompts",
    "load_instruction": "prompts",
    "generation_round": "rounds",
    "comparison_set": "screen",
    "screen_responses": "screen",
    "sync_index": "screen",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
