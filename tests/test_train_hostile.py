"""Stopped, damaged and hostile runs, in real `serl train` processes on the embedded model.

One tiny maj-mode run (a LoRA adapter: small optimizer state) is stopped on the way, the way a user would: SIGTERM
while step 1 trains, before any checkpoint exists; resumed (starting over), SIGINT during the rollout of step 2;
resumed on a disk that is full (a real tmpfs, sized to what the run holds plus 2 MiB), and once more after space is
back, to the end. The checkpoint tests then damage copies of the finished run (two checkpoints) and resume them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from presets import LOOP_PRESET
from serl.io import read_jsonl

pytestmark = pytest.mark.slow

SUMS = [(a, b) for a in (2, 3, 5, 7) for b in (1, 4, 6)]
TINY = [
    "train.mode=maj",
    "rollout.n_samples_per_prompt=2",
    "rollout.max_new_tokens=8",
    "algo.kl_coef=0",
    "train.rollout_batch_size=1",
    "train.train_batch_size=2",
    "train.micro_train_batch_size=2",
    "train.instructions_per_iteration=2",  # 2 steps: one iteration
    "train.num_iterations=1",
    "train.max_steps=2",
    "train.save_every=1",
    "train.keep_checkpoints=2",
    "train.max_attempts_per_step=20",
    "train.learning_rate=1e-3",
    "model.lora.rank=8",
    "model.lora.target_modules=[q_proj,v_proj]",
    "reward.difficulty_low=0.0",  # every group passes: the tests are about stopping, not filtering
    "reward.difficulty_high=1.0",
    "reward.num_workers=0",
    "eval.datasets=[]",
    "log.tensorboard=false",
]


def _train(*args: str) -> list[str]:
    return [sys.executable, "-m", "serl", "train", "--json-log", "--no-report", "--preset", LOOP_PRESET, *args]


def _run(cmd: list[str], stop_at: tuple[str, int, signal.Signals] | None = None) -> dict[str, Any]:
    """Run CMD; with STOP_AT=(phase, step, signal), send the signal as soon as it announces that phase of that step.

    Returns the exit code, stderr, stdout's JSON events and the seconds from the signal to the exit.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryFile("w+") as errors:  # a file, not a pipe: a full stderr pipe would stall the child
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, text=True, env=env)
        assert proc.stdout is not None
        events, sent = [], None
        for line in proc.stdout:
            if not line.startswith("{"):
                continue
            events.append(json.loads(line))
            event = events[-1]
            if stop_at and sent is None and event.get("event") == "phase" and event["phase"] == stop_at[0]:
                match = re.search(r"step (\d+)", event.get("info", ""))  # none in the load phase: step 0
                if (int(match.group(1)) if match else 0) == stop_at[1]:
                    proc.send_signal(stop_at[2])
                    sent = time.monotonic()
        code = proc.wait(timeout=600)
        stopped = time.monotonic() - sent if sent else None
        errors.seek(0)
        return {"code": code, "stderr": errors.read(), "events": events, "stop_s": stopped}


def _latest(run_dir: Path) -> str | None:
    pointer = run_dir / "checkpoints" / "latest"
    return pointer.read_text().strip() if pointer.exists() else None


def _used_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return (stats.f_blocks - stats.f_bfree) * stats.f_frsize


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory: pytest.TempPathFactory, tmpfs) -> Iterator[dict[str, Any]]:
    """The run above, stopped and resumed; what each process did, and the finished run directory."""
    root = tmp_path_factory.mktemp("stops")
    data = root / "sums.jsonl"
    data.write_text("".join(json.dumps({"problem": f"What is {a} + {b}?", "answer": a + b}) + "\n" for a, b in SUMS))
    outcomes: dict[str, Any] = {}
    with tmpfs(root / "disk", 4 << 30) as resize:
        run_dir = root / "disk" / "run"
        overrides = [f"--set={o}" for o in [*TINY, f"data.train_path={data}"]]
        outcomes["sigterm"] = _run(_train("--run-dir", str(run_dir), *overrides), ("train", 1, signal.SIGTERM))
        outcomes["sigterm"]["latest"] = _latest(run_dir)
        outcomes["sigterm"]["rollouts"] = read_jsonl(run_dir / "rollouts" / "step_000001.jsonl")[0]
        outcomes["sigint"] = _run(_train("--resume", str(run_dir)), ("rollout", 2, signal.SIGINT))
        outcomes["sigint"]["latest"] = _latest(run_dir)
        if resize is not None:
            resize(_used_bytes(root / "disk") + (2 << 20))  # room for the logs of step 2, not for its checkpoint
            outcomes["full"] = _run(_train("--resume", str(run_dir)))
            outcomes["full"]["latest"] = _latest(run_dir)
            outcomes["full"]["left"] = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
            resize(4 << 30)
        outcomes["end"] = _run(_train("--resume", str(run_dir)))
        outcomes["stopped_dir"] = run_dir  # where the processes ran, as their messages say
        outcomes["run_dir"] = Path(shutil.move(run_dir, root / "run"))  # off the tmpfs before it goes
    yield outcomes
    shutil.rmtree(root, ignore_errors=True)


def _resume_hint(run_dir: Path, latest: str) -> str:
    return f"the last complete checkpoint is {latest}; resume with: serl train --resume {run_dir}"


@pytest.mark.parametrize(
    ("stop", "signum", "latest"),
    [("sigterm", signal.SIGTERM, None), ("sigint", signal.SIGINT, "step_000001")],
    ids=["SIGTERM while step 1 trains", "SIGINT during the rollout of step 2"],
)
def test_a_signal_stops_the_run_at_once_and_it_says_how_to_resume(stopped_run, stop, signum, latest) -> None:
    outcome, run_dir = stopped_run[stop], stopped_run["stopped_dir"]
    assert outcome["code"] == 128 + signum, outcome["stderr"][-3000:]
    assert outcome["stop_s"] < 10, f"{outcome['stop_s']:.1f} s from {signum.name} to exit"
    where = f"the last complete checkpoint is {latest}" if latest else "no checkpoint was written yet"
    hint = f"{where}; resume with: serl train --resume {run_dir}"
    step = 2 if latest else 1
    assert outcome["stderr"].splitlines()[-1] == f"WARNING serl: stopped by {signum.name} during step {step}; {hint}"
    assert "Traceback" not in outcome["stderr"] and outcome["latest"] == latest


def test_resume_before_the_first_checkpoint_says_it_starts_over_and_leaves_no_stale_record(stopped_run) -> None:
    warning = (
        f"WARNING serl: no checkpoint in {stopped_run['stopped_dir']}/checkpoints: starting over from step 0 (the "
        "interrupted attempt's metrics, rollouts and instruction log are cleared)"
    )
    assert warning in stopped_run["sigint"]["stderr"].splitlines()
    # step 1's rollout, written before SIGTERM came, is there once, as the replay wrote it again: exactly the same
    final = read_jsonl(stopped_run["run_dir"] / "rollouts" / "step_000001.jsonl")[0]
    assert final == stopped_run["sigterm"]["rollouts"] and len(final) == 1


def test_a_full_disk_stops_the_run_with_the_file_named_and_it_resumes_once_space_is_back(stopped_run) -> None:
    if "full" not in stopped_run:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    outcome, run_dir = stopped_run["full"], stopped_run["stopped_dir"]
    assert outcome["code"] == 1, outcome["stderr"][-3000:]
    # step 2 trained and logged; its HF export (the iteration's end) found the disk full
    export = run_dir / "checkpoints" / "iter_01_hf"
    assert outcome["stderr"].splitlines()[-1] == (
        f"error: {export}: cannot write (No space left on device); {_resume_hint(run_dir, 'step_000001')}"
    )
    assert "Traceback" not in outcome["stderr"]
    assert outcome["latest"] == "step_000001" and outcome["left"] == ["latest", "step_000001"]  # no partial copies


def test_the_stopped_run_resumes_to_the_end_without_a_duplicated_record(stopped_run) -> None:
    outcome, run_dir = stopped_run["end"], stopped_run["run_dir"]
    assert outcome["code"] == 0, outcome["stderr"][-3000:]
    assert [m["step"] for m in read_jsonl(run_dir / "metrics.jsonl")[0]] == [1, 2]
    for step in (1, 2):  # each rollout attempt of each step once, though each step was started more than once
        attempts = [r["attempt"] for r in read_jsonl(run_dir / "rollouts" / f"step_{step:06d}.jsonl")[0]]
        assert attempts == list(range(1, len(attempts) + 1)), attempts  # one problem per attempt
    assert _latest(run_dir) == "step_000002" and (run_dir / "checkpoints" / "step_000001").is_dir()


# ------------------------------------------------------------------------------------------- damaged checkpoints


def _damaged_copy(stopped_run, tmp_path: Path, copy_run) -> Path:
    run_dir = tmp_path / "run"
    copy_run(stopped_run["run_dir"], run_dir)
    return run_dir


def _replace_truncated(file: Path, keep: int = 1000) -> int:
    """Cut FILE to KEEP bytes as a new file (a copied run shares large files through hard links); its old size."""
    data = file.read_bytes()
    file.unlink()
    file.write_bytes(data[:keep])
    return len(data)


@pytest.mark.parametrize("damage", ["truncated weights", "latest dangling"])
def test_resume_passes_over_a_damaged_latest_checkpoint_saying_so(stopped_run, tmp_path, copy_run, damage) -> None:
    run_dir = _damaged_copy(stopped_run, tmp_path, copy_run)
    ckpts = run_dir / "checkpoints"
    if damage == "truncated weights":
        size = _replace_truncated(ckpts / "step_000002" / "model.safetensors")
        problem = f"{ckpts}/step_000002/model.safetensors is truncated: 1000 of {size} bytes"
    else:
        shutil.rmtree(ckpts / "step_000002")
        problem = f"{ckpts}/latest names step_000002, which does not exist"
    outcome = _run(_train("--resume", str(run_dir), "--set=train.max_steps=1"))  # no step to train after step 1
    assert outcome["code"] == 0, outcome["stderr"][-3000:]
    warning = f"{problem}; resuming from step_000001, the newest complete checkpoint"
    assert f"WARNING serl: {warning}" in outcome["stderr"].splitlines()
    assert "Traceback" not in outcome["stderr"]
    assert any(e.get("message") == "resumed from step_000001: step 1, iteration 1" for e in outcome["events"])
    assert [m["step"] for m in read_jsonl(run_dir / "metrics.jsonl")[0]] == [1]  # cut back to the checkpoint


class _Plant:
    """Unpickling this creates MARKER: a stand-in for a pickle that runs code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("damage", ["a planted pickle", "no policy entry"])
def test_resume_refuses_a_checkpoint_it_cannot_trust_and_runs_nothing(stopped_run, tmp_path, copy_run, damage) -> None:
    run_dir = _damaged_copy(stopped_run, tmp_path, copy_run)
    ckpts, marker = run_dir / "checkpoints", tmp_path / "pwned"
    shutil.rmtree(ckpts / "step_000001")  # nothing to fall back to
    latest = ckpts / "step_000002"
    if damage == "a planted pickle":  # where the trainer state was, as an older serl wrote it
        for name in ("state.json", "state.safetensors", "meta.json"):
            (latest / name).unlink()
        torch.save({"step": 2, "policy": _Plant(marker)}, latest / "state.pt")
        problem = (
            f"{latest}/state.pt is a pickle (serl's old format), which serl does not load: unpickling can run code"
        )
    else:
        state = json.loads((latest / "state.json").read_text())
        del state["tree"]["policy"]
        (latest / "state.json").write_text(json.dumps(state))
        meta = json.loads((latest / "meta.json").read_text())
        meta["files"]["state.json"] = (latest / "state.json").stat().st_size  # only the entry is missing
        (latest / "meta.json").write_text(json.dumps(meta))
        problem = f"{latest}/state.json has no 'policy' entry"
    before = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*"))
    outcome = _run(_train("--resume", str(run_dir)))
    assert outcome["code"] == 2 and outcome["stderr"] == (
        f"error: no complete checkpoint to resume from in {ckpts}: {problem}; continue from the HF export with "
        f"serl train --set model.policy={ckpts}/iter_01_hf\n"
    )
    assert not marker.exists()  # the pickle never ran
    assert sorted(p.relative_to(run_dir) for p in run_dir.rglob("*")) == before  # and the run was left as it was


def test_a_50_mb_line_in_the_training_data_stops_the_run_at_load_with_the_line_named(tmp_path) -> None:
    data = tmp_path / "big.jsonl"
    with open(data, "w") as handle:
        handle.write('{"problem": "' + "x" * (50 << 20) + '", "answer": "1"}\n')
    cmd = _train(*[f"--set={o}" for o in [*TINY, f"data.train_path={data}", "data.max_samples=1"]])
    proc = subprocess.run([*cmd, "--run-dir", str(tmp_path / "run")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1] == f"error: {data}:1: record longer than max_chars=100000 characters"
