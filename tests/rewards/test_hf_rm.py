"""`hf_rm` on a tiny randomly initialised Qwen2ForSequenceClassification with a tokenizer built here."""

from __future__ import annotations

import statistics

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForSequenceClassification

from rlx.data.base import Problem
from rlx.rewards import REWARDS

CORPUS = [
    "what is two plus three",
    "i think the answer is five",
    "so seven and eight and six",
    "the answer is 5",
]


@pytest.fixture(scope="module")
def tiny_rm_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_rm")
    # A byte-level BPE like Qwen2's (AutoTokenizer rebuilds a Qwen2 tokenizer from its vocab and merges).
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<pad>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    core.train_from_iterator(CORPUS, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>")
    tokenizer.save_pretrained(path)
    config = Qwen2Config(
        vocab_size=core.get_vocab_size(),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=128,
        num_labels=1,
        pad_token_id=core.token_to_id("<pad>"),
    )
    torch.manual_seed(0)
    Qwen2ForSequenceClassification(config).save_pretrained(path)
    return str(path)


PROBLEMS = [Problem(id=str(i), question="what is two plus three", answer="5") for i in range(5)]
COMPLETIONS = ["five", "i think the answer is five", "six", "so seven and eight and six", "the answer"]


def test_scores_match_the_model_and_do_not_depend_on_batching(tiny_rm_path):
    batched = REWARDS["hf_rm"](model_path=tiny_rm_path, batch_size=4)
    single = REWARDS["hf_rm"](model_path=tiny_rm_path, batch_size=1)
    scores = batched(PROBLEMS, COMPLETIONS)
    assert len(scores) == 5
    assert scores == pytest.approx(single(PROBLEMS, COMPLETIONS), abs=1e-5)  # padding must not leak in
    assert len({round(s, 6) for s in scores}) == 5  # a random head still tells the texts apart
    encoded = batched.tokenizer("what is two plus three\n\nfive", return_tensors="pt")
    with torch.inference_mode():
        direct = batched.model(**encoded).logits[0, 0].item()
    assert scores[0] == pytest.approx(direct, abs=1e-5)


def test_running_normalisation(tiny_rm_path):
    reward = REWARDS["hf_rm"](model_path=tiny_rm_path, normalize=True, batch_size=8)
    first = reward(PROBLEMS[:3], COMPLETIONS[:3])
    assert statistics.fmean(first) == pytest.approx(0.0, abs=1e-6)
    assert statistics.pstdev(first) == pytest.approx(1.0, abs=1e-4)
    raw_first = list(reward.last_raw_scores)
    second = reward(PROBLEMS[3:], COMPLETIONS[3:])
    seen = raw_first + reward.last_raw_scores
    mean, std = statistics.fmean(seen), statistics.pstdev(seen)
    assert second == pytest.approx([(s - mean) / (std + 1e-6) for s in reward.last_raw_scores], abs=1e-6)


def test_multi_label_head_needs_label_index(tiny_rm_path, tmp_path):
    config = Qwen2Config.from_pretrained(tiny_rm_path)
    config.num_labels = 2
    Qwen2ForSequenceClassification(config).save_pretrained(tmp_path)
    PreTrainedTokenizerFast.from_pretrained(tiny_rm_path).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="set label_index"):
        REWARDS["hf_rm"](model_path=str(tmp_path))
    assert len(REWARDS["hf_rm"](model_path=str(tmp_path), label_index=1)(PROBLEMS[:2], COMPLETIONS[:2])) == 2
