"""GPU smoke tests of the vLLM rollout engine on the embedded SmolLM2-135M (about 5 minutes on one H200):

1. `serl train` with `rollout.engine=vllm` runs 2 tiny steps in a subprocess (rollout, sleep, update, weight sync);
2. the engine's own cycle: generate -> sleep -> update_weights (a perturbed weight changes the greedy output) ->
   wake on generate, and the original weights restore the original output.

Run: python -m pytest -q tests/test_gpu_smoke.py. Skipped, with the reason, without a CUDA device or without vllm.
The training subprocess runs first: the engine of test 2 holds its share of GPU memory until the session ends.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from serl.io import read_jsonl

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.slow,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU smoke test: needs a CUDA device"),
    pytest.mark.skipif(
        importlib.util.find_spec("vllm") is None, reason="GPU smoke test: needs vllm (pip install 'serl-rl[gpu]')"
    ),
]

TINY_VLLM = [
    "rollout.engine=vllm",
    "rollout.vllm_gpu_memory_utilization=0.3",
    "train.mode=gt",  # dataset prompts with labels: no self-instruction round can stall the 2 steps
    "rollout.n_samples_per_prompt=4",
    "rollout.max_new_tokens=32",
    "train.rollout_batch_size=2",
    "train.train_batch_size=8",
    "train.micro_train_batch_size=4",
    "train.instructions_per_iteration=4",  # 2 steps = 1 iteration
    "train.num_iterations=1",
    "train.max_steps=2",
    "train.save_every=0",
    "train.max_attempts_per_step=20",
    "reward.difficulty_low=0.0",  # keep every group: the test is about the engine, not the filter
    "reward.difficulty_high=1.0",
    "reward.num_workers=0",
    "eval.datasets=[]",
    "eval.at_start=false",
    "log.tensorboard=false",
]
PROMPTS = ["Count with me: 1, 2, 3,", "What is 2+3? Answer:"]


def test_serl_train_runs_two_steps_with_the_vllm_engine(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "serl", "train", "--json-log", "--no-report", "--preset", "cpu-demo"]
    cmd += ["--run-dir", str(run_dir), *[f"--set={override}" for override in TINY_VLLM]]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=420)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "engine: vllm" in (run_dir / "config.yaml").read_text()
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2]
    assert all(any(key.startswith("train/") for key in m) for m in metrics)


def test_generate_sleep_update_wake_cycle() -> None:
    from serl.models import load_policy
    from serl.rollout import SamplingParams, make_engine

    model, tokenizer = load_policy()
    engine = make_engine("vllm", model, tokenizer, gpu_memory_utilization=0.25, enforce_eager=True)
    greedy = SamplingParams(temperature=0.0, max_new_tokens=16)

    def responses() -> list[list[int]]:
        return [c.response_ids for c in engine.generate(PROMPTS, greedy)]

    before = responses()
    free_awake = torch.cuda.mem_get_info()[0]
    engine.sleep()
    assert engine.sleeping
    assert torch.cuda.mem_get_info()[0] > free_awake + 2**30  # the KV cache and weights left the GPU

    perturbed = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    perturbed["model.norm.weight"] = perturbed["model.norm.weight"] * -1.0
    engine.update_weights(perturbed)  # weights woken and loaded; the KV cache waits for the next generate
    assert engine.sleeping
    after = responses()
    assert not engine.sleeping
    assert after != before

    engine.sleep()
    engine.update_weights(model)  # a module: its weights are copied in
    assert responses() == before
