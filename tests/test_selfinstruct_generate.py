"""Self-instruction end to end with the embedded model: generation rounds, fates, the log and `serl generate`.

The model's samples are not asserted (they differ across CPUs); the bookkeeping around them is: every parsed item
gets exactly one first fate, every accepted one exactly one difficulty fate, the pools rebuilt from the log
equal the live ones, and the fate table counts each candidate once.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections import Counter

import pytest

from presets import LOOP_PRESET
from serl.config import load_config
from serl.io import read_jsonl
from serl.selfinstruct import Pools, rebuild_pools
from serl.selfinstruct.pools import InstructionLog
from serl.selfinstruct.prompts import Instruction
from serl.selfinstruct.standalone import GenerationOutcome, generate_problems

SEEDS = [
    "Tom has 3 apples and buys 4 more. How many apples does he have now?",
    "A box holds 12 pens. How many pens are in 5 boxes?",
    "Mia reads 8 pages a day. How many pages does she read in a week?",
    "A bus carries 40 people and 15 get off. How many people are left on the bus?",
]
# two prompts per round, three shots, short generations (the rest is the loop preset's self-instruction config)
TINY = ["selfinstruct.generation_batch_size=2", "selfinstruct.few_shot=3", "selfinstruct.max_new_tokens=40"]
INSTRUCTION = Instruction(system="You write short math word problems.", user="Continue the numbered list:\n")


@pytest.fixture(scope="module")
def engine_and_tokenizer():
    from serl.models import load_policy
    from serl.rollout.hf import HFEngine

    model, tokenizer = load_policy()
    return HFEngine(model, tokenizer), tokenizer


@pytest.mark.slow
def test_rounds_log_every_candidate_and_rebuild_exactly(engine_and_tokenizer, tmp_path):
    engine, tokenizer = engine_and_tokenizer
    pools = Pools(seeds=SEEDS)
    rounds_seen = []
    cfg = load_config(LOOP_PRESET, [*TINY, "rollout.n_samples_per_prompt=2", "rollout.max_new_tokens=8"])
    outcome = generate_problems(
        engine,
        tokenizer,
        pools,
        cfg,
        n=50,  # more than 2 rounds can give: runs all rounds
        log=InstructionLog(tmp_path),
        max_rounds=2,
        difficulty=True,
        instruction=INSTRUCTION,
        on_round=lambda o: rounds_seen.append(o.rounds),
    )
    assert outcome.rounds == 2 and rounds_seen == [1, 2]
    lines = [json.loads(x) for x in (tmp_path / "instructions" / "iter_0001.jsonl").read_text().splitlines()]
    assert Counter(line["fate"] for line in lines) == outcome.fates
    assert outcome.candidates == len([line for line in lines if "text" in line])  # first fates only
    first = [line for line in lines if "text" in line]
    assert [line["id"] for line in first] == list(range(len(first))) and pools.next_id == len(first)
    accepted = [line["id"] for line in first if line["fate"] == "accepted"]
    difficulty = [line["id"] for line in lines if line["fate"] in ("kept", "rejected:difficulty")]
    assert difficulty == accepted  # each accepted problem rolled out and judged exactly once, in order
    # 2 rollouts: a mean reward of 2/2 or 1/2 (one with an answer), or 0 where neither answers or they disagree
    assert all(line["reward_mean"] in (0.0, 0.5, 1.0) for line in lines if "reward_mean" in line)
    assert [p["id"] for p in outcome.problems] == [i for i in accepted if pools.history[i].passed_difficulty]
    rebuilt = rebuild_pools(tmp_path, SEEDS)
    assert dataclasses.asdict(rebuilt) == dataclasses.asdict(pools)


def _table_rows(text: str) -> dict[str, tuple[int, str]]:
    """{fate: (count, share)} from a rendered fate table."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("│┃ ").split("│")]
        if len(cells) == 3 and cells[1].isdigit():
            rows[cells[0]] = (int(cells[1]), cells[2])
    return rows


def _table_total(text: str) -> int:
    return int(text.split("Fates of ", 1)[1].split()[0])


def _render(outcome: GenerationOutcome, difficulty: bool) -> str:
    from rich.console import Console

    from serl.cli.generate import _fate_table

    console = Console(width=120, record=True, file=io.StringIO())
    console.print(_fate_table(outcome, difficulty))
    return console.export_text()


def test_fate_table_counts_each_candidate_once_and_difficulty_fates_of_the_accepted():
    fates = {"accepted": 4, "rejected:rule:too_short": 3, "rejected:rule:digits": 1, "rejected:novelty": 2}
    outcome = GenerationOutcome(problems=[], fates=Counter(fates, kept=1, **{"rejected:difficulty": 3}))
    assert outcome.candidates == 10  # the 4 later fates belong to the 4 accepted candidates
    text = _render(outcome, difficulty=True)
    assert _table_total(text) == 10
    assert _table_rows(text) == {
        "accepted": (4, "40.0%"),
        "rejected:rule:digits": (1, "10.0%"),
        "rejected:rule:too_short": (3, "30.0%"),
        "rejected:novelty": (2, "20.0%"),
        "kept": (1, "25.0% of accepted"),
        "rejected:difficulty": (3, "75.0% of accepted"),
    }
    plain = GenerationOutcome(problems=[], fates=Counter(fates))
    assert _table_total(_render(plain, difficulty=False)) == 10
    assert set(_table_rows(_render(plain, difficulty=False))) == set(fates)
    empty = _table_rows(_render(GenerationOutcome(problems=[]), difficulty=True))
    assert empty["accepted"] == (0, "-") and empty["kept"] == (0, "-")  # no division by zero


def test_round_line_counts_candidates_not_log_lines():
    from serl.cli.generate import _round_line

    fates = Counter({"accepted": 2, "rejected:rule:too_short": 1, "kept": 1, "rejected:difficulty": 1})
    outcome = GenerationOutcome(problems=[{}], fates=fates, rounds=3, seconds=7.2)
    line = _round_line(outcome, 5, difficulty=True)
    assert line == "round 3: 1/5 problems | 3 candidates: rules -1, novelty -0, difficulty -1 | 7 s"


@pytest.mark.slow
def test_serl_generate_cli_prints_the_fate_table_and_writes_jsonl(tmp_path):
    from typer.testing import CliRunner

    from serl.cli import app

    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("".join(json.dumps({"question": s}) + "\n" for s in SEEDS))
    out, run_dir, n = tmp_path / "problems.jsonl", tmp_path / "run", 2
    args = ["generate", "--n", str(n), "--out", str(out), "--max-rounds", "6"]
    args += [f"--set=data.seed_path={seeds}", "--set=data.input_key=question", *[f"--set={o}" for o in TINY]]
    result = CliRunner().invoke(app, [*args, "--run-dir", str(run_dir), "--quiet"])
    assert result.exit_code == 0, result.output
    total, rows = _table_total(result.stdout), _table_rows(result.stdout)
    assert sum(count for count, _ in rows.values()) == total > 0  # every candidate in exactly one row
    lines = [json.loads(x) for x in (run_dir / "instructions" / "iter_0001.jsonl").read_text().splitlines()]
    assert total == len(lines) and Counter(line["fate"] for line in lines) == {k: c for k, (c, _) in rows.items() if c}
    problems = [json.loads(line) for line in out.read_text().splitlines()]
    accepted = [line["id"] for line in lines if line["fate"] == "accepted"]
    assert rows["accepted"][0] >= n  # the last round may overshoot N: the JSONL holds the first N accepted
    assert [p["id"] for p in problems] == accepted[:n] and all(p["problem"] and "novelty_score" in p for p in problems)


def test_serl_generate_bad_seeds_is_a_one_line_error(tmp_path):
    from typer.testing import CliRunner

    from serl.cli import app

    bad = tmp_path / "seeds.jsonl"
    bad.write_text('{"problem": "ok"}\n{"problem": \n')
    result = CliRunner().invoke(app, ["generate", f"--set=data.seed_path={bad}", "--out", str(tmp_path / "o.jsonl")])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and "seeds.jsonl:2" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o.jsonl").exists()


class RecordingEngine:
    """Records what it is asked to generate; answers every prompt with the same two numbered problems."""

    def __init__(self):
        self.calls = []

    def generate(self, prompts, params, n=1):
        from serl.rollout.base import Completion

        self.calls.append((list(prompts), params))
        text = "5. A shop sells pencils at 3 dollars each. How much do 7 pencils cost?\n10. What is 15 percent of 80?"
        return [Completion(i, 0, [1], [2], text, "eos") for i in range(len(prompts))]


def test_serl_train_and_serl_generate_run_the_same_round(tmp_path):
    """The first generation round of step 1 in `serl train` is round 1 of `serl generate`: same prompts, same
    sampling, same seeds, same screened records, from the same config."""
    from serl.data import Problem
    from serl.models import load_tokenizer
    from serl.trainer.logger import RunLogger
    from serl.trainer.selfplay import InstructionSource

    tokenizer, cfg = load_tokenizer(), load_config(LOOP_PRESET, TINY)
    train_engine, generate_engine = RecordingEngine(), RecordingEngine()
    logger = RunLogger(tmp_path, "quiet", total_steps=0, tensorboard=False, wandb_cfg=None)
    seeds = [Problem(id=str(i), prompt=s, label=None) for i, s in enumerate(SEEDS)]
    source = InstructionSource(cfg, seeds, tokenizer, train_engine, tmp_path / "train", logger)
    source.next_batch(1, step=1, attempt=1)
    pools = Pools(seeds=SEEDS)
    generate_problems(generate_engine, tokenizer, pools, cfg, n=1, max_rounds=1, log=InstructionLog(tmp_path / "gen"))
    assert train_engine.calls == generate_engine.calls and len(train_engine.calls) == 1
    logged = [read_jsonl(tmp_path / name / "instructions" / "iter_0001.jsonl")[0] for name in ("train", "gen")]
    # two prompts, the same two items each: the second copies are not novel
    assert logged[0] == logged[1] and [r["fate"] for r in logged[0]] == ["accepted"] * 2 + ["rejected:novelty"] * 2


def test_contamination_threshold_decides_which_generated_problems_count_as_held_out_copies(tmp_path):
    """`serl train` screens generated problems against the held-out questions at selfinstruct.contamination_threshold:
    at 0.7 a near-copy (one number changed) is dropped, at 0.99 only a token-identical one is. Whatever the drop
    bound, the step's metrics count the candidates within ROUGE-L 0.7 of a held-out question."""
    from serl.data import Problem
    from serl.models import load_tokenizer
    from serl.trainer.logger import RunLogger
    from serl.trainer.selfplay import InstructionSource

    # RecordingEngine's problems: "A shop sells pencils at 3 dollars each. How much do 7 pencils cost?" (13 tokens)
    # and "What is 15 percent of 80?" (6 tokens). Against "What is 15 percent of 90?" the second has LCS 5: F = 5/6;
    # "What is 15 percent of 80." is token-identical to it (F = 1).
    held_out = ["What is 15 percent of 90?", "What is 15 percent of 80."]
    fates, metrics = {}, {}
    for threshold, held in ((0.7, held_out[:1]), (0.99, held_out[:1]), (0.99, held_out)):
        cfg = load_config(LOOP_PRESET, [*TINY, f"selfinstruct.contamination_threshold={threshold}"])
        run_dir = tmp_path / f"{threshold}-{len(held)}"
        logger = RunLogger(run_dir, "quiet", total_steps=0, tensorboard=False, wandb_cfg=None)
        seeds = [Problem(id=str(i), prompt=s, label=None) for i, s in enumerate(SEEDS)]
        source = InstructionSource(cfg, seeds, load_tokenizer(), RecordingEngine(), run_dir, logger, held_out=held)
        source.next_batch(1, step=1, attempt=1)
        records = read_jsonl(run_dir / "instructions" / "iter_0001.jsonl")[0]
        fates[threshold, len(held)] = [r["fate"] for r in records if r["text"].startswith("What is 15")]
        near = [r for r in records if r.get("near_held_out")]
        assert near and all(r["text"] == "What is 15 percent of 80?" for r in near)
        metrics[threshold, len(held)] = source.step_metrics()
    assert fates[0.7, 1][0] == "rejected:contamination"
    assert fates[0.99, 1][0] == "accepted"
    assert fates[0.99, 2][0] == "rejected:contamination"
    for key, contaminated in (((0.7, 1), 1), ((0.99, 1), 0), ((0.99, 2), 1)):
        m = metrics[key]
        assert m["selfinstruct/near_held_out"] == len(fates[key]) and m[
            "selfinstruct/contaminated"
        ] == contaminated * len(fates[key])
        assert m["selfinstruct/near_held_out_share"] == m["selfinstruct/near_held_out"] / m["selfinstruct/screened"] > 0


def test_with_the_examples_in_the_assistant_turn_the_first_item_is_the_reply_continuing_the_list(tmp_path):
    """The reply continues the bare "4." that ends the listed examples: its first line is item 4, parsed with the
    number put back; in the user turn the same unnumbered first line is text before the first item (dropped)."""
    from serl.models import load_tokenizer
    from serl.rollout.base import Completion
    from serl.selfinstruct.novelty import NoveltyIndex
    from serl.selfinstruct.rounds import generation_round

    class ContinuingEngine:
        def generate(self, prompts, params, n=1):
            text = " A shop sells pencils at 3 dollars each. How much do 7 pencils cost?\n5. What is 15 percent of 80?"
            return [Completion(i, 0, [1], [2], text, "eos") for i in range(len(prompts))]

    accepted = {}
    for turn in ("user", "assistant"):
        cfg = load_config(
            LOOP_PRESET, [*TINY, "selfinstruct.generation_batch_size=1", f"selfinstruct.examples_turn={turn}"]
        )
        records = generation_round(
            ContinuingEngine(),
            load_tokenizer(),
            Pools(seeds=SEEDS),
            NoveltyIndex(),
            cfg.selfinstruct,
            INSTRUCTION,
            seed=0,
            step=1,
            attempt=1,
            round_=1,
        )
        accepted[turn] = [r["text"] for r in records if r["fate"] == "accepted"]
    assert accepted["user"] == ["What is 15 percent of 80?"]
    assert accepted["assistant"] == [
        "A shop sells pencils at 3 dollars each. How much do 7 pencils cost?",
        "What is 15 percent of 80?",
    ]
