"""The collapse guard in real `serl train` processes whose reward is sabotaged: `reward.control=invert` pays the
wrong answers of labelled one-operation problems and a high learning rate makes the policy learn them fast, so its
accuracy on the labelled canary set falls. With `canary_action=stop` the run stops with a saved state and says how
to resume; with `rollback` it reloads the best canary weights and goes on, and the canary recovers its best."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from presets import LOOP_PRESET
from serl.io import read_jsonl

pytestmark = pytest.mark.slow

SABOTAGED = [
    "train.mode=gt",
    "reward.control=invert",  # wrong answers get 1, right ones 0: a reward that teaches the model to be wrong
    "data.seed_path=embedded:arithmetic-l1",
    "rollout.n_samples_per_prompt=4",
    "rollout.max_new_tokens=24",
    "rollout.temperature=1.0",
    "algo.kl_coef=0",
    "train.rollout_batch_size=4",
    "train.train_batch_size=4",  # 4 updates a step
    "train.micro_train_batch_size=4",
    "train.learning_rate=5e-3",
    "model.lora.rank=16",  # small checkpoints: the stop and every best canary state save one
    "train.lr_warmup_ratio=0",
    "train.instructions_per_iteration=16",
    "train.num_iterations=1",
    "train.max_steps=4",
    "train.save_every=0",
    "reward.difficulty_low=0.0",
    "reward.difficulty_high=1.0",
    "reward.num_workers=0",
    "eval.datasets=[]",
    "eval.at_start=false",
    "eval.canary=embedded:arithmetic-l1-test",
    "eval.canary_max_samples=32",
    "eval.max_new_tokens=24",
    "train.canary_patience=1",
    "train.canary_margin=0.05",
    "log.tensorboard=false",
]


def _train(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "serl",
        "train",
        "--quiet",
        "--no-report",
        "--preset",
        LOOP_PRESET,
        "--run-dir",
        str(run_dir),
    ]
    for item in [*SABOTAGED, *overrides]:
        cmd += ["--set", item]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)


def _canary(run_dir: Path) -> list[dict]:
    return [row for row in read_jsonl(run_dir / "metrics.jsonl")[0] if "canary/pass@1" in row]


def test_a_sabotaged_run_is_stopped_by_the_canary_with_a_resumable_state(tmp_path: Path) -> None:
    run_dir = tmp_path / "stop"
    done = _train(run_dir, "train.canary_action=stop")
    assert done.returncode == 3, done.stderr[-2000:]
    assert "canary pass@1 stayed more than 0.05 below its best" in done.stderr
    assert f"serl train --resume {run_dir}" in done.stderr
    rows = _canary(run_dir)
    assert 1 <= len(rows) < 4  # it stopped before the run's 4 steps
    last = rows[-1]
    assert last["canary/pass@1"] < last["canary/best"] - 0.05 and last["canary/below_best"] == 1
    latest = (run_dir / "checkpoints" / "latest").read_text().strip()
    assert json.loads((run_dir / "checkpoints" / latest / "meta.json").read_text())["step"] == last["step"]


def test_a_sabotaged_run_rolls_back_to_the_best_canary_weights(tmp_path: Path) -> None:
    run_dir = tmp_path / "rollback"
    done = _train(run_dir, "train.canary_action=rollback")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "rolled back to the weights of step 0" in done.stderr
    rows = _canary(run_dir)
    first_rollback = next(i for i, row in enumerate(rows) if row["canary/rollbacks"] >= 1)
    assert rows[first_rollback]["canary/pass@1"] < rows[first_rollback]["canary/best"] - 0.05
    # the next step trains on from the step-0 weights, so its canary lies far above the sabotaged one
    assert len(rows) > first_rollback + 1
    assert rows[first_rollback + 1]["canary/pass@1"] > rows[first_rollback]["canary/pass@1"]
    best = run_dir / "checkpoints" / "canary_best"  # the latest best canary state is the one kept
    assert (best / "latest").read_text().strip() == f"step_{rows[-1]['canary/best_step']:06d}"
