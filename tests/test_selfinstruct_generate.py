"""Self-instruction end to end with the embedded model: generation rounds, fates, the log and `serl generate`.

The model's samples are not asserted (they differ across CPUs); the bookkeeping around them is: every parsed item
gets exactly one first fate, every accepted one exactly one difficulty fate, and the pools rebuilt from the log
equal the live ones.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections import Counter

import pytest

from serl.selfinstruct import Pools, rebuild_pools
from serl.selfinstruct.pools import InstructionLog
from serl.selfinstruct.prompts import Instruction
from serl.selfinstruct.standalone import generate_problems

pytestmark = pytest.mark.slow

SEEDS = [
    "Tom has 3 apples and buys 4 more. How many apples does he have now?",
    "A box holds 12 pens. How many pens are in 5 boxes?",
    "Mia reads 8 pages a day. How many pages does she read in a week?",
    "A bus carries 40 people and 15 get off. How many people are left on the bus?",
]
INSTRUCTION = Instruction(system="You write short math word problems.", user="Continue the numbered list:\n")


@pytest.fixture(scope="module")
def engine_and_tokenizer():
    from serl.models import load_policy
    from serl.rollout.hf import HFEngine

    model, tokenizer = load_policy()
    return HFEngine(model, tokenizer), tokenizer


def test_rounds_log_every_candidate_and_rebuild_exactly(engine_and_tokenizer, tmp_path):
    engine, tokenizer = engine_and_tokenizer
    pools = Pools(seeds=SEEDS)
    rounds_seen = []
    outcome = generate_problems(
        engine,
        tokenizer,
        pools,
        random.Random(0),
        n=50,  # more than 2 rounds can give: runs all rounds
        log=InstructionLog(tmp_path),
        prompts_per_round=2,
        max_rounds=2,
        num_shots=3,
        max_new_tokens=40,
        instruction=INSTRUCTION,
        rollouts=2,
        rollout_max_new_tokens=8,
        on_round=lambda o: rounds_seen.append(o.rounds),
    )
    assert outcome.rounds == 2 and rounds_seen == [1, 2]
    lines = [json.loads(x) for x in (tmp_path / "instructions" / "iter_0001.jsonl").read_text().splitlines()]
    assert Counter(line["fate"] for line in lines) == outcome.fates
    first = [line for line in lines if "text" in line]
    assert [line["id"] for line in first] == list(range(len(first))) and pools.next_id == len(first)
    accepted = [line["id"] for line in first if line["fate"] == "accepted"]
    difficulty = [line["id"] for line in lines if line["fate"] in ("kept", "rejected:difficulty")]
    assert difficulty == accepted  # each accepted problem rolled out and judged exactly once, in order
    assert all(line["ratio"] in (0.5, 1.0) for line in lines if "ratio" in line)  # 2 rollouts: 1/2 or 2/2
    assert [p["id"] for p in outcome.problems] == [i for i in accepted if pools.history[i].passed_difficulty]
    rebuilt = rebuild_pools(tmp_path, SEEDS)
    assert dataclasses.asdict(rebuilt) == dataclasses.asdict(pools)


def test_serl_generate_cli_prints_the_fate_table_and_writes_jsonl(tmp_path):
    from typer.testing import CliRunner

    from serl.cli import app

    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("".join(json.dumps({"question": s}) + "\n" for s in SEEDS))
    out = tmp_path / "problems.jsonl"
    args = ["generate", "--n", "1", "--seeds", str(seeds), "--input-key", "question", "--out", str(out)]
    args += ["--max-new-tokens", "40", "--prompts-per-round", "2", "--max-rounds", "1", "--shots", "3"]
    result = CliRunner().invoke(app, args)
    assert "Fates of" in result.stdout and "rejected:novelty" in result.stdout
    problems = [json.loads(line) for line in out.read_text().splitlines()]
    if result.exit_code == 0:
        assert len(problems) == 1 and problems[0]["problem"] and "novelty_score" in problems[0]
    else:  # the model wrote nothing usable in one round: a one-line error, an empty output file
        assert result.exit_code == 2 and problems == [] and "raise --max-rounds" in result.stderr


def test_serl_generate_bad_seeds_is_a_one_line_error(tmp_path):
    from typer.testing import CliRunner

    from serl.cli import app

    bad = tmp_path / "seeds.jsonl"
    bad.write_text('{"problem": "ok"}\n{"problem": \n')
    result = CliRunner().invoke(app, ["generate", "--seeds", str(bad), "--out", str(tmp_path / "o.jsonl")])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and "seeds.jsonl:2" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o.jsonl").exists()
