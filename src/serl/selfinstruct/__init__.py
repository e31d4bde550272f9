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

Public names are imported from their submodules on first use (`serl.lazy`), so importing `serl.selfinstruct.choices`
(as the config loader does) does not import torch."""

from __future__ import annotations

from serl.lazy import lazy_exports

_EXPORTS = {
    "difficulty_fate": "difficulty",
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
    "comparison_set": "screen",
    "screen_responses": "screen",
    "sync_index": "screen",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
