"""The SeRL loop end to end on the embedded model, and exact resume after SIGKILL.

A tiny serl-mode config runs 2 steps (one iteration) uninterrupted. A second run is killed with SIGKILL during the
rollout phase of step 2, resumed from step 1's checkpoint, killed again during the train phase of step 2, and resumed
to completion. The resumed run must equal the uninterrupted one: every metric except wall-clock times, and the
instruction log record for record (nothing duplicated, nothing lost). This holds exactly on CPU because every draw
is seeded from (seed, step, attempt). The policy trains a LoRA adapter, so a checkpoint is megabytes, not the
1.6 GB of full weights and AdamW moments; full fine-tuning resumes exactly across world sizes in test_distributed,
and a LoRA run across an iteration boundary in test_lora_train.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from presets import LOOP_PRESET
from serl.io import read_jsonl

pytestmark = pytest.mark.slow

TINY = [
    "rollout.n_samples_per_prompt=4",
    "rollout.max_new_tokens=24",
    "selfinstruct.generation_batch_size=2",
    "selfinstruct.max_new_tokens=64",
    "train.rollout_batch_size=2",
    "train.train_batch_size=4",
    "train.micro_train_batch_size=2",
    "train.instructions_per_iteration=4",  # 2 steps per iteration
    "train.num_iterations=1",
    "train.max_steps=2",
    "train.keep_checkpoints=1",  # resume needs only the latest; keeps the test's disk use small
    "train.max_attempts_per_step=20",
    "model.lora.rank=8",
    "model.lora.alpha=16",
    "model.lora.target_modules=[q_proj,v_proj]",
    "train.learning_rate=1e-3",  # LoRA: large enough that the adapter moves every step
    "reward.difficulty_low=0.0",  # keep every group: the test is about resume, not about the filter
    "reward.difficulty_high=1.0",
    "reward.num_workers=0",
    "eval.datasets=[]",
    "eval.at_start=false",
    "log.tensorboard=false",
]


def _command(run_dir: Path, resume: bool = False, save_every: int = 1) -> list[str]:
    cmd = [sys.executable, "-m", "serl", "train", "--json-log", "--no-report"]
    if resume:
        return [*cmd, "--resume", str(run_dir)]
    cmd += ["--preset", LOOP_PRESET, "--run-dir", str(run_dir)]
    for override in [*TINY, f"train.save_every={save_every}"]:
        cmd += ["--set", override]
    return cmd


def _run_until(cmd: list[str], kill_at: tuple[str, int] | None, timeout: float = 600) -> int:
    """Run CMD; if KILL_AT=(phase, step), SIGKILL it as soon as it announces that phase of that step."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    assert proc.stdout is not None
    for line in proc.stdout:
        if kill_at is None or not line.startswith("{"):
            continue
        event = json.loads(line)
        if event.get("event") == "phase" and event["phase"] == kill_at[0]:
            match = re.search(r"step (\d+)", event.get("info", ""))
            if match and int(match.group(1)) == kill_at[1]:
                proc.send_signal(signal.SIGKILL)
                break
    proc.stdout.close()
    return proc.wait(timeout=timeout)


def _comparable(metrics: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if not k.startswith("time/") and k != "elapsed_s"} for m in metrics]


def _instruction_records(run_dir: Path) -> list[dict]:
    records = []
    for path in sorted((run_dir / "instructions").glob("iter_*.jsonl")):
        found, torn = read_jsonl(path)
        assert torn == 0, f"{path} has torn lines"
        records.extend(found)
    return records


def test_kill_during_rollout_and_train_then_resume_matches_uninterrupted(tmp_path: Path) -> None:
    straight = tmp_path / "straight"
    assert _run_until(_command(straight, save_every=0), None) == 0  # checkpoints change nothing but the disk
    expected = _comparable(read_jsonl(straight / "metrics.jsonl")[0])
    assert [m["step"] for m in expected] == [1, 2]
    assert any(m["train/grad_norm"] > 0 for m in expected), "no update: the comparison would not see the adapter"
    assert (straight / "checkpoints" / "iter_01_hf" / "model.safetensors").exists()

    killed = tmp_path / "killed"
    assert _run_until(_command(killed), ("rollout", 2)) == -signal.SIGKILL
    assert (killed / "checkpoints" / "latest").read_text().strip() == "step_000001"
    assert _run_until(_command(killed, resume=True), ("train", 2)) == -signal.SIGKILL
    assert _run_until(_command(killed, resume=True), None) == 0

    resumed = _comparable(read_jsonl(killed / "metrics.jsonl")[0])
    assert [m["step"] for m in resumed] == [1, 2]
    assert resumed == expected

    records = _instruction_records(killed)
    assert records == _instruction_records(straight)
    ids_and_fates = [(r["id"], r["fate"]) for r in records]
    assert len(ids_and_fates) == len(set(ids_and_fates)), "an instruction record was duplicated"
    trained = [r for r in records if r["fate"] == "trained"]
    assert sorted({r["step"] for r in trained}) == [1, 2] and len(trained) == 4


def test_resume_refuses_a_directory_that_is_not_a_run(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "serl", "train", "--resume", str(tmp_path)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "config.yaml" in proc.stderr
