"""GPU smoke tests on the embedded SmolLM2-135M architecture (about 5 minutes on one H200 with vllm, under a minute
without it). `scripts/gpu_check.sh` runs this file on the GPU machine, where the weights are a random init of that
architecture (the real ones do not travel); nothing here depends on what the model knows.

HF engine and trainer on the device (needs CUDA only):
1. greedy decoding through HFEngine's own loop equals `model.generate` on the device, prompt by prompt;
2. a bf16 engine is seeded (same seed, same samples) and its log-probs match a forward pass of its own weights;
3. one PolicyTrainer update under accelerate's bf16 autocast keeps fp32 master weights and moves them.
vLLM engine (needs CUDA and vllm):
4. `serl train` with `rollout.engine=vllm` runs 2 tiny steps in a subprocess (rollout, sleep, update, weight sync);
5. the engine's own cycle: generate -> sleep -> update_weights (a perturbed weight changes the greedy output) ->
   wake on generate, and the original weights restore the original output.

Run: python -m pytest -q tests/test_gpu_smoke.py. Skipped, with the reason, without a CUDA device (1-3) or without
vllm (4-5). SERL_GPU_SMOKE_DEVICE=cpu runs 1-3 on the CPU: the GPU check's dry mode does, so they cannot rot.
The vLLM training subprocess runs before the in-process engine, which holds its share of GPU memory until the
session ends.
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

pytestmark = [pytest.mark.gpu, pytest.mark.slow]

DEVICE = "cuda" if torch.cuda.is_available() else os.environ.get("SERL_GPU_SMOKE_DEVICE")
needs_device = pytest.mark.skipif(DEVICE is None, reason="GPU smoke test: needs a CUDA device")
needs_vllm = pytest.mark.skipif(
    not torch.cuda.is_available() or importlib.util.find_spec("vllm") is None,
    reason="GPU smoke test: needs a CUDA device and vllm (pip install 'serl-rl[gpu]')",
)
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
NEW_TOKENS = 16


@pytest.fixture(scope="module")
def policy():
    from serl.models import load_policy

    model, tokenizer = load_policy(dtype="fp32", device=DEVICE)
    model.eval()
    return model, tokenizer


@needs_device
def test_hf_engine_greedy_equals_model_generate_on_the_device(policy) -> None:
    from serl.rollout import SamplingParams, make_engine
    from serl.rollout.formats import encode_prompt

    model, tokenizer = policy
    engine = make_engine("hf", model, tokenizer)
    assert engine.device.type == torch.device(DEVICE).type
    completions = engine.generate(PROMPTS, SamplingParams(temperature=0.0, max_new_tokens=NEW_TOKENS))
    for prompt, completion in zip(PROMPTS, completions, strict=True):
        ids = torch.tensor([encode_prompt(tokenizer, prompt)], device=DEVICE)
        with torch.inference_mode():
            reference = model.generate(
                ids, do_sample=False, max_new_tokens=NEW_TOKENS, attention_mask=torch.ones_like(ids)
            )
        assert completion.response_ids == reference[0, ids.shape[1] :].tolist()


@needs_device
def test_bf16_engine_is_seeded_and_its_logprobs_match_a_forward_pass(policy) -> None:
    from serl.rollout import SamplingParams, make_engine

    model, tokenizer = policy
    engine = make_engine("hf", model, tokenizer, dtype="bfloat16")
    assert next(engine.runner.parameters()).dtype == torch.bfloat16

    def sampled(seed: int) -> list:
        params = SamplingParams(temperature=1.0, max_new_tokens=NEW_TOKENS, seed=seed, logprobs=True)
        return engine.generate(PROMPTS, params, n=2)

    first, again, other = sampled(7), sampled(7), sampled(8)
    assert [c.response_ids for c in first] == [c.response_ids for c in again]
    assert [c.response_ids for c in first] != [c.response_ids for c in other]
    completion = first[0]
    sequence = torch.tensor([completion.prompt_ids + completion.response_ids], device=DEVICE)
    with torch.inference_mode():
        logits = engine.runner(sequence).logits[0, len(completion.prompt_ids) - 1 : -1].float()
    expected = logits.log_softmax(-1).gather(-1, sequence[0, len(completion.prompt_ids) :, None])[:, 0].cpu()
    # bf16 decode steps against one bf16 forward round differently (up to ~0.12 nats on a peaked token of the real
    # model); a log-prob taken at the wrong position is off by ~0.5 nats on average even for random weights
    errors = (torch.tensor(completion.logprobs) - expected).abs()
    assert errors.mean() < 0.05 and errors.max() < 0.25, errors


@needs_device
def test_policy_update_under_bf16_autocast_keeps_fp32_weights_and_moves_them(policy) -> None:
    import copy

    from accelerate import Accelerator

    from serl.config import AlgoConfig, TrainConfig
    from serl.parallel import Parallel
    from serl.rl import PolicyTrainer

    model, tokenizer = policy
    trained = copy.deepcopy(model)
    accelerator = Accelerator(mixed_precision="bf16", cpu=DEVICE == "cpu")
    trainer = PolicyTrainer(
        trained,
        algo=AlgoConfig(kl_coef=0.0),
        train=TrainConfig(learning_rate=1e-3, lr_warmup_ratio=0.0, micro_train_batch_size=4, train_batch_size=8),
        pad_token_id=tokenizer.pad_token_id,
        total_optimizer_steps=4,
        parallel=Parallel(accelerator),
    )
    generator = torch.Generator().manual_seed(0)
    prompts = torch.randint(3, tokenizer.vocab_size, (8, 12), generator=generator).tolist()
    responses = torch.randint(3, tokenizer.vocab_size, (8, 10), generator=generator).tolist()
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0])
    before = {name: p.detach().clone() for name, p in trained.named_parameters()}
    experience = trainer.make_experience(prompts, responses, rewards, group_size=4)
    assert torch.isfinite(experience.old_logprobs).all()
    metrics = trainer.train(experience)
    assert metrics["nonfinite_steps"] == 0 and metrics["grad_norm"] > 0
    assert all(p.dtype == torch.float32 for p in trained.parameters())  # master weights stay fp32
    moved = [name for name, p in trained.named_parameters() if not torch.equal(p.detach(), before[name])]
    assert len(moved) == len(before)  # every weight had a gradient and moved


@needs_vllm
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


@needs_vllm
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
