"""Crash-safe outputs: atomic writes, torn JSONL lines, truncation, checkpoint rotation and the `latest` pointer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import torch
from safetensors.torch import load_file

from serl.io import append_jsonl, atomic_write_json, read_jsonl, truncate_to
from serl.trainer.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint


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
    latest = latest_checkpoint(root)
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
    assert latest_checkpoint(root).name == "step_000001"
    save_checkpoint(root, 2, {"w": torch.ones(2)}, {"step": 2}, keep=3)  # the retry cleans it up
    assert latest_checkpoint(root).name == "step_000002"
    assert not (root / ".tmp-step_000002").exists()
    assert os.listdir(root / "step_000002")


def test_a_kill_while_a_step_is_replaced_keeps_a_complete_checkpoint(tmp_path) -> None:
    """A stall save or a resumed run rewrites the step `latest` names: at every moment one complete copy is found."""
    root = tmp_path / "checkpoints"
    save_checkpoint(root, 2, {"w": torch.zeros(2)}, {"step": 2, "version": "old"}, keep=3)
    # The kill lands after the old copy moved aside and before the new one took its name.
    (root / "step_000002").rename(root / ".old-step_000002")
    found = latest_checkpoint(root)
    assert found is not None and load_checkpoint(found)[1]["version"] == "old"
    # The retry writes the new copy and removes the old one.
    save_checkpoint(root, 2, {"w": torch.ones(2)}, {"step": 2, "version": "new"}, keep=3)
    assert load_checkpoint(latest_checkpoint(root))[1]["version"] == "new"
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
