"""`accelerate launch` with 2 CPU processes (DDP over gloo) on the embedded model, 1 step of a tiny config.

The run keeps its global training batches and every rank's weights (log.debug_dump). The tests check that both ranks
end with the same weights, that replaying the same batches in one plain process gives the same update, and that the
run resumes on 1 process from the 2-process checkpoint with the exact optimizer and schedule state.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from presets import LOOP_PRESET
from serl.config import load_config
from serl.io import read_jsonl
from serl.trainer.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
ACCELERATE_CONFIG = REPO / "configs" / "accelerate" / "cpu_ddp_2proc.yaml"
# Easy sums: with the chat_boxed format the 135M model gets some right, so the ground-truth rewards vary.
PROBLEMS = [
    ("What is 2 + 2?", "4"),
    ("What is 3 + 5?", "8"),
    ("What is 10 - 3?", "7"),
    ("What is 6 + 1?", "7"),
]


def _tiny(train_path: Path) -> list[str]:
    return [
        "train.mode=gt",
        f"data.train_path={train_path}",
        "rollout.n_samples_per_prompt=4",
        "rollout.max_new_tokens=12",
        "train.rollout_batch_size=2",
        "train.train_batch_size=8",  # one optimizer step per training step, 8 micro-batches of 1
        "train.micro_train_batch_size=1",
        "train.instructions_per_iteration=8",
        "train.num_iterations=1",
        "train.max_steps=1",
        "train.keep_checkpoints=1",
        "train.learning_rate=1e-5",
        "train.lr_warmup_ratio=0.0",  # the first step already moves the weights
        "reward.difficulty_low=0.0",
        "reward.difficulty_high=1.0",
        "reward.num_workers=0",
        "eval.datasets=[]",
        "eval.at_start=false",
        "log.tensorboard=false",
        "log.debug_dump=true",
    ]


def _train_command(run_dir: Path, overrides: list[str]) -> list[str]:
    cmd = ["-m", "serl", "train", "--json-log", "--no-report", "--preset", LOOP_PRESET, "--run-dir", str(run_dir)]
    for override in overrides:
        cmd += ["--set", override]
    return cmd


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[str]]]:
    accelerate = Path(sys.executable).parent / "accelerate"
    if not accelerate.exists():
        pytest.skip("accelerate launcher not installed")
    root = tmp_path_factory.mktemp("ddp")
    train_path = root / "sums.jsonl"
    train_path.write_text("".join(json.dumps({"problem": q, "answer": a}) + "\n" for q, a in PROBLEMS))
    overrides = _tiny(train_path)
    run_dir = root / "run"
    _launch_two_processes(accelerate, run_dir, overrides)
    yield run_dir, overrides
    shutil.rmtree(root, ignore_errors=True)  # ~4 GB of checkpoints and weight dumps; free it for the next module


def _launch_two_processes(accelerate: Path, run_dir: Path, overrides: list[str]) -> None:
    launch = [str(accelerate), "launch", "--config_file", str(ACCELERATE_CONFIG), "--main_process_port"]
    proc = subprocess.run(
        [*launch, str(_free_port()), *_train_command(run_dir, overrides)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _weights(run_dir: Path, rank: int, step: int) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "debug" / f"rank{rank}_weights_step_{step:06d}.pt")


def _single_process_trainer(overrides: list[str], model: torch.nn.Module):
    from serl.models import load_model
    from serl.trainer.build import make_policy_trainer, optimizer_steps_per_iteration

    cfg = load_config(LOOP_PRESET, overrides)
    reference = load_model(cfg.model.policy).eval().requires_grad_(False)
    return make_policy_trainer(
        cfg, model, reference, pad_token_id=2, total_optimizer_steps=optimizer_steps_per_iteration(cfg)
    )


def _max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def test_both_ranks_end_with_identical_weights(two_process_run) -> None:
    run_dir, _ = two_process_run
    metrics = read_jsonl(run_dir / "metrics.jsonl")[0]
    assert [m["step"] for m in metrics] == [1]
    rank0, rank1 = _weights(run_dir, 0, 1), _weights(run_dir, 1, 1)
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0), "the ranks' weights diverged"
    saved, _ = load_checkpoint(run_dir / "checkpoints" / "step_000001")
    assert _max_abs_diff(saved, rank0) == 0.0
    assert not (run_dir / ".ranks" / "rank1" / "rollouts").exists(), "only rank 0 writes the run's files"


def test_update_equals_one_process_on_the_same_global_batch(two_process_run) -> None:
    """Replay the saved global batch in one plain process. The ranks computed log-probs through the model's own
    forward (a DDP wrapper needs that) with one thread each; the replay does the same, so any difference left comes
    from splitting the work. (Through the chunked head instead, log-probs differ by ~1e-5, and Adam's first step,
    lr * g/|g|, turns that into sign flips of near-zero gradient entries.)"""
    from serl.models import load_policy

    run_dir, overrides = two_process_run
    logged = read_jsonl(run_dir / "metrics.jsonl")[0]
    model, _ = load_policy()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = _single_process_trainer(overrides, model)
    trainer.through_forward = True
    with _one_thread():  # as each rank ran
        batch = torch.load(run_dir / "debug" / "batch_step_000001.pt", weights_only=False)
        # the log-prob passes the ranks split between them give what one process computes
        again = trainer.make_experience(batch.prompt_ids, batch.response_ids, batch.rewards, group_size=4)
        torch.testing.assert_close(again.old_logprobs, batch.old_logprobs, atol=1e-6, rtol=0)
        torch.testing.assert_close(again.advantages, batch.advantages, atol=1e-5, rtol=0)
        metrics = trainer.train(batch)
    # the metrics the ranks reduced are the one-process metrics of the same batch (the KL of step 1 is 0; the
    # resume test below checks a step with KL and AdamW moments)
    for key in ("loss", "policy_loss", "kl", "entropy", "clip_frac", "grad_norm"):
        assert logged[0][f"train/{key}"] == pytest.approx(metrics[key], rel=1e-4, abs=1e-6), key
    ours, theirs = _update(before, model.state_dict()), _update(before, _weights(run_dir, 0, 1))
    assert float(ours.abs().max()) > 5e-6, "the update is ~0: the comparison would be vacuous"
    assert float((ours - theirs).abs().max()) < 1e-6
    assert float((ours - theirs).norm() / ours.norm()) < 1e-4


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _update(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([(after[k] - before[k]).flatten() for k in sorted(before)])


def test_resume_on_one_process_continues_the_two_process_run(two_process_run, tmp_path: Path, copy_run) -> None:
    from serl.models import load_policy

    source, overrides = two_process_run
    run_dir = tmp_path / "run"
    copy_run(source, run_dir, ignore=shutil.ignore_patterns("debug"))  # not the 2 GB of rank weight dumps
    cmd = [sys.executable, "-m", "serl", "train", "--json-log", "--no-report", "--resume", str(run_dir)]
    proc = subprocess.run([*cmd, "--set", "train.max_steps=2"], capture_output=True, text=True, env=_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "resumed from step_000001" in proc.stdout
    metrics = read_jsonl(run_dir / "metrics.jsonl")[0]
    assert [m["step"] for m in metrics] == [1, 2] and metrics[1]["train/kl"] != 0.0

    # Step 2 from the 2-process checkpoint's weights, Adam moments, schedule and shuffling state, in one process:
    model, _ = load_policy()
    weights, state = load_checkpoint(source / "checkpoints" / "step_000001")  # the copy rotated it away
    model.load_state_dict(weights, strict=False)
    trainer = _single_process_trainer(overrides, model)
    trainer.load_state_dict(state["policy"])
    with _one_thread():  # as the resumed run (OMP_NUM_THREADS=1)
        trainer.train(torch.load(run_dir / "debug" / "batch_step_000002.pt", weights_only=False))
    resumed, _ = load_checkpoint(run_dir / "checkpoints" / "step_000002")
    assert _max_abs_diff(model.state_dict(), resumed) < 1e-6


def test_self_instruction_is_shared_out_and_every_rank_keeps_the_same_pools(tmp_path: Path) -> None:
    """serl mode on 2 processes: each rank generates half of a round's candidates, the candidates are all-gathered,
    and each rank screens them itself. Both ranks must write the same instruction log (rank 1 into its scratch
    folder) and end the step with the same weights."""
    accelerate = Path(sys.executable).parent / "accelerate"
    if not accelerate.exists():
        pytest.skip("accelerate launcher not installed")
    overrides = [o for o in _tiny(tmp_path / "unused.jsonl") if not o.startswith(("train.mode", "data.train_path"))]
    overrides += [
        "train.mode=serl",
        "train.max_steps=1",
        "algo.kl_coef=0",  # no reference model: this test is about sharing the self-instruction out
        "selfinstruct.generation_batch_size=4",  # two prompts per rank and round
        "selfinstruct.max_new_tokens=48",
        "train.max_attempts_per_step=20",
    ]
    run_dir = tmp_path / "run"
    _launch_two_processes(accelerate, run_dir, overrides)
    rank0 = read_jsonl(run_dir / "instructions" / "iter_0001.jsonl")[0]
    rank1 = read_jsonl(run_dir / ".ranks" / "rank1" / "instructions" / "iter_0001.jsonl")[0]
    assert len(rank0) >= 2 and rank0 == rank1
    assert {r["fate"] for r in rank0} >= {"trained"}
    weights0, weights1 = _weights(run_dir, 0, 1), _weights(run_dir, 1, 1)
    assert all(torch.equal(weights0[k], weights1[k]) for k in weights0)
