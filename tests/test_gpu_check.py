"""scripts/gpu_check.sh, the GPU checks prepared for one call on a GPU machine: its CPU dry mode end to end (so the
command lines, configs and verifications cannot rot while no GPU is at hand), the runner's isolation of a failing or
hanging check, what the validations catch, and that the carried wheels cover serl's dependencies."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHECKS = [
    "install",
    "env",
    "model",
    "smoke_tests",
    "train_bf16",
    "train_fsdp2",
    "train_lora_gc",
    "bench_rollout",
    "bench_train_step",
    "train_zero3",
]


def load_runner():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look the module up while building Check
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_dry_run_runs_or_validates_every_check(tmp_path: Path) -> None:
    out, work = tmp_path / "out", tmp_path / "work"
    cmd = ["bash", "scripts/gpu_check.sh", "--dry-run", "--out", str(out), "--work", str(work)]
    proc = subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, timeout=420, env={**os.environ, "PYTHON": sys.executable}
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    records = {record["name"]: record for record in report["checks"]}
    assert list(records) == CHECKS
    assert report["mode"] == "dry-run" and report["summary"] == {"pass": 9, "fail": 0, "skipped": 1}
    assert records["install"]["status"] == "skipped"
    assert {name: r["mode"] for name, r in records.items() if name != "install"} == {
        "env": "ran",
        "model": "ran",
        "smoke_tests": "validated",
        "train_bf16": "validated",
        "train_fsdp2": "validated",
        "train_lora_gc": "ran",
        "bench_rollout": "validated",
        "bench_train_step": "validated",
        "train_zero3": "validated",
    }
    assert records["model"]["figures"]["layers"] == 2  # the tiny random-init model, in the checks' own cache
    assert (work / "cache" / "models" / "smollm2-135m" / "model.safetensors").is_file()
    lora = records["train_lora_gc"]["figures"]
    assert len(lora["train/loss"]) == 2 and all(g > 0 for g in lora["train/grad_norm"])
    assert lora["train/kl"][0] == 0.0 and lora["train/kl"][1] != 0.0  # the adapter moved after step 1
    assert records["train_fsdp2"]["figures"]["distributed_type"] == "FSDP"
    assert records["train_zero3"]["figures"]["zero_stage"] == 3
    assert records["train_bf16"]["figures"]["mixed_precision"] == "bf16"
    assert records["bench_train_step"]["figures"]["device"] == "cpu"  # the GPU run says cuda: same flags otherwise
    collected = records["smoke_tests"]["figures"]["collected"]
    assert sum(name.startswith(("test_hf_engine", "test_bf16", "test_policy")) for name in collected) == 3
    log = (out / "gpu_check.log").read_text()
    assert all(f"---- {name}: " in log for name in CHECKS)
    assert "==== train_lora_gc: " in log and "training finished after 2 steps" in log


def test_a_failing_or_hanging_check_does_not_stop_the_others(tmp_path: Path, monkeypatch) -> None:
    runner = load_runner()
    monkeypatch.setattr(runner, "MIN_START_S", 1.0)
    python = sys.executable
    # a launcher that starts a worker and hangs: the timeout must end both (the process group)
    hang = "import subprocess, sys, time\n"
    hang += "worker = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
    hang += "print(worker.pid, flush=True)\ntime.sleep(120)"

    def wrong(output: str) -> dict:
        raise runner.CheckFailed(f"x is {runner.last_json(output)['x']}, expected 2")

    checks = [
        runner.Check("fails", [python, "-c", "raise SystemExit(3)"], 30, runner.last_json),
        runner.Check("wrong", [python, "-c", "print('{\"x\": 1}')"], 30, wrong),
        runner.Check("passes", [python, "-c", "print('noise'); print('{\"x\": 2}')"], 30, runner.last_json),
        runner.Check("skipped", [python, "-c", "raise SystemExit(1)"], 30, runner.last_json, skip=lambda _: "no"),
        runner.Check("hangs", [python, "-c", hang], 60, runner.last_json),  # outlives the budget: cut at its end
        runner.Check("late", [python, "-c", "print('{}')"], 30, runner.last_json),
    ]
    report = runner.run_checks(checks, False, tmp_path / "out", tmp_path / "work", 5.0, {"mode": "test"})

    records = {record["name"]: record for record in report["checks"]}
    assert {name: r["status"] for name, r in records.items()} == {
        "fails": "fail",
        "wrong": "fail",
        "passes": "pass",
        "skipped": "skipped",
        "hangs": "fail",
        "late": "skipped",
    }
    assert records["fails"]["error"].startswith("exit 3")
    assert records["wrong"]["error"] == "CheckFailed: x is 1, expected 2"
    assert records["passes"]["figures"] == {"x": 2}
    assert records["skipped"]["reason"] == "no"
    assert records["hangs"]["error"].startswith("timed out after") and records["hangs"]["wall_s"] < 10
    assert records["late"]["reason"].startswith("out of time")
    assert json.loads((tmp_path / "out" / "gpu_check.json").read_text()) == report
    worker = int((tmp_path / "work" / "logs" / "hangs.out").read_text().split()[0])
    status = Path(f"/proc/{worker}/status")
    assert not status.exists() or re.search(r"State:\s+Z", status.read_text())  # gone, or dead awaiting its reaper


def test_validations_catch_renamed_flags_misspelt_overrides_and_the_wrong_strategy() -> None:
    from serl.config import ConfigError

    runner = load_runner()
    python = sys.executable
    launch = [python, "-m", "accelerate.commands.launch", "--num_processes", "1"]
    serl = ["-m", "serl", "train", "--preset", "cpu-demo", "--set", "train.max_steps=2"]
    fsdp = ["--config_file", "configs/accelerate/gpu_fsdp.yaml"]
    expect_fsdp2 = {"distributed_type": "FSDP", "fsdp_version": 2}
    assert runner.validate_launch([*launch, *fsdp, *serl], expect_fsdp2)["fsdp_version"] == 2

    with pytest.raises(runner.CheckFailed, match="bad arguments"):
        runner.validate_launch([python, "-m", "accelerate.commands.launch", "--num_procs", "1", *serl], {})
    with pytest.raises(runner.CheckFailed, match="No such option"):
        runner.validate_launch([*launch, *serl, "--runs-dir", "x"], {})
    with pytest.raises(ConfigError, match=r"train\.max_steps"):  # the error suggests the key meant
        runner.validate_launch([*launch, "-m", "serl", "train", "--set", "train.max_step=2"], {})
    with pytest.raises(runner.CheckFailed, match="resolves to"):
        ddp = ["--config_file", "configs/accelerate/gpu_ddp.yaml"]
        runner.validate_launch([*launch, *ddp, *serl], expect_fsdp2)
    with pytest.raises(FileNotFoundError):
        runner.validate_launch([*launch, "--config_file", "configs/accelerate/gone.yaml", *serl], {})

    assert runner.validate_script([python, "benchmarks/bench_train_step.py", "--device", "cuda"])["device"] == "cuda"
    with pytest.raises(runner.CheckFailed, match="bad arguments"):
        runner.validate_script([python, "benchmarks/bench_train_step.py", "--device", "gpu"])
    with pytest.raises(runner.CheckFailed, match="bad arguments"):
        runner.validate_script([python, "benchmarks/bench_rollout.py", "--new_tokens", "4"])


def test_every_serl_dependency_is_on_the_gpu_image_or_carried() -> None:
    runner = load_runner()

    def canonical(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {canonical(re.split(r"[<>=!~;\[ ]", dependency, maxsplit=1)[0]) for dependency in dependencies}
    covered = {canonical(name) for name in [*runner.ON_GPU_IMAGE, *runner.WHEELS, *runner.NOT_NEEDED_ON_GPU]}
    assert names - covered == set()
    assert len({canonical(name) for name in runner.WHEELS}) == len(runner.WHEELS)  # one version of each
