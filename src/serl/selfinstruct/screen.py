"""From generated responses to candidate records: parse, clean, apply the rules, then the novelty filter.

The caller writes the records with `InstructionLog.write(records, pools)`; until then the pools are unchanged,
so a round that crashes before the write leaves no trace and is simply generated again."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from serl.selfinstruct.choices import NOVELTY_SCOPES, NoveltyScope
from serl.selfinstruct.filters import clean_item, rule_violation
from serl.selfinstruct.novelty import NoveltyIndex
from serl.selfinstruct.parsing import extract_items
from serl.selfinstruct.pools import Pools

# The share of generated problems within this ROUGE-L F of a held-out question is always logged (`near_held_out`),
# whatever selfinstruct.contamination_threshold drops: 0.7, the novelty filter's bound and the measure.
NEAR_HELD_OUT_BOUND = 0.7


def seed_key(index: int) -> str:
    return f"seed:{index}"


def generated_key(problem_id: int) -> str:
    return f"gen:{problem_id}"


def comparison_set(pools: Pools, scope: NoveltyScope) -> dict[str, str]:
    """What a new candidate is compared with: the seeds plus every accepted problem (`all`, the default) or
    plus only the accepted problems still waiting for rollout (`reference`: the reference's batch buffer,
    §1.5)."""
    if scope not in NOVELTY_SCOPES:
        raise ValueError(f"unknown novelty scope {scope!r}; expected one of {', '.join(NOVELTY_SCOPES)}")
    wanted = {seed_key(i): text for i, text in enumerate(pools.seeds)}
    problems = pools.history.values() if scope == "all" else pools.pending()
    wanted.update((generated_key(p.id), p.text) for p in problems)
    return wanted


def sync_index(index: NoveltyIndex, pools: Pools, scope: NoveltyScope) -> None:
    """Make INDEX hold exactly the comparison set (adds and removes only the difference)."""
    wanted = comparison_set(pools, scope)
    for key in [k for k in index.keys() if k not in wanted]:  # noqa: SIM118  (keys() is a copy)
        index.discard(key)
    index.add_many((key, text) for key, text in wanted.items() if key not in index)


def screen_responses(
    responses: Sequence[str],
    pools: Pools,
    index: NoveltyIndex,
    *,
    step: int,
    scope: NoveltyScope = "all",
    faithful_capitalize: bool = False,
    min_words: int = 4,
    max_words: int = 150,
    reject_stated_results: bool = False,
    held_out: NoveltyIndex | None = None,
    drop_contaminated: bool = True,
    contamination_threshold: float = NEAR_HELD_OUT_BOUND,
) -> list[dict[str, Any]]:
    """One record per parsed item, ids from `pools.next_id` on: `rejected:rule:<name>`, `rejected:novelty` or
    `accepted` (the last two with the max ROUGE-L F and the nearest text). Accepted items join INDEX at once,
    so later items of the same round are compared with them, as in the reference.

    HELD_OUT (an index of the evaluation questions, its threshold at most both bounds below): an item that passes the
    rules and scores ROUGE-L F above NEAR_HELD_OUT_BOUND against one of them is marked `near_held_out`, and above
    CONTAMINATION_THRESHOLD `contaminated`, both with that score and text. With DROP_CONTAMINATED a contaminated item
    is `rejected:contamination` and never trained on, so a gain on the held-out set cannot come from training on
    near-copies of it. `near_held_out` is logged whatever the drop bound, so a run that drops only token-identical
    copies (0.99) still reports how much of what it trained on lies within 0.7 of the held-out set."""
    sync_index(index, pools, scope)
    records: list[dict[str, Any]] = []
    for response in responses:
        for item in extract_items(response):
            text = clean_item(item, faithful_capitalize=faithful_capitalize)
            record: dict[str, Any] = {"id": pools.next_id + len(records), "step": step, "text": text}
            rule = rule_violation(
                text, min_words=min_words, max_words=max_words, reject_stated_results=reject_stated_results
            )
            if rule is not None:
                record["fate"] = f"rejected:rule:{rule}"
            records.append(record)
    if held_out is not None:
        if held_out.threshold > min(NEAR_HELD_OUT_BOUND, contamination_threshold):
            raise ValueError(  # its scores are exact only above its own threshold
                f"the held-out index's threshold {held_out.threshold} is above a bound it must decide "
                f"({NEAR_HELD_OUT_BOUND} or {contamination_threshold})"
            )
        for record in (r for r in records if "fate" not in r):
            near = held_out.score(record["text"])
            if near.novel:
                continue
            record |= {"held_out_score": near.score, "held_out": held_out.text(near.nearest)}
            record["near_held_out"] = near.score > NEAR_HELD_OUT_BOUND
            record["contaminated"] = near.score > contamination_threshold
            if record["contaminated"] and drop_contaminated:
                record["fate"] = "rejected:contamination"
    to_check = [r for r in records if "fate" not in r]
    results = index.check_and_add_many([(generated_key(r["id"]), r["text"]) for r in to_check])
    for record, result in zip(to_check, results, strict=True):
        record["fate"] = "accepted" if result.novel else "rejected:novelty"
        record["score"] = result.score
        record["nearest_id"] = result.nearest
        record["nearest"] = index.text(result.nearest) if result.nearest is not None else None
    return records
