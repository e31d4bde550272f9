"""Resumable checkpoints: one directory per step, made atomically (build in a temp dir, then rename), plus a `latest`
pointer rewritten atomically, so a kill at any moment leaves either the old or the new checkpoint, never half of one.

A checkpoint holds tensors (safetensors) and JSON, nothing that runs code when read: no pickle. The trainer state, a
nested structure of dicts, lists, tuples, numbers, strings, tensors and NumPy arrays (plain data: the loop turns its
objects into that), becomes a JSON tree (`state.json`) whose tensors live in `state.safetensors`. `meta.json` is written
last and records every file's size, so a truncated or missing file is found before anything is loaded.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from serl.io import WriteError, atomic_write_text, flush_and_uncache

LATEST = "latest"
MODEL_FILE = "model.safetensors"
STATE_FILE = "state.json"  # the trainer state's tree; its tensors are in STATE_TENSORS
STATE_TENSORS = "state.safetensors"
META_FILE = "meta.json"  # written last: the step, tied weight names and every other file's size
PICKLE_FILE = "state.pt"  # the trainer state of checkpoints written before this format: never loaded


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message is one line that names the file and what is wrong with it."""


def _step_name(step: int) -> str:
    return f"step_{step:06d}"


def _step_of(name: str) -> int | None:
    match = re.fullmatch(r"step_(\d+)", name)
    return int(match.group(1)) if match else None


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


# ------------------------------------------------------------------------------------------- state <-> JSON + tensors


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def encode_state(state: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """STATE as a JSON-able tree plus the tensors it refers to by name (the path of keys that leads to each).

    Tuples, dicts with keys JSON cannot keep (ints, names starting with "__") and NumPy arrays are tagged so that
    `decode_state` gives back the same types; anything else (an object, a function) is refused, not stored.
    """
    tensors: dict[str, torch.Tensor] = {}

    def store(value: torch.Tensor, path: str) -> str:
        name = path or "state"
        while name in tensors:  # only when keys themselves hold dots
            name += "'"
        tensors[name] = value
        return name

    def encode(value: Any, path: str) -> Any:
        if value is None or isinstance(value, bool | int | float | str):
            return value
        if isinstance(value, torch.Tensor):
            return {"__tensor__": store(value, path)}
        if isinstance(value, np.ndarray):
            return {"__ndarray__": store(torch.from_numpy(np.ascontiguousarray(value)), path)}
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, list | tuple):
            items = [encode(item, _join(path, i)) for i, item in enumerate(value)]
            return items if isinstance(value, list) else {"__tuple__": items}
        if isinstance(value, dict):
            if all(isinstance(key, str) and not key.startswith("__") for key in value):
                return {key: encode(item, _join(path, key)) for key, item in value.items()}
            return {"__items__": [[encode(key, path), encode(item, _join(path, key))] for key, item in value.items()]}
        raise TypeError(f"a checkpoint cannot hold a {type(value).__name__} (at {path or 'the top level'})")

    return encode(state, ""), tensors


def decode_state(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The state `encode_state` was given: data only, nothing in it names code to run."""

    def decode(node: Any) -> Any:
        if isinstance(node, list):
            return [decode(item) for item in node]
        if not isinstance(node, dict):
            return node
        if "__tensor__" in node:
            return tensors[node["__tensor__"]]
        if "__ndarray__" in node:
            return tensors[node["__ndarray__"]].numpy()
        if "__tuple__" in node:
            return tuple(decode(item) for item in node["__tuple__"])
        if "__items__" in node:
            return {decode(key): decode(item) for key, item in node["__items__"]}
        return {key: decode(item) for key, item in node.items()}

    return decode(tree)


def _tensor_refs(node: Any) -> Iterable[str]:
    if isinstance(node, list):
        for item in node:
            yield from _tensor_refs(item)
    elif isinstance(node, dict):
        for tag in ("__tensor__", "__ndarray__"):
            if tag in node:
                yield node[tag]
                return
        for item in node.values():
            yield from _tensor_refs(item)


# ------------------------------------------------------------------------------------------------------- save


def save_checkpoint(
    ckpt_root: Path, step: int, model_state: dict[str, torch.Tensor], trainer_state: dict[str, Any], keep: int
) -> Path:
    """Write checkpoints/step_XXXXXX/{model.safetensors, state.safetensors, state.json, meta.json}, point `latest`
    at it, rotate old ones. A write that fails (a full disk) removes its partial copy and leaves `latest` as it was."""
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / _step_name(step)
    tmp = ckpt_root / f".tmp-{final.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    with _building(tmp, final):
        tmp.mkdir()
        _write_files(tmp, step, model_state, trainer_state)
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


def _write_files(folder: Path, step: int, model_state: dict[str, torch.Tensor], trainer_state: Any) -> None:
    weights, tied = _untie(model_state)
    save_file(weights, str(folder / MODEL_FILE))
    tree, tensors = encode_state(trainer_state)
    state_tensors, state_tied = _untie(tensors)
    save_file(state_tensors, str(folder / STATE_TENSORS))
    (folder / STATE_FILE).write_text(json.dumps({"tree": tree, "tied": state_tied}) + "\n")
    files = {name: (folder / name).stat().st_size for name in (MODEL_FILE, STATE_TENSORS, STATE_FILE)}
    (folder / META_FILE).write_text(json.dumps({"step": step, "tied": tied, "files": files}) + "\n")


@contextmanager
def _building(tmp: Path, final: Path) -> Iterator[None]:
    """Around writing TMP, the folder that becomes FINAL: if that fails, TMP goes (on a full disk, its space comes
    back; what `latest` names is untouched) and an OS error is a `WriteError` naming FINAL."""
    try:
        yield
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError | SafetensorError):
            raise WriteError(*_os_error(err), str(final)) from err
        raise


def _os_error(err: Exception) -> tuple[int | None, str]:
    """errno and the OS's words for a failed write; safetensors puts them in its message as
    `I/O error: No space left on device (os error 28)`."""
    if isinstance(err, OSError):
        return err.errno, err.strerror or str(err)
    match = re.search(r"error: (.+) \(os error (\d+)\)", str(err))
    return (int(match.group(2)), match.group(1)) if match else (None, str(err).strip().splitlines()[0])


def _rotate(ckpt_root: Path, keep: int) -> None:
    steps = sorted(p for p in ckpt_root.glob("step_*") if p.is_dir())
    latest = (ckpt_root / LATEST).read_text().strip()
    for old in steps[: max(0, len(steps) - keep)]:
        if old.name != latest:
            shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------------------------------------------- find and load


def checkpoint_problem(path: Path, required: Iterable[str] = ()) -> str | None:
    """Why PATH cannot be resumed from, in one line that names the file; None when it is complete.

    Cheap (nothing is loaded): file sizes against meta.json, the safetensors headers, and the state tree with its
    REQUIRED top-level entries and the tensors it refers to.
    """
    if (path / PICKLE_FILE).exists() and not (path / STATE_FILE).exists():
        return (
            f"{path / PICKLE_FILE} is a pickle (serl's old format), which serl does not load: unpickling can run code"
        )
    try:
        meta = _read_json(path / META_FILE)
        sizes = meta.get("files") if isinstance(meta, dict) else None
        if not isinstance(sizes, dict):
            return f"{path / META_FILE} lists no files: not a checkpoint this serl wrote"
        for name, size in sizes.items():
            if not (path / name).is_file():
                return f"{path / name} is missing"
            actual = (path / name).stat().st_size
            if actual != size:
                how = "truncated" if actual < size else "longer than written"
                return f"{path / name} is {how}: {actual} of {size} bytes"
        _safetensors_keys(path / MODEL_FILE)
        stored = _safetensors_keys(path / STATE_TENSORS)
        state = _read_json(path / STATE_FILE)
    except CheckpointError as err:
        return str(err)
    tree = state.get("tree") if isinstance(state, dict) else None
    for key in required:
        if not isinstance(tree, dict) or key not in tree:
            return f"{path / STATE_FILE} has no {key!r} entry"
    absent = sorted(set(_tensor_refs(tree)) - stored - set(state.get("tied", {})))
    if absent:
        return f"{path / STATE_TENSORS} has no tensor {absent[0]!r}, which {STATE_FILE} refers to"
    return None


def _safetensors_keys(path: Path) -> set[str]:
    try:
        with safe_open(str(path), "pt") as handle:
            return set(handle.keys())
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file ({_os_error(err)[1]})") from None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing: the checkpoint was not finished") from None
    except OSError as err:
        raise CheckpointError(f"{path} cannot be read ({err.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"{path} is not valid JSON (truncated?)") from None


def find_resumable(
    ckpt_root: Path, required: Iterable[str] = (), warn: Callable[[str], None] | None = None
) -> Path | None:
    """The checkpoint to resume from: the one `latest` names, else the newest complete earlier one, saying through
    WARN which ones were passed over and why. None when CKPT_ROOT holds no checkpoint at all; CheckpointError when it
    holds some but none is complete, so a run is never started over silently."""
    required = tuple(required)
    problems: list[str] = []
    pointer = ckpt_root / LATEST
    latest = pointer.read_text(errors="replace").strip() if pointer.is_file() else None
    if latest is not None and _step_of(latest) is None:
        problems.append(f"{pointer} names {latest[:80]!r}, not a checkpoint")
        latest = None
    candidates: list[Path] = []
    if latest is not None:
        # a kill while that step was being replaced leaves its complete copy moved aside
        named = [path for path in (ckpt_root / latest, ckpt_root / f".old-{latest}") if path.is_dir()]
        if not named:
            problems.append(f"{pointer} names {latest}, which does not exist")
        candidates += named
    below = _step_of(latest) if latest is not None else None
    steps = sorted((p for p in ckpt_root.glob("step_*") if p.is_dir() and _step_of(p.name) is not None), reverse=True)
    candidates += [p for p in steps if below is None or _step_of(p.name) < below]  # type: ignore[operator]
    for path in candidates:
        problem = checkpoint_problem(path, required)
        if problem is None:
            if problems and warn is not None:
                warn(f"{'; '.join(problems)}; resuming from {path.name}, the newest complete checkpoint")
            return path
        problems.append(problem)
    if not problems:
        return None
    exports = sorted(ckpt_root.glob("iter_*_hf"))
    advice = (
        f"continue from the HF export with serl train --set model.policy={exports[-1]}"
        if exports
        else "start a new run (another --run-dir)"
    )
    raise CheckpointError(f"no complete checkpoint to resume from in {ckpt_root}: {'; '.join(problems)}; {advice}")


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The full model state dict (tied names included, as one tensor) and the trainer state."""
    problem = checkpoint_problem(path)
    if problem is not None:
        raise CheckpointError(problem)
    model_state = load_file(str(path / MODEL_FILE))
    for alias, name in _read_json(path / META_FILE).get("tied", {}).items():
        model_state[alias] = model_state[name]
    state = _read_json(path / STATE_FILE)
    tensors = load_file(str(path / STATE_TENSORS))
    for alias, name in state.get("tied", {}).items():
        tensors[alias] = tensors[name]
    try:
        return model_state, decode_state(state["tree"], tensors)
    except (KeyError, TypeError, ValueError) as err:  # a tree that names a tensor the file lacks, or a bad tag
        raise CheckpointError(f"{path / STATE_FILE} is malformed ({type(err).__name__}: {err})") from None


def export_hf(model: torch.nn.Module, tokenizer: Any, target: Path) -> Path:
    """Save an HF checkpoint (safetensors + tokenizer) atomically; LoRA adapters are merged into a copy first."""
    tmp = target.parent / f".tmp-{target.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    to_save = model
    if hasattr(model, "merge_and_unload"):  # peft model: export merged weights, keep the adapter in training
        import copy

        to_save = copy.deepcopy(model).merge_and_unload()
    with _building(tmp, target):
        to_save.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        flush_and_uncache(tmp)
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)
    return target
