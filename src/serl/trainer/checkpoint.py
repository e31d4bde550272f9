"""Resumable checkpoints: one directory per step, made atomically (build in a temp dir, then rename), plus a `latest`
pointer rewritten atomically, so a kill at any moment leaves either the old or the new checkpoint, never half of one.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from serl.io import atomic_write_text, flush_and_uncache

LATEST = "latest"


def _step_name(step: int) -> str:
    return f"step_{step:06d}"


def capture_rng() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def _untie(model_state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors safetensors can store (no shared memory), and the names dropped as aliases of a kept one.

    Tied weights (embeddings and LM head) are the same tensor under two names: keep one, record the other, so a
    checkpoint neither stores them twice nor copies the whole model to break the sharing. Other views into shared
    memory (rare) are copied.
    """
    unique: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    storages: set[int] = set()
    for name, tensor in model_state.items():
        tensor = tensor.detach()
        storage = tensor.untyped_storage()
        view = (storage.data_ptr(), tensor.dtype, tensor.storage_offset(), tuple(tensor.shape), tensor.stride())
        if view in seen:
            aliases[name] = seen[view]
            continue
        shares_memory = storage.data_ptr() in storages or storage.nbytes() != tensor.nbytes
        unique[name] = tensor.contiguous().clone() if shares_memory else tensor.contiguous()
        seen[view] = name
        storages.add(storage.data_ptr())
    return unique, aliases


def save_checkpoint(
    ckpt_root: Path, step: int, model_state: dict[str, torch.Tensor], trainer_state: dict[str, Any], keep: int
) -> Path:
    """Write checkpoints/step_XXXXXX/{model.safetensors, state.pt, meta.json}, point `latest` at it, rotate old ones."""
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / _step_name(step)
    tmp = ckpt_root / f".tmp-{final.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    unique, aliases = _untie(model_state)
    save_file(unique, str(tmp / "model.safetensors"))
    torch.save(trainer_state, tmp / "state.pt")
    (tmp / "meta.json").write_text(json.dumps({"step": step, "tied": aliases}) + "\n")
    flush_and_uncache(tmp)
    # A re-run of the same step (a resume, or a stall save) replaces it. The old copy moves aside first and goes only
    # once `latest` names the new one, so a kill in between leaves a complete checkpoint under one of the two names.
    replaced = ckpt_root / f".old-{final.name}"
    shutil.rmtree(replaced, ignore_errors=True)
    if final.exists():
        final.rename(replaced)
    tmp.rename(final)
    atomic_write_text(ckpt_root / LATEST, final.name + "\n")
    for stale in ckpt_root.glob(".old-step_*"):  # this one, or one a kill left behind that a resume started from
        shutil.rmtree(stale, ignore_errors=True)
    _rotate(ckpt_root, keep)
    return final


def _rotate(ckpt_root: Path, keep: int) -> None:
    steps = sorted(p for p in ckpt_root.glob("step_*") if p.is_dir())
    latest = (ckpt_root / LATEST).read_text().strip()
    for old in steps[: max(0, len(steps) - keep)]:
        if old.name != latest:
            shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    """The checkpoint `latest` names; if a kill came while that step was being replaced, its moved-aside copy."""
    pointer = ckpt_root / LATEST
    if not pointer.exists():
        return None
    name = pointer.read_text().strip()
    for path in (ckpt_root / name, ckpt_root / f".old-{name}"):
        if (path / "state.pt").exists():
            return path
    return None


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The full model state dict (tied names included, as one tensor) and the trainer state."""
    model_state = load_file(str(path / "model.safetensors"))
    meta = json.loads((path / "meta.json").read_text()) if (path / "meta.json").exists() else {}
    for alias, name in meta.get("tied", {}).items():
        model_state[alias] = model_state[name]
    trainer_state = torch.load(path / "state.pt", weights_only=False)
    return model_state, trainer_state


def export_hf(model: torch.nn.Module, tokenizer: Any, target: Path) -> Path:
    """Save an HF checkpoint (safetensors + tokenizer) atomically; LoRA adapters are merged into a copy first."""
    tmp = target.parent / f".tmp-{target.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    to_save = model
    if hasattr(model, "merge_and_unload"):  # peft model: export merged weights, keep the adapter in training
        import copy

        to_save = copy.deepcopy(model).merge_and_unload()
    to_save.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    flush_and_uncache(tmp)
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)
    return target
