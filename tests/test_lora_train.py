"""`serl train` with a LoRA adapter (and gradient checkpointing) on the embedded model, 2 steps of a tiny gt config.

The reference is the base model with the adapter disabled: the KL starts at exactly 0 and grows once the adapter has
moved. The base weights never change, the adapter does, and the iteration's HF export has the adapter merged in.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from presets import LOOP_PRESET
from serl.io import read_jsonl

pytestmark = pytest.mark.slow

PROBLEMS = [("What is 2 + 2?", "4"), ("What is 3 + 5?", "8"), ("What is 10 - 3?", "7"), ("What is 6 + 1?", "7")]
PEFT_PREFIX = "base_model.model."
TINY_LORA = [
    "train.mode=gt",
    "model.lora.rank=8",
    "model.lora.alpha=16",
    "model.lora.target_modules=[q_proj,v_proj]",
    "model.gradient_checkpointing=true",
    "algo.kl_coef=0.01",
    "rollout.n_samples_per_prompt=4",
    "rollout.max_new_tokens=8",
    "train.rollout_batch_size=2",
    "train.train_batch_size=8",
    "train.micro_train_batch_size=8",
    "train.instructions_per_iteration=4",  # 2 steps = 1 iteration: ends with the merged HF export
    "train.num_iterations=2",
    "train.max_steps=3",
    "train.save_every=1",
    "train.keep_checkpoints=3",  # the tests compare steps 1, 2 and 3
    "train.learning_rate=1e-3",
    "train.lr_warmup_ratio=0.0",
    "reward.difficulty_low=0.0",
    "reward.difficulty_high=1.0",
    "reward.num_workers=0",
    "eval.datasets=[]",
    "eval.at_start=false",
    "log.tensorboard=false",
    "model.lora.dropout=0.1",  # draws from the global torch generator, which a resume must restore
]


def _write_problems(root: Path) -> Path:
    path = root / "sums.jsonl"
    path.write_text("".join(json.dumps({"problem": q, "answer": a}) + "\n" for q, a in PROBLEMS))
    return path


def _train(args: list[str]) -> str:
    cmd = [sys.executable, "-m", "serl", "train", "--json-log", "--no-report", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _base_name(peft_name: str) -> str:
    return peft_name.removeprefix(PEFT_PREFIX).replace(".base_layer", "")


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """3 LoRA steps uninterrupted (iteration 1 = steps 1-2, then step 3)."""
    pytest.importorskip("peft")
    root = tmp_path_factory.mktemp("lora")
    overrides = [f"data.train_path={_write_problems(root)}", *TINY_LORA]
    run_dir = root / "run"
    _train(["--preset", LOOP_PRESET, "--run-dir", str(run_dir), *[f"--set={o}" for o in overrides]])
    yield run_dir
    shutil.rmtree(root, ignore_errors=True)  # checkpoints are large; free the disk before the next module runs


@pytest.fixture(scope="module")
def base_weights() -> dict[str, torch.Tensor]:
    from serl.models import load_policy

    model, _ = load_policy()
    return model.state_dict()


def _checkpoint(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    from serl.trainer.checkpoint import load_checkpoint

    return load_checkpoint(run_dir / "checkpoints" / f"step_{step:06d}")[0]


def test_kl_to_the_reference_starts_at_zero_then_grows(lora_run: Path) -> None:
    metrics = read_jsonl(lora_run / "metrics.jsonl")[0]
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert metrics[0]["train/kl"] == 0.0  # adapter B = 0: policy and adapter-disabled reference are the same function
    assert metrics[1]["train/kl"] != 0.0  # after one update the adapter has moved the policy away from the base
    assert metrics[0]["train/grad_norm"] > 0.0


def test_base_weights_stay_and_the_adapter_changes(lora_run: Path, base_weights: dict[str, torch.Tensor]) -> None:
    step1, step2 = _checkpoint(lora_run, 1), _checkpoint(lora_run, 2)
    adapter = [k for k in step2 if "lora_" in k]
    base = [k for k in step2 if "lora_" not in k]
    assert len(adapter) == 2 * 2 * 30  # A and B for q_proj and v_proj in 30 layers
    for key in base:
        assert torch.equal(step2[key], base_weights[_base_name(key)]), f"base weight {key} changed"
    lora_b = [k for k in adapter if "lora_B" in k]
    assert all(float(step1[k].abs().max()) > 0 for k in lora_b), "lora_B left its zero init in the first step"
    assert all(not torch.equal(step1[k], step2[k]) for k in adapter), "the adapter did not change in step 2"


def test_export_merges_the_adapter(lora_run: Path, base_weights: dict[str, torch.Tensor]) -> None:
    merged = load_file(str(lora_run / "checkpoints" / "iter_01_hf" / "model.safetensors"))
    assert not any("lora_" in k for k in merged)
    state = _checkpoint(lora_run, 2)
    layer = "model.layers.0.self_attn.q_proj"
    a, b = state[f"{PEFT_PREFIX}{layer}.lora_A.default.weight"], state[f"{PEFT_PREFIX}{layer}.lora_B.default.weight"]
    expected = base_weights[f"{layer}.weight"] + (16 / 8) * b @ a  # W + (alpha / r) B A
    torch.testing.assert_close(merged[f"{layer}.weight"], expected, atol=1e-6, rtol=1e-5)
    assert not torch.equal(merged[f"{layer}.weight"], base_weights[f"{layer}.weight"])


def test_a_lora_run_resumes_exactly(lora_run: Path, tmp_path: Path, copy_run) -> None:
    """A copy of the 3-step run, its `latest` pointed back at step 2 (the state a kill right after step 2's
    checkpoint leaves, step 3's outputs included), resumed to step 3: the same metrics and weights as straight
    through, across the iteration boundary (the adapter, its Adam state, the fresh schedule and the RNGs come back)."""
    straight, split = lora_run, tmp_path / "split"
    copy_run(straight, split)
    (split / "checkpoints" / "latest").write_text("step_000002\n")
    step3_copied = (split / "checkpoints" / "step_000003" / "model.safetensors").stat().st_ino
    assert "resumed from step_000002" in _train(["--resume", str(split), "--set=train.max_steps=3"])
    assert (split / "checkpoints" / "step_000003" / "model.safetensors").stat().st_ino != step3_copied  # rewritten

    def comparable(run_dir: Path) -> list[dict]:
        metrics = read_jsonl(run_dir / "metrics.jsonl")[0]
        return [{k: v for k, v in m.items() if not k.startswith("time/") and k != "elapsed_s"} for m in metrics]

    assert [m["step"] for m in comparable(split)] == [1, 2, 3]
    assert comparable(split) == comparable(straight)
    assert comparable(split)[2]["train/kl"] != 0.0
    resumed, uninterrupted = _checkpoint(split, 3), _checkpoint(straight, 3)
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed)
