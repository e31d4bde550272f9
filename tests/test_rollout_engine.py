"""Rollout engines on the embedded model: the same behavioural tests for every engine that can run here.

The vLLM variant needs vllm and a CUDA device and is skipped (with the reason) otherwise.
"""

from __future__ import annotations

import copy
import importlib.util

import pytest
import torch

from serl.models import load_policy
from serl.rollout import SamplingParams, make_engine
from serl.rollout.decoders import split_by_length
from serl.rollout.formats import encode_prompt

pytestmark = pytest.mark.slow

PROMPTS = [
    "Count with me: 1, 2, 3,",  # short
    "Write a short story about a robot who learns to paint. Once upon a time",  # long: length buckets differ
    "What is 2+3?",  # this raw prompt makes the model answer with an immediate EOS
]
SHORT = 12  # new tokens per test: enough to exercise every path, cheap on 2 cores


def vllm_skip_reason() -> str | None:
    if importlib.util.find_spec("vllm") is None:
        return "vllm is not installed"
    if not torch.cuda.is_available():
        return "vllm needs a CUDA device"
    return None


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    # The CI/dev box has 2 cores shared by several jobs; two OpenMP threads there run ~10x slower than one.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def policy():
    model, tokenizer = load_policy()
    model.eval()
    return model, tokenizer


@pytest.fixture(scope="session", params=["hf", pytest.param("vllm", marks=pytest.mark.gpu)])
def engine(request, policy):
    model, tokenizer = policy
    if request.param == "vllm" and (reason := vllm_skip_reason()):
        pytest.skip(reason)
    # A private copy: test_update_weights perturbs the engine's weights.
    engine = make_engine(request.param, copy.deepcopy(model), tokenizer)
    yield engine
    engine.sleep()


def greedy(max_new_tokens: int = SHORT, **kwargs) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens, **kwargs)


def sampled(seed: int | None, **kwargs) -> SamplingParams:
    return SamplingParams(temperature=1.0, max_new_tokens=SHORT, seed=seed, **kwargs)


def test_prompts_of_very_different_lengths_in_one_batch_decode_as_alone(engine, policy):
    """A 300-token prompt beside short ones: the HF engine gives them separate KV-cache segments
    (`decoders.split_by_length`); every greedy completion must still equal that prompt decoded alone."""
    model, tokenizer = policy
    long_prompt = " ".join(["The quick brown fox jumps over the lazy dog."] * 30) + " Repeat the last word:"
    prompts = [PROMPTS[0], long_prompt, PROMPTS[1]]
    lengths = [len(encode_prompt(tokenizer, p)) for p in prompts]
    assert split_by_length(sorted(lengths), [2, 2, 2], reserve=SHORT) != [(0, 3)]  # the batch is really split
    completions = engine.generate(prompts, greedy(), n=2)
    for index, prompt in enumerate(prompts):
        ids = torch.tensor([encode_prompt(tokenizer, prompt)])
        with torch.inference_mode():
            reference = model.generate(ids, do_sample=False, max_new_tokens=SHORT, attention_mask=torch.ones_like(ids))
        for completion in completions[2 * index : 2 * index + 2]:
            assert completion.response_ids == reference[0, ids.shape[1] :].tolist(), prompt[:40]


def test_greedy_matches_hf_generate_on_each_prompt_alone(engine, policy):
    model, tokenizer = policy
    completions = engine.generate(PROMPTS, greedy())
    for prompt, completion in zip(PROMPTS, completions, strict=True):
        ids = torch.tensor([encode_prompt(tokenizer, prompt)])
        with torch.inference_mode():
            reference = model.generate(ids, do_sample=False, max_new_tokens=SHORT, attention_mask=torch.ones_like(ids))
        assert completion.prompt_ids == ids[0].tolist()
        assert completion.response_ids == reference[0, ids.shape[1] :].tolist()


def test_same_seed_same_output_other_seed_other_output(engine):
    first = engine.generate(PROMPTS[:2], sampled(seed=7), n=2)
    again = engine.generate(PROMPTS[:2], sampled(seed=7), n=2)
    other = engine.generate(PROMPTS[:2], sampled(seed=8), n=2)
    assert [c.response_ids for c in first] == [c.response_ids for c in again]
    assert [c.response_ids for c in first] != [c.response_ids for c in other]


def test_n_samples_are_contiguous_in_prompt_order(engine, policy):
    _, tokenizer = policy
    n = 3
    completions = engine.generate(PROMPTS, greedy(), n=n)
    assert len(completions) == len(PROMPTS) * n
    assert [(c.prompt_index, c.sample_index) for c in completions] == [(p, s) for p in range(3) for s in range(n)]
    alone = engine.generate(PROMPTS, greedy())
    for k, completion in enumerate(completions):
        assert completion.prompt_ids == encode_prompt(tokenizer, PROMPTS[k // n])
        assert completion.response_ids == alone[k // n].response_ids  # greedy: every sample is the prompt's answer


def test_finish_reasons_eos_and_length(engine, policy):
    _, tokenizer = policy
    long, eos = engine.generate([PROMPTS[1], PROMPTS[2]], greedy(max_new_tokens=5))
    assert long.finish_reason == "length" and len(long.response_ids) == 5
    assert eos.finish_reason == "eos" and eos.response_ids[-1] == tokenizer.eos_token_id
    assert tokenizer.eos_token not in eos.text  # special tokens are skipped in the text


def test_stop_string_cuts_text_and_ids_consistently(engine, policy):
    _, tokenizer = policy
    (full,) = engine.generate([PROMPTS[0]], greedy())
    assert full.finish_reason == "length" and len(full.text) > 6
    stop = full.text[4:6]  # a stop string that first completes in the middle of the response
    cut_at = full.text.index(stop)
    (cut,) = engine.generate([PROMPTS[0]], greedy(stop=("no such stop", stop)))
    assert cut.finish_reason == "stop"
    assert cut.text == full.text[:cut_at]
    assert cut.response_ids == full.response_ids[: len(cut.response_ids)]
    assert stop in tokenizer.decode(cut.response_ids, skip_special_tokens=True)
    assert stop not in tokenizer.decode(cut.response_ids[:-1], skip_special_tokens=True)


def test_logprobs_match_a_forward_pass_over_the_response(engine, policy):
    model, _ = policy
    (completion,) = engine.generate([PROMPTS[0]], sampled(seed=1, logprobs=True))
    sequence = torch.tensor([completion.prompt_ids + completion.response_ids])
    with torch.inference_mode():
        logits = model(sequence).logits[0, len(completion.prompt_ids) - 1 : -1].float()
    expected = logits.log_softmax(-1).gather(-1, torch.tensor(completion.response_ids)[:, None])[:, 0]
    assert completion.logprobs is not None and len(completion.logprobs) == len(completion.response_ids)
    assert torch.allclose(torch.tensor(completion.logprobs), expected, atol=2e-3)


def test_presence_penalty_forbids_repeats_when_huge(engine):
    (plain,) = engine.generate([PROMPTS[0]], greedy())
    assert len(set(plain.response_ids)) < len(plain.response_ids)  # this continuation repeats ", "
    (penalized,) = engine.generate([PROMPTS[0]], greedy(presence_penalty=1000.0))
    assert len(set(penalized.response_ids)) == len(penalized.response_ids)
    assert penalized.response_ids[0] == plain.response_ids[0]  # nothing generated yet: the prompt does not count


def test_token_id_prompts_are_used_as_given(engine, policy):
    _, tokenizer = policy
    ids = [tokenizer.bos_token_id, *encode_prompt(tokenizer, PROMPTS[0])]
    (completion,) = engine.generate([ids], greedy(max_new_tokens=3))
    assert completion.prompt_ids == ids


def test_update_weights_changes_outputs_and_restores(engine, policy):
    model, _ = policy
    before = engine.generate(PROMPTS[:2], greedy())
    perturbed = {k: v.clone() for k, v in model.state_dict().items()}
    perturbed["model.norm.weight"] = perturbed["model.norm.weight"] * -1.0
    engine.update_weights(perturbed)
    after = engine.generate(PROMPTS[:2], greedy())
    assert [c.response_ids for c in after] != [c.response_ids for c in before]
    engine.update_weights(model)  # a module: its weights are copied in
    restored = engine.generate(PROMPTS[:2], greedy())
    assert [c.response_ids for c in restored] == [c.response_ids for c in before]


def test_bad_input_fails_with_a_clear_message(engine):
    with pytest.raises(ValueError, match="empty after tokenization"):
        engine.generate(["ok", ""], greedy())
    with pytest.raises(ValueError, match="n must be"):
        engine.generate(["ok"], greedy(), n=0)
    assert engine.generate([], greedy()) == []


def test_dynamic_cache_decoder_agrees_with_the_static_one(policy):
    model, tokenizer = policy
    static = make_engine("hf", model, tokenizer, kv_cache="static")
    dynamic = make_engine("hf", model, tokenizer, kv_cache="dynamic")
    params = SamplingParams(temperature=1.0, max_new_tokens=SHORT, seed=5, presence_penalty=1.0, logprobs=True)
    a, b = static.generate(PROMPTS, params, n=2), dynamic.generate(PROMPTS, params, n=2)
    assert [c.response_ids for c in a] == [c.response_ids for c in b]
    assert [c.finish_reason for c in a] == [c.finish_reason for c in b]
    logprobs_a = torch.tensor([lp for c in a for lp in c.logprobs])
    logprobs_b = torch.tensor([lp for c in b for lp in c.logprobs])
    assert torch.allclose(logprobs_a, logprobs_b, atol=1e-3)


def test_bf16_engine_is_seeded_and_update_weights_refreshes_its_copy(policy):
    model, tokenizer = policy
    trained = copy.deepcopy(model)  # stands for the trainer's fp32 policy, updated in place between rollouts
    engine = make_engine("hf", trained, tokenizer, dtype="bfloat16")
    assert next(engine.runner.parameters()).dtype == torch.bfloat16
    assert next(trained.parameters()).dtype == torch.float32  # the trainer's model is not converted
    first = engine.generate(PROMPTS[:2], sampled(seed=7), n=2)
    again = engine.generate(PROMPTS[:2], sampled(seed=7), n=2)
    other = engine.generate(PROMPTS[:2], sampled(seed=8), n=2)
    assert [c.response_ids for c in first] == [c.response_ids for c in again]
    assert [c.response_ids for c in first] != [c.response_ids for c in other]

    before = [c.response_ids for c in engine.generate(PROMPTS[:2], greedy())]
    with torch.no_grad():
        trained.model.norm.weight.mul_(-1.0)
    stale = [c.response_ids for c in engine.generate(PROMPTS[:2], greedy())]
    assert stale == before  # the bf16 copy only changes when synced
    engine.update_weights(trained)  # the engine's own model object: its converted copy is refreshed
    assert torch.equal(engine.runner.model.norm.weight, trained.model.norm.weight.to(torch.bfloat16))
    after = [c.response_ids for c in engine.generate(PROMPTS[:2], greedy())]
    assert after != before
