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


def seed_run(seed: int, base: list[float], finals: dict[str, list[float]], wall_s: float = 600.0) -> dict:
    """What `measure` returns for one training seed, reduced to what pooling reads."""
    questions = [f"q{i}" for i in range(len(base))]
    return {
        "questions": questions,
        "base": dict(zip(questions, base, strict=True)),
        "finals": {arm: dict(zip(questions, scores, strict=True)) for arm, scores in finals.items()},
        "summary": {"train_seed": seed, "arms": {arm: {"wall_s": wall_s + seed} for arm in finals}},
    }


def test_pool_seeds_judges_the_targets_over_seeds() -> None:
    # 40 questions, base right on the first 8. serl gets 6 more right on each of three seeds (+0.15, steady); the
    # shuffled control gets 12 more on one seed and 2 fewer on the others (mean +0.067, spread +0.30 to -0.05).
    bench = bench_module()
    base = [1.0] * 8 + [0.0] * 32

    def with_right(k: int) -> list[float]:
        return [1.0] * k + [0.0] * (40 - k)

    runs = {
        seed: seed_run(seed, base, {"serl": with_right(14), "shuffle": with_right(control)})
        for seed, control in ((42, 20), (1, 6), (2, 6))
    }
    pooled = bench.pool_seeds(runs)
    assert pooled["seeds"] == [42, 1, 2]
    serl, shuffle, gap = pooled["arms"]["serl"], pooled["arms"]["shuffle"], pooled["serl_minus_shuffle"]
    assert serl["per_seed"] == [0.15, 0.15, 0.15] and serl["delta"] == 0.15 and serl["ci95"][0] > 0
    assert shuffle["per_seed"] == [0.3, -0.05, -0.05] and shuffle["delta"] == pytest.approx(0.0667, abs=1e-4)
    assert shuffle["ci95"][0] < 0 < shuffle["ci95"][1]  # one lucky seed in three is not a significant gain
    assert gap["per_seed"] == [-0.15, 0.2, 0.2]
    assert serl["wall_s_max"] == 642.0 and serl["wall_s_mean"] == pytest.approx(615.0)

    targets = bench.judge(pooled["arms"], pooled["serl_minus_shuffle"], serl["wall_s_max"])
    assert targets == {
        "serl_gain_at_least_5_points_ci_above_0": True,
        "serl_within_45_min": True,
        "shuffle_no_significant_gain": True,
    }
    # Judged on seed 42 alone, the same control gains significantly (+0.30) and beats serl: the target fails.
    alone = bench.pool_seeds({42: runs[42]})
    assert alone["arms"]["shuffle"]["ci95"][0] > 0 and alone["serl_minus_shuffle"]["ci95"][1] < 0
    assert not bench.judge(alone["arms"], alone["serl_minus_shuffle"], 642.0)["shuffle_no_significant_gain"]


def test_pool_seeds_refuses_runs_on_different_questions() -> None:
    bench = bench_module()
    runs = {1: seed_run(1, [0.0, 1.0], {"serl": [1.0, 1.0]}), 2: seed_run(2, [0.0, 1.0, 0.0], {"serl": [1.0] * 3})}
    with pytest.raises(SystemExit, match="other questions"):
        bench.pool_seeds(runs)


@pytest.mark.parametrize("text", ["42,x", "1,1", ","])
def test_bad_seed_lists_are_errors(text: str) -> None:
    with pytest.raises(SystemExit, match="--seeds"):
        bench_module().parse_seeds(text)


def test_seed_lists_keep_their_order() -> None:
    assert bench_module().parse_seeds("42, 1,2") == [42, 1, 2]


def test_vote_accuracy_is_the_mean_over_the_steps_that_logged_it() -> None:
    from serl.report.reading import RunData

    steps = [
        {"step": 1, "reward/label_accuracy": 0.5, "reward/reward_accuracy": 0.75},
        {"step": 2, "reward/label_accuracy": 0.25},  # reward accuracy not logged this step: not a zero
    ]
    run = RunData(run_dir=REPO, steps=steps, evals={}, instructions=[])
    assert bench_module().vote_accuracy(run) == {"label_accuracy": 0.375, "reward_accuracy": 0.75}
    unlabelled = RunData(run_dir=REPO, steps=[{"step": 1}], evals={}, instructions=[])  # serl mode: no labels
    assert bench_module().vote_accuracy(unlabelled) == {"label_accuracy": None, "reward_accuracy": None}


def test_a_finished_arm_reads_back_its_sampled_eval_without_checkpoints(tmp_path: Path) -> None:
    """The bench removes an arm's checkpoints once its figures are recorded: the read-back takes the recorded
    sampled eval, and an arm with neither a recorded eval nor an export is a clear error, not an IndexError."""
    bench = bench_module()
    cfg = load_config("cpu-learn", [])
    recorded = {"mean@8": 0.29751, "maj@8": 0.34, "pass@8": 0.66, "pass@1": 0.29751}
    (tmp_path / "serl-sampled").mkdir()
    (tmp_path / "serl-sampled" / "metrics.json").write_text(json.dumps({"heldout-200-500": recorded}))
    assert bench.sampled_eval("serl", cfg, tmp_path, 8, 50) == {"mean@8": 0.2975, "maj@8": 0.34, "pass@8": 0.66}
    with pytest.raises(SystemExit, match=r"gt: no export under .*checkpoints to evaluate"):
        bench.sampled_eval("gt", cfg, tmp_path, 8, 50)
