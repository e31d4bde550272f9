"""serl.rollout sampling and stop strings: pure functions with hand-computed expectations."""

from __future__ import annotations

import math

import pytest
import torch

from serl.rollout.sampling import apply_presence_penalty, mask_top_k_top_p, sample_next_tokens, token_logprobs
from serl.rollout.stopping import StopChecker, cut_at_stop, find_stop

NEG_INF = float("-inf")


def test_presence_penalty_subtracts_once_per_generated_token_like_vllm():
    logits = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.5, 0.5, 0.5, 0.5]])
    generated = torch.tensor([[True, False, True, False], [False, False, False, True]])
    out = apply_presence_penalty(logits, generated, 2.0)
    # vLLM: logits -= presence_penalty * (output_token_count > 0); counts do not matter, the prompt does not count
    assert out.tolist() == [[-1.0, 2.0, 1.0, 4.0], [0.5, 0.5, 0.5, -1.5]]
    assert apply_presence_penalty(logits, generated, 0.0) is logits
    # a negative penalty rewards repetition, as in vLLM
    assert apply_presence_penalty(logits, generated, -1.0)[0].tolist() == [2.0, 2.0, 4.0, 4.0]


def test_top_k_keeps_the_k_largest():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]])
    assert mask_top_k_top_p(logits, 2, 1.0).tolist() == [[NEG_INF, 3.0, NEG_INF, 2.0]]
    assert mask_top_k_top_p(logits, -1, 1.0) is logits
    assert mask_top_k_top_p(logits, 4, 1.0) is logits  # k >= vocab disables


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    # cumulative mass before each token: 0, .5, .8, .95 -> p = .8 keeps the first two (0.5 + 0.3 reaches 0.8)
    kept = mask_top_k_top_p(logits, -1, 0.79).isfinite().tolist()
    assert kept == [[True, True, False, False]]
    assert mask_top_k_top_p(logits, -1, 0.81).isfinite().tolist() == [[True, True, True, False]]
    assert mask_top_k_top_p(logits, -1, 1e-9).isfinite().tolist() == [[True, False, False, False]]  # top token stays
    # top-k then top-p over the survivors: k=3 renormalises to .526/.316/.158, so p=.5 keeps only the first
    assert mask_top_k_top_p(logits, 3, 0.5).isfinite().tolist() == [[True, False, False, False]]


def test_greedy_below_eps_and_sampling_follows_probabilities():
    logits = torch.tensor([[0.0, 5.0, 1.0], [2.0, 0.0, 0.0]])
    assert sample_next_tokens(logits, temperature=0.0).tolist() == [1, 0]
    generator = torch.Generator().manual_seed(0)
    probs = torch.tensor([0.7, 0.2, 0.1])
    draws = sample_next_tokens(probs.log().expand(20000, 3), temperature=1.0, generator=generator)
    frequencies = torch.bincount(draws, minlength=3).float() / 20000
    assert torch.allclose(frequencies, probs, atol=0.015)
    # temperature sharpens: at T=0.1 the 0.7 token wins almost always (p ~ 1 - (2/7)^10)
    sharp = sample_next_tokens(probs.log().expand(2000, 3), temperature=0.1, generator=generator)
    assert (sharp == 0).float().mean() > 0.99


def test_same_generator_seed_same_draws():
    logits = torch.randn(8, 50)
    a = sample_next_tokens(logits, temperature=1.0, top_p=0.9, generator=torch.Generator().manual_seed(3))
    b = sample_next_tokens(logits, temperature=1.0, top_p=0.9, generator=torch.Generator().manual_seed(3))
    assert a.tolist() == b.tolist()


def test_token_logprobs_use_temperature_scaled_raw_logits():
    logits = torch.tensor([[0.0, math.log(3.0)]])  # probs 1/4, 3/4 at T=1
    assert token_logprobs(logits, torch.tensor([1]), 1.0).item() == pytest.approx(math.log(0.75))
    # T=0.5 squares the odds: 1/10, 9/10; greedy reports T=1 log-probs
    assert token_logprobs(logits, torch.tensor([1]), 0.5).item() == pytest.approx(math.log(0.9))
    assert token_logprobs(logits, torch.tensor([0]), 0.0).item() == pytest.approx(math.log(0.25))


class CharTokenizer:
    """One character per token id (id = code point); id 0 is a special token that decodes to nothing."""

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids if i != 0 or not skip_special_tokens)


def ids(text: str) -> list[int]:
    return [ord(c) for c in text]


def test_find_stop_picks_the_earliest_of_several():
    assert find_stop("abc</s>def\n\n\n", ["\n\n\n", "</s>"]) == 3
    assert find_stop("abc", ["x", ""]) == -1


def test_cut_at_stop_ends_ids_at_the_completing_token_and_text_before_the_stop():
    tokenizer = CharTokenizer()
    kept, text, found = cut_at_stop(tokenizer, ids("12 is it.\n\nMore text\n\n"), ["\n\n"])
    assert found and text == "12 is it."
    assert kept == ids("12 is it.\n\n")  # the token completing the first "\n\n" is the last one kept
    kept, text, found = cut_at_stop(tokenizer, ids("no stop here"), ["\n\n"])
    assert (kept, text, found) == (ids("no stop here"), "no stop here", False)
    # special tokens inside a stop string's span are skipped by decoding but stay in the ids
    kept, text, found = cut_at_stop(tokenizer, [*ids("ab\n"), 0, *ids("\ncd")], ["\n\n"])
    assert found and text == "ab" and kept == [*ids("ab\n"), 0, ord("\n")]


def test_stop_checker_sees_a_stop_in_the_tail_only():
    checker = StopChecker(CharTokenizer(), ["STOP"])
    assert not checker.hit(ids("x" * 500 + "STO"))
    assert checker.hit(ids("x" * 500 + "STOP"))
    assert not StopChecker(CharTokenizer(), [])
