"""Chunked token log-probs against the naive full log-softmax: values, gradients, entropy and peak memory; sequence
layout; and the model-level path on a small randomly initialised Llama."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from transformers import LlamaForCausalLM

from serl.rl import build_sequences, chunked_token_logprobs, naive_token_logprobs, response_logprobs
from test_rl_trainer import single_thread, tiny_llama  # noqa: F401 (single_thread: an autouse fixture)


def test_chunked_logprobs_and_gradients_match_naive():
    torch.manual_seed(0)
    hidden = torch.randn(300, 48, requires_grad=True)  # 300 tokens: not a multiple of the chunk
    weight = torch.randn(1000, 48, requires_grad=True)
    targets = torch.randint(1000, (300,))
    upstream = torch.randn(300)  # a non-uniform gradient, as a real loss gives

    naive = naive_token_logprobs(hidden @ weight.T, targets, temperature=0.7)
    (naive * upstream).sum().backward()
    naive_grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None

    chunked, entropy = chunked_token_logprobs(
        hidden, weight, targets, temperature=0.7, chunk_tokens=64, with_entropy=True
    )
    (chunked * upstream).sum().backward()
    assert torch.allclose(chunked, naive, atol=1e-5)
    assert torch.allclose(hidden.grad, naive_grads[0], atol=1e-5)
    assert torch.allclose(weight.grad, naive_grads[1], atol=1e-5)
    log_p = torch.log_softmax((hidden @ weight.T).detach() / 0.7, dim=-1)
    assert torch.allclose(entropy, -(log_p.exp() * log_p).sum(-1), atol=1e-4)


MEMORY_PROBE = """
import json, os, sys, torch
from serl.rl.logprobs import chunked_token_logprobs, naive_token_logprobs
torch.manual_seed(0)
hidden = torch.randn(2048, 64, requires_grad=True)
weight = torch.randn(32000, 64, requires_grad=True)
targets = torch.randint(32000, (2048,))
def status_kb(field):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))
# VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child of a large pytest would inherit its peak.
with open("/proc/self/clear_refs", "w") as refs:  # "5" resets this process's RSS high-water mark to its RSS now
    refs.write("5")
before_kb = status_kb("VmRSS")
if sys.argv[1] == "naive":
    logprobs = naive_token_logprobs(hidden @ weight.T, targets)
else:
    logprobs, _ = chunked_token_logprobs(hidden, weight, targets, chunk_tokens=128)
logprobs.sum().backward()
print(json.dumps({"peak_mb": (status_kb("VmHWM") - before_kb) / 1024}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_chunked_logprobs_use_less_peak_memory():
    # Each variant in a fresh process: peak RSS minus the RSS just before is what it needed. A fixed mmap threshold
    # makes glibc return every large freed buffer to the OS, so RSS tracks live tensors instead of allocator caches.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
    runs = {
        mode: subprocess.Popen([sys.executable, "-c", MEMORY_PROBE, mode], stdout=subprocess.PIPE, text=True, env=env)
        for mode in ("naive", "chunked")
    }
    peak = {mode: json.loads(proc.communicate(timeout=120)[0])["peak_mb"] for mode, proc in runs.items()}
    # naive holds [2048 × 32000] fp32 logits (250 MiB) plus its log-softmax and their gradients
    assert peak["naive"] > 500, peak
    assert peak["chunked"] < peak["naive"] / 4, peak


def test_build_sequences_layout():
    batch = build_sequences([[5, 6, 7], [8]], [[9, 2], [10, 11, 12]], pad_token_id=2)
    assert batch.input_ids.tolist() == [[5, 6, 7, 9, 2, 2], [2, 2, 8, 10, 11, 12]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1, 0], [0, 0, 1, 1, 1, 1]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 3, 4, 4], [0, 0, 0, 1, 2, 3]]
    # the generated EOS (2) of the first response is an action; its padding is not
    assert batch.action_mask.tolist() == [[True, True, False], [True, True, True]]
    assert batch.prompt_width == 3 and batch.response_width == 3


def test_build_sequences_rejects_bad_input():
    with pytest.raises(ValueError, match="empty prompt"):
        build_sequences([[]], [[1]], pad_token_id=0)
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        build_sequences([[1], [2]], [[3]], pad_token_id=0)


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    return tiny_llama().eval()


def naive_response_logprobs(model, batch, temperature):
    logits = model(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids
    ).logits
    targets = batch.input_ids[:, batch.prompt_width :]
    naive = naive_token_logprobs(logits[:, batch.prompt_width - 1 : -1], targets, temperature=temperature)
    return naive * batch.action_mask


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_response_logprobs_match_the_full_model_logits(model, temperature):
    batch = build_sequences([[5, 6, 7, 8], [9]], [[10, 11], [12, 13, 14, 2]], pad_token_id=2)
    with torch.no_grad():
        got, entropy = response_logprobs(model, batch, temperature=temperature, chunk_tokens=3, with_entropy=True)
        want = naive_response_logprobs(model, batch, temperature)
    assert torch.allclose(got, want, atol=1e-5)
    assert (got[~batch.action_mask] == 0).all() and (entropy[~batch.action_mask] == 0).all()
    assert (entropy[batch.action_mask] > 0).all()


def test_response_logprobs_fallback_for_unusual_heads(model, monkeypatch):
    # a config that announces logit scaling sends the computation through the model's own logits
    monkeypatch.setattr(model.config, "logit_scale", 1.0, raising=False)
    batch = build_sequences([[5, 6], [7]], [[8, 9, 10], [11]], pad_token_id=2)
    with torch.no_grad():
        got, entropy = response_logprobs(model, batch, temperature=0.8, with_entropy=True)
        want = naive_response_logprobs(model, batch, 0.8)
    assert torch.allclose(got, want, atol=1e-5) and entropy.shape == got.shape


def test_response_logprobs_gradient_matches_full_logits(model):
    batch = build_sequences([[5, 6, 7], [8, 9]], [[10, 2], [11, 12, 13]], pad_token_id=2)
    params = [p for p in model.parameters()]
    got, _ = response_logprobs(model, batch, chunk_tokens=2)
    chunked_grads = torch.autograd.grad(got.sum(), params)
    naive_grads = torch.autograd.grad(naive_response_logprobs(model, batch, 1.0).sum(), params)
    for a, b in zip(chunked_grads, naive_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-5)
