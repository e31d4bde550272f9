"""serl.rollout.formats on the embedded tokenizer: raw has no template and no BOS; chat formats use the template."""

from __future__ import annotations

import pytest

from serl.models import load_tokenizer
from serl.rollout.formats import BOXED_INSTRUCTION, PROMPT_FORMATS, encode_prompt, format_prompt

PROBLEM = "What is $1+1$?"


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def test_raw_is_the_problem_text_without_bos(tokenizer):
    text = format_prompt(tokenizer, PROBLEM, "raw")
    assert text == PROBLEM
    ids = encode_prompt(tokenizer, text)
    assert tokenizer.bos_token_id not in ids
    assert ids == tokenizer(PROBLEM, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == PROBLEM


def test_chat_wraps_the_problem_in_the_template(tokenizer):
    text = format_prompt(tokenizer, PROBLEM, "chat")
    expected = tokenizer.apply_chat_template(
        [{"role": "user", "content": PROBLEM}], tokenize=False, add_generation_prompt=True
    )
    assert text == expected
    assert text.startswith("<|im_start|>") and text.endswith("<|im_start|>assistant\n")
    assert BOXED_INSTRUCTION not in text
    ids = encode_prompt(tokenizer, text)
    assert ids.count(tokenizer.convert_tokens_to_ids("<|im_start|>")) == 3  # system, user, assistant; nothing added


def test_chat_boxed_adds_the_boxed_instruction_inside_the_user_turn(tokenizer):
    text = format_prompt(tokenizer, PROBLEM, "chat_boxed")
    assert f"{PROBLEM}\n{BOXED_INSTRUCTION}<|im_end|>" in text
    assert "\\boxed{}" in text


def test_unknown_format_and_templateless_tokenizer_fail_clearly(tokenizer):
    with pytest.raises(ValueError, match="unknown prompt format 'fancy'"):
        format_prompt(tokenizer, PROBLEM, "fancy")

    class NoTemplate:
        chat_template = None

    with pytest.raises(ValueError, match="needs a tokenizer with a chat template"):
        format_prompt(NoTemplate(), PROBLEM, "chat")
    assert set(PROMPT_FORMATS) == {"raw", "chat", "chat_boxed"}
