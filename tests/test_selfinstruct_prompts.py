"""Few-shot generation prompts: example selection, rendering with the real chat template, the token budget."""

from __future__ import annotations

import json
import random

import pytest

from serl.selfinstruct.prompts import (
    Instruction,
    build_generation_prompt,
    count_tokens,
    generation_params,
    load_instruction,
    normalize_example,
    select_examples,
)

SEEDS = [f"Seed problem number {i}: what is {i} plus {i}?" for i in range(20)]
KEPT = [f"Generated problem {i}: how many apples are left after eating {i}?" for i in range(5)]
INSTRUCTION = Instruction(system="You write math problems.", user="Write more problems:\n")


@pytest.fixture(scope="module")
def tokenizer():
    from serl.models import load_tokenizer

    return load_tokenizer()


def test_packaged_instruction_loads():
    instruction = load_instruction()
    assert instruction.system and instruction.user.endswith("\n")
    assert "not" in instruction.system.lower() or "never" in instruction.system.lower()  # do not solve


def test_prompt_file_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"system": "s",\n "user": }')
    with pytest.raises(ValueError, match=r"bad\.json:2: invalid JSON"):
        load_instruction(bad)
    bad.write_text(json.dumps({"system": "s"}))
    with pytest.raises(ValueError, match='"system" and "user"'):
        load_instruction(bad)
    with pytest.raises(ValueError, match="cannot read"):
        load_instruction(tmp_path / "missing.json")


def test_normalize_example():
    assert normalize_example("  Find\n the   sum:: ") == "Find the sum"
    assert normalize_example("Ratio a:b is 2:3") == "Ratio a:b is 2:3"


def test_selection_takes_at_most_two_kept_and_fills_with_seeds():
    for kept, expected_kept in ((KEPT, 2), (KEPT[:1], 1), ([], 0)):
        examples = select_examples(SEEDS, kept, random.Random(0), num_shots=8, max_generated=2)
        assert len(examples) == 8 and len(set(examples)) == 8
        assert sum(e in kept for e in examples) == expected_kept
        assert sum(e in SEEDS for e in examples) == 8 - expected_kept


def test_selection_uses_only_the_given_rng_and_reproduces_the_reference_draws():
    ours = select_examples(SEEDS, KEPT, random.Random(42), num_shots=8, max_generated=2)
    rng = random.Random(42)  # the reference: sample kept, sample seeds, shuffle
    expected = rng.sample(KEPT, 2) + rng.sample(SEEDS, 6)
    rng.shuffle(expected)
    assert ours == expected
    random.seed(1)
    state = random.getstate()
    select_examples(SEEDS, KEPT, random.Random(3))
    assert random.getstate() == state  # the global generator is untouched


def test_selection_with_few_seeds_and_no_seeds():
    assert sorted(select_examples(SEEDS[:3], [], random.Random(0))) == sorted(SEEDS[:3])
    with pytest.raises(ValueError, match="seed pool is empty"):
        select_examples([], [], random.Random(0))


def test_rendered_with_the_chat_template_ending_with_the_next_number(tokenizer):
    prompt = build_generation_prompt(tokenizer, SEEDS, KEPT, random.Random(0), instruction=INSTRUCTION)
    assert prompt.dropped == 0 and len(prompt.examples) == 8
    head = "<|im_start|>system\nYou write math problems.<|im_end|>\n<|im_start|>user\n"
    assert prompt.text.startswith(head)
    lines = "".join(f"{i}. {normalize_example(e)}\n" for i, e in enumerate(prompt.examples, 1))
    assert prompt.text.endswith(f"Write more problems:\n{lines}9.<|im_end|>\n<|im_start|>assistant\n")
    assert prompt.num_tokens == count_tokens(tokenizer, prompt.text)


def test_without_tokenizer_the_reference_fallback():
    prompt = build_generation_prompt(None, SEEDS, [], random.Random(0), num_shots=2, instruction=INSTRUCTION)
    a, b = prompt.examples
    assert prompt.text == f"You write math problems.\nWrite more problems:\n1. {a}\n2. {b}\n3."
    assert prompt.num_tokens is None


def test_over_budget_drops_whole_examples_longest_first(tokenizer):
    long_seed = "Consider the following long problem. " + " ".join(f"term{i}" for i in range(300))
    seeds = [*SEEDS[:7], long_seed]
    full = build_generation_prompt(tokenizer, seeds, [], random.Random(0), prompt_max_tokens=None)
    assert full.num_tokens > 600 and long_seed in full.examples
    fitted = build_generation_prompt(tokenizer, seeds, [], random.Random(0), prompt_max_tokens=400)
    assert fitted.num_tokens <= 400
    assert fitted.dropped == 1 and long_seed not in fitted.examples  # only the huge one had to go
    assert fitted.examples == [e for e in full.examples if e != long_seed]
    n, last = len(fitted.examples), normalize_example(fitted.examples[-1])
    assert fitted.text.endswith(f"{n}. {last}\n{n + 1}.<|im_end|>\n<|im_start|>assistant\n")
    for example in fitted.examples:  # every example shown in full
        assert f". {normalize_example(example)}\n" in fitted.text


def test_tight_budget_keeps_dropping_and_fails_clearly(tokenizer):
    build = build_generation_prompt
    base = build(tokenizer, SEEDS, [], random.Random(5), num_shots=1, instruction=INSTRUCTION)
    budget = base.num_tokens + 30  # room for the instruction and about one more short example
    fitted = build(tokenizer, SEEDS, [], random.Random(5), prompt_max_tokens=budget, instruction=INSTRUCTION)
    assert fitted.num_tokens <= budget and 1 <= len(fitted.examples) < 8
    with pytest.raises(ValueError, match="over the budget of 10"):
        build(tokenizer, SEEDS, [], random.Random(5), prompt_max_tokens=10, instruction=INSTRUCTION)


def test_generation_sampling_defaults():
    params = generation_params(max_new_tokens=256, seed=3)
    assert (params.temperature, params.top_p, params.presence_penalty) == (0.8, 0.95, 2.0)
    assert params.max_new_tokens == 256 and params.seed == 3 and params.stop == ()


def test_examples_in_the_assistant_turn_open_the_reply_and_the_response_continues_them(tokenizer):
    prompt = build_generation_prompt(
        tokenizer, SEEDS, KEPT, random.Random(0), instruction=INSTRUCTION, examples_turn="assistant"
    )
    lines = "".join(f"{i}. {normalize_example(e)}\n" for i, e in enumerate(prompt.examples, 1))
    assert prompt.text == (
        "<|im_start|>system\nYou write math problems.<|im_end|>\n<|im_start|>user\nWrite more problems:<|im_end|>\n"
        f"<|im_start|>assistant\n{lines}9."
    )
    assert prompt.continues == "9."
    user_turn = build_generation_prompt(tokenizer, SEEDS, KEPT, random.Random(0), instruction=INSTRUCTION)
    assert user_turn.continues == "" and user_turn.examples == prompt.examples


def test_examples_in_the_assistant_turn_without_a_template_and_over_budget(tokenizer):
    prompt = build_generation_prompt(
        None, SEEDS, [], random.Random(0), num_shots=2, instruction=INSTRUCTION, examples_turn="assistant"
    )
    a, b = prompt.examples
    assert prompt.text == f"You write math problems.\nWrite more problems:\n1. {a}\n2. {b}\n3."
    long_seed = "Consider the following long problem. " + " ".join(f"term{i}" for i in range(300))
    fitted = build_generation_prompt(
        tokenizer, [*SEEDS[:7], long_seed], [], random.Random(0), prompt_max_tokens=400, examples_turn="assistant"
    )
    assert fitted.dropped == 1 and fitted.continues == "8." and fitted.text.endswith("\n8.")
    cut = build_generation_prompt(
        tokenizer,
        SEEDS,
        [],
        random.Random(0),
        prompt_max_tokens=60,
        overflow="truncate",
        examples_turn="assistant",
    )
    assert len(cut.engine_input) == 60 and cut.continues == ""  # the tail with "9." is gone
    with pytest.raises(ValueError, match="examples_turn"):
        build_generation_prompt(None, SEEDS, [], random.Random(0), examples_turn="system")
