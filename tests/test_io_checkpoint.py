"""Crash-safe outputs: atomic writes, torn JSONL lines, truncation, checkpoint rotation and the `latest` pointer;
the checkpoint format (safetensors and JSON, no pickle) and how damaged checkpoints are found and passed over."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from serl.io import WriteError, append_jsonl, atomic_write_json, read_jsonl, truncate_to
from serl.rl import Experience
from serl.trainer.checkpoint import (
    CheckpointError,
    capture_rng,
    find_resumable,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from serl.trainer.loop import PassedGroup
from serl.trainer.sources import RolloutProblem


def test_read_jsonl_ignores_a_torn_last_line(tmp_path) -> None:
    path = tmp_path / "log.jsonl"
    append_jsonl(path, [{"a": 1}, {"a": 2}])
    with open(path, "a") as handle:
        handle.write('{"a": 3, "b"')  # a crash mid-write
    records, torn = read_jsonl(path)
    assert records == [{"a": 1}, {"a": 2}] and torn == 1


def test_truncate_to_cuts_back_to_a_recorded_size(tmp_path) -> None:
    path = tmp_path / "log.jsonl"
    append_jsonl(path, [{"a": 1}])
    size = path.stat().st_size
    append_jsonl(path, [{"a": 2}, {"a": 3}])
    truncate_to(path, size)
    assert read_jsonl(path) == ([{"a": 1}], 0)
    truncate_to(tmp_path / "missing.jsonl", 0)  # no error, nothing created
    assert not (tmp_path / "missing.jsonl").exists()


def test_atomic_write_never_leaves_a_partial_file(tmp_path) -> None:
    target = tmp_path / "out.json"
    atomic_write_json(target, {"old": True})
    # A writer killed mid-way (SIGKILL) must leave the old content intact and no stray final file.
    script = textwrap.dedent(
        f"""
        import os, serl.io as io
        real = os.replace
        def die(*a, **k):
            os.kill(os.getpid(), 9)
        io.os.replace = die
        io.atomic_write_json({str(target)!r}, {{"new": True}})
        """
    )
    proc = subprocess.run([sys.executable, "-c", script])
    assert proc.returncode == -9
    assert json.loads(target.read_text()) == {"old": True}


def test_checkpoint_rotation_and_latest_pointer(tmp_path) -> None:
    root = tmp_path / "checkpoints"
    weights = {"w": torch.arange(4.0), "tied": torch.ones(2)}
    for step in range(1, 6):
        save_checkpoint(root, step, weights, {"step": step}, keep=2)
    kept = sorted(p.name for p in root.glob("step_*"))
    assert kept == ["step_000004", "step_000005"]
    latest = find_resumable(root)
    assert latest is not None and latest.name == "step_000005"
    model_state, state = load_checkpoint(latest)
    assert state == {"step": 5} and torch.equal(model_state["w"], weights["w"])
    assert not list(root.glob(".tmp-*"))


def test_a_half_written_checkpoint_is_never_latest(tmp_path) -> None:
    root = tmp_path / "checkpoints"
    save_checkpoint(root, 1, {"w": torch.zeros(2)}, {"step": 1}, keep=3)
    # Simulate a kill while step 2 was being written: its temp dir exists, the pointer is untouched.
    (root / ".tmp-step_000002").mkdir()
    (root / ".tmp-step_000002" / "model.safetensors").write_bytes(b"partial")
    assert find_resumable(root).name == "step_000001"
    save_checkpoint(root, 2, {"w": torch.ones(2)}, {"step": 2}, keep=3)  # the retry cleans it up
    assert find_resumable(root).name == "step_000002"
    assert not (root / ".tmp-step_000002").exists()
    assert os.listdir(root / "step_000002")


def test_a_kill_while_a_step_is_replaced_keeps_a_complete_checkpoint(tmp_path) -> None:
    """A stall save or a resumed run rewrites the step `latest` names: at every moment one complete copy is found."""
    root = tmp_path / "checkpoints"
    save_checkpoint(root, 2, {"w": torch.zeros(2)}, {"step": 2, "version": "old"}, keep=3)
    # The kill lands after the old copy moved aside and before the new one took its name.
    (root / "step_000002").rename(root / ".old-step_000002")
    found = find_resumable(root)
    assert found is not None and load_checkpoint(found)[1]["version"] == "old"
    # The retry writes the new copy and removes the old one.
    save_checkpoint(root, 2, {"w": torch.ones(2)}, {"step": 2, "version": "new"}, keep=3)
    assert load_checkpoint(find_resumable(root))[1]["version"] == "new"
    assert sorted(os.listdir(root)) == ["latest", "step_000002"]


def test_tied_weights_are_stored_once_and_come_back_under_both_names(tmp_path) -> None:
    embedding = torch.randn(5, 3)
    base = torch.arange(12.0)
    weights = {"embed": embedding, "head": embedding, "first_half": base[:6], "whole": base, "bias": torch.ones(3)}
    weights["bits"] = embedding.view(torch.int32)  # same memory, shape and strides, another dtype: not an alias
    path = save_checkpoint(tmp_path / "checkpoints", 1, weights, {"step": 1}, keep=1)
    stored = load_file(str(path / "model.safetensors"))
    assert sorted(stored) == ["bias", "bits", "embed", "first_half", "whole"]  # the alias is not stored twice
    assert json.loads((path / "meta.json").read_text())["tied"] == {"head": "embed"}
    model_state, _ = load_checkpoint(path)
    assert model_state.keys() == weights.keys()
    assert all(torch.equal(model_state[k], weights[k]) for k in weights)
    assert model_state["head"] is model_state["embed"]  # still one tensor: loading keeps the tie


# ------------------------------------------------------------------------------------------- format: no pickle


def _same(a: Any, b: Any) -> bool:
    """Equal values of the same types all the way down (tensors and arrays by dtype and content)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if dataclasses.is_dataclass(a):
        return all(_same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    return a == b or (a != a and b != b)  # NaN equals NaN here


def _trainer_like_state() -> dict[str, Any]:
    """What the loop saves: a real AdamW and schedule state after a step, RNG states, a carried group."""
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5**step)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    experience = Experience(
        prompt_ids=[[1, 2], [1, 2]],
        response_ids=[[3], [4, 5]],
        action_mask=torch.tensor([[True, False], [True, True]]),
        old_logprobs=None,
        ref_logprobs=torch.randn(2, 2),
        kl=torch.zeros(2, 2),
        advantages=torch.randn(2, 2),
        rewards=torch.tensor([1.0, 0.0]),
        returns=torch.tensor([1.0, 0.0]),
        group_size=2,
        policy_version=3,
    )
    carried = PassedGroup(RolloutProblem("gen-7", "What is 2 + 2? \u00e9\u2211", "4", 7), experience, 0.5, 2)
    carried = carried.to_state()  # as the loop saves it: plain data
    return {
        "step": 2,
        "policy": {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "deepspeed": False},
        "generator": torch.Generator().manual_seed(5).get_state(),
        "carried": [carried],
        "rng": capture_rng(),
        "by_int": {0: "zero", (1, 2): [None, True, float("nan"), float("inf")]},
        "__reserved": {"__tensor__": "not a tensor"},
        "file_sizes": {"metrics.jsonl": 120, "rollouts/step_000001.jsonl": 4096},
    }


def test_trainer_state_round_trips_exactly_in_safetensors_and_json(tmp_path) -> None:
    state = _trainer_like_state()
    expected_draws = (random.random(), np.random.rand(), torch.rand(3))  # what follows the captured RNG states
    path = save_checkpoint(tmp_path, 2, {"w": torch.ones(2)}, state, keep=1)
    assert sorted(os.listdir(path)) == ["meta.json", "model.safetensors", "state.json", "state.safetensors"]
    json.loads((path / "state.json").read_text())  # plain JSON; the tensors are in state.safetensors
    loaded = load_checkpoint(path)[1]
    assert _same(loaded, state)
    assert _same(PassedGroup.from_state(loaded["carried"][0]), PassedGroup.from_state(state["carried"][0]))
    restore_rng(loaded["rng"])
    draws = (random.random(), np.random.rand(), torch.rand(3))
    assert draws[:2] == expected_draws[:2] and torch.equal(draws[2], expected_draws[2])


def test_a_checkpoint_holds_data_only_and_refuses_objects(tmp_path) -> None:
    group = PassedGroup.from_state(_trainer_like_state()["carried"][0])
    with pytest.raises(TypeError, match=r"^a checkpoint cannot hold a PassedGroup \(at carried.0\)$"):
        save_checkpoint(tmp_path, 1, {}, {"carried": [group]}, keep=1)
    with pytest.raises(TypeError, match=r"^a checkpoint cannot hold a function \(at policy.schedule\)$"):
        save_checkpoint(tmp_path, 1, {}, {"policy": {"schedule": lambda step: step}}, keep=1)
    assert find_resumable(tmp_path) is None and not list(tmp_path.glob(".tmp-*"))  # no partial copy left


# ------------------------------------------------------------------------------------------- damaged checkpoints


class _Plant:
    """Unpickling this creates MARKER: a stand-in for a pickle that runs code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _truncate(file: Path, keep: int = 100) -> None:
    data = file.read_bytes()
    file.unlink()  # a new file: the tests' run copies share large files with their source through hard links
    file.write_bytes(data[:keep])


def _drop_entry(step_dir: Path, entry: str) -> None:
    """A state.json without ENTRY whose size meta.json agrees with: only the entry is missing."""
    state = json.loads((step_dir / "state.json").read_text())
    del state["tree"][entry]
    (step_dir / "state.json").write_text(json.dumps(state))
    meta = json.loads((step_dir / "meta.json").read_text())
    meta["files"]["state.json"] = (step_dir / "state.json").stat().st_size
    (step_dir / "meta.json").write_text(json.dumps(meta))


def _plant_pickle(step_dir: Path) -> None:
    for name in ("state.json", "state.safetensors", "meta.json"):
        (step_dir / name).unlink()
    torch.save({"step": 2, "policy": _Plant(step_dir.parent.parent / "pwned")}, step_dir / "state.pt")


DAMAGE = {
    "truncated weights": (
        lambda d: _truncate(d / "model.safetensors"),
        "{d}/model.safetensors is truncated: 100 of {n} bytes",
    ),
    "truncated state tensors": (
        lambda d: _truncate(d / "state.safetensors"),
        "{d}/state.safetensors is truncated: 100 of {n} bytes",
    ),
    "truncated state tree": (lambda d: _truncate(d / "state.json", 10), "{d}/state.json is truncated: 10 of {n} bytes"),
    "no meta.json": (lambda d: (d / "meta.json").unlink(), "{d}/meta.json is missing: the checkpoint was not finished"),
    "no policy entry": (lambda d: _drop_entry(d, "policy"), "{d}/state.json has no 'policy' entry"),
    "garbage in place of weights": (
        lambda d: (d / "model.safetensors").write_bytes(b"\xff" * (d / "model.safetensors").stat().st_size),
        "{d}/model.safetensors is not a readable safetensors file (Error while deserializing header: header too large)",
    ),
    "a pickle": (
        _plant_pickle,
        "{d}/state.pt is a pickle (serl's old format), which serl does not load: unpickling can run code",
    ),
    "dangling latest": (lambda d: shutil.rmtree(d), "{d.parent}/latest names step_000002, which does not exist"),
}


def _two_checkpoints(root: Path) -> Path:
    for step in (1, 2):
        save_checkpoint(
            root, step, {"w": torch.arange(1000.0)}, {"step": step, "policy": {"m": torch.ones(300)}}, keep=3
        )
    return root / "step_000002"


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_latest_checkpoint_is_named_and_the_newest_complete_one_resumed(tmp_path, damage) -> None:
    latest = _two_checkpoints(tmp_path / "run" / "checkpoints")
    sizes = {p.name: p.stat().st_size for p in latest.iterdir()}
    damage_it, message = DAMAGE[damage]
    damage_it(latest)
    name = message.split("/")[-1].split(" ")[0]
    expected = message.format(d=latest, n=sizes.get(name))
    warnings: list[str] = []
    found = find_resumable(latest.parent, required=("step", "policy"), warn=warnings.append)
    assert found == latest.parent / "step_000001"
    assert warnings == [f"{expected}; resuming from step_000001, the newest complete checkpoint"]
    assert load_checkpoint(found)[1]["step"] == 1
    assert not (tmp_path / "run" / "pwned").exists()  # the planted pickle never ran


def test_no_complete_checkpoint_is_an_error_that_says_how_to_go_on(tmp_path) -> None:
    root = tmp_path / "checkpoints"
    latest = _two_checkpoints(root)
    _plant_pickle(latest)
    size = (root / "step_000001" / "model.safetensors").stat().st_size
    _truncate(root / "step_000001" / "model.safetensors")
    (root / "iter_01_hf").mkdir()
    with pytest.raises(CheckpointError) as err:
        find_resumable(root, required=("policy",))
    assert str(err.value) == (
        f"no complete checkpoint to resume from in {root}: {latest}/state.pt is a pickle (serl's old format), which "
        f"serl does not load: unpickling can run code; {root}/step_000001/model.safetensors is truncated: 100 of "
        f"{size} bytes; continue from the HF export with serl train --set model.policy={root}/iter_01_hf"
    )
    assert not (tmp_path / "pwned").exists()
    (root / "iter_01_hf").rmdir()
    (root / "latest").write_text("../../etc\n")
    with pytest.raises(CheckpointError, match=r"latest names '../../etc', not a checkpoint; .*start a new run"):
        find_resumable(root)
    assert find_resumable(tmp_path / "empty") is None  # no checkpoint at all: nothing to pass over


def test_a_full_disk_leaves_the_last_checkpoint_latest_and_names_the_file(tmp_path, tmpfs) -> None:
    root = tmp_path / "disk" / "checkpoints"
    with tmpfs(tmp_path / "disk", 1 << 20) as resize:
        if resize is None:
            pytest.skip("cannot mount a tmpfs here (needs root)")
        save_checkpoint(root, 1, {"w": torch.zeros(1000)}, {"step": 1}, keep=2)
        big = {"w": torch.zeros(1 << 18)}  # 1 MB: more than is left
        with pytest.raises(WriteError) as err:
            save_checkpoint(root, 2, big, {"step": 2}, keep=2)
        assert str(err.value) == f"{root}/step_000002: cannot write (No space left on device)"
        assert (root / "latest").read_text() == "step_000001\n" and sorted(os.listdir(root)) == [
            "latest",
            "step_000001",
        ]
        with pytest.raises(WriteError) as err:
            append_jsonl(tmp_path / "disk" / "metrics.jsonl", [{"text": "x" * (1 << 20)}])
        assert str(err.value) == f"{tmp_path}/disk/metrics.jsonl: cannot write (No space left on device)"
        with pytest.raises(WriteError) as err:
            atomic_write_json(tmp_path / "disk" / "eval.json", {"text": "x" * (1 << 20)})
        assert str(err.value) == f"{tmp_path}/disk/eval.json: cannot write (No space left on device)"
        resize(8 << 20)  # space is back
        save_checkpoint(root, 2, big, {"step": 2}, keep=2)
        assert find_resumable(root) == root / "step_000002"
