"""Pools, the append-only fate log, exact rebuild after a crash, and screening responses into fate records."""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest

from serl.selfinstruct.novelty import NoveltyIndex
from serl.selfinstruct.pools import InstructionLog, Pools, fate_record, rebuild_pools
from serl.selfinstruct.screen import comparison_set, screen_responses

SEEDS = [
    "What is the sum of the first ten positive integers?",
    "A rectangle has length 8 and width 3. What is its area?",
    "How many ways can 4 people stand in a line?",
]
ROUND_1 = [
    "Here you go:\n"
    "9. What is the sum of the first ten positive integers?\n"  # a seed copy: novelty
    "10. Draw a circle with radius 3.\n"  # blacklist
    "11. Find the product of 12 and 13 and then add 7.\n"
    "12. Short one?",  # length
    "9. A train leaves at 3 pm and travels 120 km at 60 km per hour. When does it arrive?\n"
    "10. Find the product of 12 and 13, then add 7!",  # a copy of an item accepted a moment ago: novelty
]


def state(pools: Pools) -> dict:
    """Everything but the torn-line counter."""
    return {k: v for k, v in dataclasses.asdict(pools).items() if k != "torn_lines"}


def run_round(tmp_path, pools, index, responses, step, scope="all"):
    log = InstructionLog(tmp_path, iteration=1)
    records = screen_responses(responses, pools, index, step=step, scope=scope)
    log.write(records, pools)
    return records


def test_screening_gives_every_item_an_id_and_a_fate(tmp_path):
    pools, index = Pools(seeds=SEEDS), NoveltyIndex(0.7)
    records = run_round(tmp_path, pools, index, ROUND_1, step=0)
    assert [r["id"] for r in records] == list(range(6))
    assert [r["fate"] for r in records] == [
        "rejected:novelty",
        "rejected:rule:blacklist",
        "accepted",
        "rejected:rule:length",
        "accepted",
        "rejected:novelty",
    ]
    assert (records[0]["score"], records[0]["nearest_id"], records[0]["nearest"]) == (1.0, "seed:0", SEEDS[0])
    # 10 and 11 tokens sharing 10 ("and" is extra): F = 2·10 / 21
    assert records[5]["nearest_id"] == "gen:2" and records[5]["score"] == pytest.approx(20 / 21)
    assert pools.next_id == 6 and list(pools.history) == [2, 4]
    assert [p.text for p in pools.pending()] == [records[2]["text"], records[4]["text"]]
    text = (tmp_path / "instructions" / "iter_0001.jsonl").read_text()
    lines = [json.loads(line) for line in text.splitlines()]
    assert [line["fate"] for line in lines] == [r["fate"] for r in records]
    assert all(line["iteration"] == 1 and line["step"] == 0 for line in lines)


def test_a_problem_that_states_its_result_is_rejected_only_when_asked():
    responses = ["9. What is 27 * 2 = 54.\n10. What is 27 * 3 = ?\n11. Solve 3x + 2 = 11 for x."]
    asked = screen_responses(responses, Pools(seeds=SEEDS), NoveltyIndex(0.7), step=0, reject_stated_results=True)
    assert [r["fate"] for r in asked] == ["rejected:rule:stated_result", "accepted", "accepted"]
    default = screen_responses(responses, Pools(seeds=SEEDS), NoveltyIndex(0.7), step=0)
    assert default[0]["fate"] == "accepted"


def test_fates_move_problems_between_pools_and_rebuild_exactly(tmp_path):
    pools, index = Pools(seeds=SEEDS), NoveltyIndex(0.7)
    run_round(tmp_path, pools, index, ROUND_1, step=0)
    log = InstructionLog(tmp_path, iteration=1)
    kept = fate_record(2, "kept", step=0, reward_mean=0.5)
    difficulty = [kept, fate_record(4, "rejected:difficulty", step=0, reward_mean=1.0)]
    log.write(difficulty, pools)
    log.write([fate_record(2, "trained", step=0)], pools)
    log2 = InstructionLog(tmp_path, iteration=2)
    responses = ["1. How many odd numbers lie between 10 and 30?"]
    log2.write(screen_responses(responses, pools, index, step=1), pools)
    log2.write([fate_record(6, "kept", step=1, reward_mean=0.25), fate_record(6, "expired", step=1)], pools)

    assert pools.kept() == [pools.history[2].text, pools.history[6].text]
    assert pools.kept(iteration=2) == [pools.history[6].text]
    assert pools.pending() == []
    assert pools.history[2].fate == "trained" and pools.history[2].trained_step == 0
    assert pools.history[4].fate == "rejected:difficulty" and pools.history[4].reward_mean == 1.0
    assert pools.history[6].fate == "expired" and pools.history[6].passed_difficulty
    rebuilt = rebuild_pools(tmp_path, SEEDS)
    assert state(rebuilt) == state(pools) and rebuilt.torn_lines == 0 and rebuilt.next_id == 7


def test_replaying_lines_twice_changes_nothing(tmp_path):
    pools, index = Pools(seeds=SEEDS), NoveltyIndex(0.7)
    records = run_round(tmp_path, pools, index, ROUND_1, step=0)
    later = [fate_record(2, "kept", step=0, reward_mean=0.5), fate_record(2, "trained", step=0)]
    log = InstructionLog(tmp_path)
    log.write(later, pools)
    before = state(pools)
    log.write(records + later + [fate_record(2, "kept", step=0, reward_mean=0.5)], pools)  # a replayed step
    assert state(pools) == before
    assert state(rebuild_pools(tmp_path, SEEDS)) == before
    assert pools.kept() == [pools.history[2].text] and pools.history[2].fate == "trained"


def test_torn_last_line_is_ignored_and_reported_for_every_cut_point(tmp_path, caplog):
    """A crash mid-write leaves a prefix of the last line: the pools rebuild as if it was never written."""
    pools, index = Pools(seeds=SEEDS), NoveltyIndex(0.7)
    run_round(tmp_path, pools, index, ROUND_1, step=0)
    before_last = state(pools)
    InstructionLog(tmp_path).write([fate_record(2, "kept", step=0, reward_mean=0.5)], pools)
    path = tmp_path / "instructions" / "iter_0001.jsonl"
    data = path.read_bytes()
    last_start = data.rstrip(b"\n").rfind(b"\n") + 1
    for cut in range(last_start + 1, len(data) - 1):  # every strict prefix of the last line, newline excluded
        path.write_bytes(data[:cut])
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            rebuilt = rebuild_pools(tmp_path, SEEDS)
        assert rebuilt.torn_lines == 1, cut
        assert state(rebuilt) == before_last, cut
        assert any("torn" in message for message in caplog.messages)
    path.write_bytes(data[: len(data) - 1])  # only the newline lost: the line is whole and counts
    assert state(rebuild_pools(tmp_path, SEEDS)) == state(pools)


def test_appending_after_a_crash_cuts_the_torn_tail_first(tmp_path):
    pools, index = Pools(seeds=SEEDS), NoveltyIndex(0.7)
    run_round(tmp_path, pools, index, ROUND_1, step=0)
    path = tmp_path / "instructions" / "iter_0001.jsonl"
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"id": 2, "fate": "ke')  # torn
    resumed = rebuild_pools(tmp_path, SEEDS)
    assert resumed.torn_lines == 1
    InstructionLog(tmp_path).write([fate_record(2, "kept", step=0, reward_mean=0.5)], resumed)
    assert path.read_bytes().startswith(whole) and path.read_bytes().count(b"\n") == whole.count(b"\n") + 1
    rebuilt = rebuild_pools(tmp_path, SEEDS)
    assert rebuilt.torn_lines == 0 and state(rebuilt) == state(resumed)
    assert rebuilt.kept() == [pools.history[2].text]


def test_malformed_records_are_skipped_with_a_warning(tmp_path, caplog):
    folder = tmp_path / "instructions"
    folder.mkdir()
    lines = [
        {"id": 0, "fate": "accepted", "text": "What is 3 times 4 plus 5?", "step": 0},
        {"fate": "accepted", "text": "no id"},
        {"id": 1, "fate": "accepted", "step": 0},  # no text
        {"id": 99, "fate": "kept", "step": 0},  # unknown id
        {"id": 0, "fate": "promoted", "step": 0},  # unknown fate
        [1, 2, 3],
    ]
    (folder / "iter_0001.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    with caplog.at_level(logging.WARNING):
        pools = rebuild_pools(tmp_path, SEEDS)
    assert list(pools.history) == [0] and pools.next_id == 2 and pools.torn_lines == 1
    assert len(caplog.records) == 5


def test_empty_run_dir_gives_only_the_seeds(tmp_path):
    pools = rebuild_pools(tmp_path / "nothing-here", SEEDS)
    assert pools.seeds == SEEDS and pools.history == {} and pools.next_id == 0 and pools.kept() == []


def test_fate_record_rejects_unknown_fates():
    with pytest.raises(ValueError, match="unknown fate"):
        fate_record(1, "accepted", step=0)


def test_novelty_scope_all_versus_reference(tmp_path):
    """`reference` compares with the seeds and the problems waiting for rollout; `all` with every accepted."""
    problem = "1. A shop sells pens at 3 dollars each. How much do 7 pens cost in total?"
    again = "1. A shop sells pens at 3 dollars each. How much do 7 pens cost altogether?"
    for scope, expected in (("all", "rejected:novelty"), ("reference", "accepted")):
        run_dir = tmp_path / scope
        pools, index = Pools(seeds=SEEDS), NoveltyIndex(0.7)
        first = run_round(run_dir, pools, index, [problem], step=0, scope=scope)
        assert [r["fate"] for r in first] == ["accepted"]
        waiting = run_round(run_dir, pools, index, [again], step=0, scope=scope)
        assert [r["fate"] for r in waiting] == ["rejected:novelty"]  # still waiting: compared in both scopes
        InstructionLog(run_dir).write([fate_record(0, "kept", step=0, reward_mean=0.5)], pools)
        assert set(comparison_set(pools, scope)) == (
            {"seed:0", "seed:1", "seed:2"} | ({"gen:0"} if scope == "all" else set())
        )
        later = run_round(run_dir, pools, index, [again], step=1, scope=scope)
        assert [r["fate"] for r in later] == [expected]
    with pytest.raises(ValueError, match="unknown novelty scope"):
        comparison_set(pools, "everything")


def test_contaminated_candidates_are_dropped_or_marked(tmp_path):
    held_out = NoveltyIndex(0.7)
    # a held-out question that round 1's train item copies with one word changed: 19 tokens, 18 shared, F = 18/19
    held_out.add("held-out:0", "A train leaves at 3 pm and travels 120 km at 60 km per hour. When does it stop?")
    pools, index = Pools(seeds=SEEDS), NoveltyIndex(0.7)
    records = screen_responses(ROUND_1, pools, index, step=0, held_out=held_out)
    fates = [r["fate"] for r in records]
    assert fates == [
        "rejected:novelty",
        "rejected:rule:blacklist",
        "accepted",
        "rejected:rule:length",
        "rejected:contamination",  # never reaches the novelty index, so it cannot reject later items either
        "rejected:novelty",
    ]
    train = records[4]
    assert train["contaminated"] and train["near_held_out"] and train["held_out_score"] == pytest.approx(18 / 19)
    assert train["held_out"].endswith("When does it stop?")
    kept = screen_responses(
        ROUND_1, Pools(seeds=SEEDS), NoveltyIndex(0.7), step=0, held_out=held_out, drop_contaminated=False
    )
    assert [r["fate"] for r in kept] == [f if f != "rejected:contamination" else "accepted" for f in fates]
    assert kept[4]["contaminated"] and not any(r.get("contaminated") for i, r in enumerate(kept) if i != 4)
    # a drop bound above the item's score (18/19) keeps it, still marked as near the held-out set (F > 0.7)
    loose = screen_responses(
        ROUND_1, Pools(seeds=SEEDS), NoveltyIndex(0.7), step=0, held_out=held_out, contamination_threshold=0.99
    )
    assert loose[4]["fate"] == "accepted" and loose[4]["near_held_out"] and not loose[4]["contaminated"]
    with pytest.raises(ValueError, match="held-out index's threshold"):  # its scores would not be exact at 0.7
        screen_responses(ROUND_1, Pools(seeds=SEEDS), NoveltyIndex(0.7), step=0, held_out=NoveltyIndex(0.99))
    log = InstructionLog(tmp_path, iteration=1)
    log.write(records, pools)  # the log and the pools know the new fate
    assert list(pools.history) == [2] and rebuild_pools(tmp_path, SEEDS).next_id == 6
