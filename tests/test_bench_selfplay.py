"""benchmarks/bench_selfplay.py --heldout-slice: the overrides it returns make exactly the named questions of the
preset's held-out set (300, more than its eval.max_samples) the training evaluation's held-out set and the
contamination check's, read from a real file."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from serl.config import load_config
from serl.data import load_problems
from serl.trainer.evals import load_eval_sets

REPO = Path(__file__).resolve().parents[1]


def bench_module():
    spec = importlib.util.spec_from_file_location("bench_selfplay", REPO / "benchmarks" / "bench_selfplay.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_heldout_slice_makes_those_questions_the_held_out_set(tmp_path: Path) -> None:
    cfg = load_config("cpu-learn", [])
    overrides = bench_module().heldout_slice(cfg, "200:500", tmp_path)

    whole = load_problems("embedded:arithmetic-l1-test")
    rows = [json.loads(line) for line in (tmp_path / "heldout-200-500.jsonl").read_text().splitlines()]
    assert [(r["id"], r["problem"], r["answer"]) for r in rows] == [(p.id, p.prompt, p.label) for p in whole[200:500]]

    sets, canary = load_eval_sets(load_config("cpu-learn", overrides))
    assert list(sets) == ["heldout-200-500"] and canary == []
    assert [(p.prompt, p.label) for p in sets["heldout-200-500"]] == [(p.prompt, p.label) for p in whole[200:500]]


def test_heldout_slice_past_the_end_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no questions"):
        bench_module().heldout_slice(load_config("cpu-learn", []), "600:700", tmp_path)
