"""A character-level tokenizer for the tiny model, stored in byte-level form.

transformers 5.x loads the tokenizer of a Qwen2 model directory as `Qwen2Tokenizer`, whose byte-level
pre-tokenizer would silently drop spaces and newlines from a plain character vocabulary (it maps raw bytes
to its printable alphabet before the vocabulary lookup, so a literal " " or "\n" entry never matches).
Storing every character as the byte-level alphabet spells it (`Ġ` for space, `Ċ` for newline) with no
merges keeps one token per character and the same ids under every loader (AutoTokenizer, the HF sampler,
vLLM). `tests/test_tiny_model.py` checks the round trip.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from tokenizers.pre_tokenizers import ByteLevel
from transformers import PreTrainedTokenizerFast

PAD, EOS = "<|endoftext|>", "<|im_end|>"
ALPHABET = "0123456789+-*/=?#()., \nabcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _byte_level(text: str) -> str:
    """How the byte-level pre-tokenizer spells `text` (e.g. ' ' -> 'Ġ', '\\n' -> 'Ċ')."""
    return "".join(piece for piece, _ in ByteLevel(add_prefix_space=False, use_regex=False).pre_tokenize_str(text))


def build_char_tokenizer(alphabet: str = ALPHABET) -> PreTrainedTokenizerFast:
    vocab = {PAD: 0, EOS: 1}
    for ch in alphabet:
        vocab.setdefault(_byte_level(ch), len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None, fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([PAD, EOS])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS)
