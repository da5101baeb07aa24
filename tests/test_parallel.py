"""train.strategy: DDP and FSDP2 (fully_shard) on two gloo CPU processes against hand-written gradient averaging,
gradient accumulation with `no_sync`, and the full-parameter iterator the sampler's weight sync reads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from transformers import Qwen2Config, Qwen2ForCausalLM

from rlx.config import ConfigError
from rlx.models.full_params import iter_full_parameters
from rlx.train.infra import distributed as dist
from rlx.train.infra import parallel
from tests.test_distributed import free_port

CONFIG = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True)


def fresh_model() -> Qwen2ForCausalLM:
    torch.manual_seed(0)  # same weights on every rank and in the test process
    return Qwen2ForCausalLM(Qwen2Config(**CONFIG))


def micro_batches(rank: int) -> list[torch.Tensor]:
    """Two micro-batches of token ids [2, 8] per rank, different on each rank."""
    generator = torch.Generator().manual_seed(100 + rank)
    return [torch.randint(0, CONFIG["vocab_size"], (2, 8), generator=generator) for _ in range(2)]


def train_one_step(model: torch.nn.Module, trained: torch.nn.Module, rank: int, manual: bool) -> None:
    """Gradient accumulation over 2 micro-batches, mean over ranks, clip, one AdamW step."""
    optimizer = torch.optim.AdamW(trained.parameters(), lr=1e-2)
    batches = micro_batches(rank)
    for i, ids in enumerate(batches):
        with parallel.no_sync(model, is_last_micro_batch=i == len(batches) - 1):
            (model(input_ids=ids, labels=ids).loss / len(batches)).backward()
    if manual:  # what rlx did before DDP: one flat all-reduce of every gradient, divided by the world size
        params = list(trained.parameters())
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        torch.distributed.all_reduce(flat)
        flat /= dist.world_size()
        for p, g in zip(params, flat.split([p.numel() for p in params])):
            p.grad = g.view_as(p)
    torch.nn.utils.clip_grad_norm_(trained.parameters(), 1.0)
    optimizer.step()


def full_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: t.clone() for name, t in iter_full_parameters(model)}


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    torch.set_num_threads(1)
    dist.init()
    manual = fresh_model()
    train_one_step(manual, manual, rank, manual=True)
    plain = fresh_model()
    ddp = parallel.wrap(plain, "ddp")
    train_one_step(ddp, plain, rank, manual=False)
    first_sent = next(iter_full_parameters(ddp))[1]
    results = {"manual": full_weights(manual), "ddp": full_weights(ddp), "ddp_is_wrapper": ddp is not plain,
               "ddp_shares": first_sent.data_ptr() == plain.model.embed_tokens.weight.data_ptr()}
    for offload in (False, True):
        sharded = parallel.wrap(fresh_model(), "fsdp", cpu_offload=offload)
        results[f"fsdp_initial_{offload}"] = full_weights(sharded)  # before training: must be the exact init
        results[f"fsdp_local_{offload}"] = sharded.model.embed_tokens.weight.to_local().shape[0]
        train_one_step(sharded, sharded, rank, manual=False)
        results[f"fsdp_{offload}"] = full_weights(sharded)
    for sampler, lora in (("hf", 0), ("vllm", 4)):
        try:
            parallel.check_strategy("fsdp", sampler, lora)
        except ConfigError as err:
            results[f"check_{sampler}"] = str(err)
    parallel.check_strategy("fsdp", "vllm", 0)  # what FSDP2 serves under torchrun
    parallel.check_strategy("ddp", "hf", 4)
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    dist.close()


@pytest.fixture(scope="module")
def two_rank_results(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("parallel")
    mp.start_processes(_worker, args=(free_port(), str(out)), nprocs=2, start_method="spawn")
    return [torch.load(out / f"rank{r}.pt") for r in range(2)]


def assert_equal_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_ddp_equals_manual_gradient_averaging_bit_for_bit(two_rank_results):
    ranks = two_rank_results
    assert ranks[0]["ddp_is_wrapper"] and ranks[0]["ddp_shares"]  # DDP's weights are sent without a copy
    assert_equal_weights(ranks[0]["ddp"], ranks[1]["ddp"])  # identical replicas
    assert_equal_weights(ranks[0]["ddp"], ranks[0]["manual"])  # same loss -> same gradient mean -> same step
    assert_equal_weights(ranks[1]["ddp"], ranks[1]["manual"])
    initial = full_weights(fresh_model())
    assert not torch.equal(ranks[0]["ddp"]["model.norm.weight"], initial["model.norm.weight"])  # it trained


@pytest.mark.parametrize("offload", [False, True])
def test_fsdp2_matches_ddp_and_gathers_exact_full_weights(two_rank_results, offload):
    ranks = two_rank_results
    initial = full_weights(fresh_model())
    assert set(initial) == {n for n, _ in fresh_model().named_parameters()} | {"lm_head.weight"}
    for res in ranks:
        assert res[f"fsdp_local_{offload}"] == CONFIG["vocab_size"] // 2  # each rank holds half the embedding
        assert_equal_weights(res[f"fsdp_initial_{offload}"], initial)  # the gathered shards are the exact weights
    assert_equal_weights(ranks[0][f"fsdp_{offload}"], ranks[1][f"fsdp_{offload}"])
    for name, tensor in ranks[0]["ddp"].items():  # reduce-scatter vs all-reduce: equal up to float rounding
        torch.testing.assert_close(ranks[0][f"fsdp_{offload}"][name], tensor, rtol=0, atol=1e-6)
    assert torch.equal(ranks[0][f"fsdp_{offload}"]["lm_head.weight"],
                       ranks[0][f"fsdp_{offload}"]["model.embed_tokens.weight"])  # tied head sent explicitly


def test_fsdp_under_torchrun_rejects_the_hf_sampler_and_lora(two_rank_results):
    assert "train.strategy=fsdp under torchrun needs sampler=vllm" in two_rank_results[0]["check_hf"]
    assert "does not support LoRA" in two_rank_results[0]["check_vllm"]


def test_one_process_wrap_is_the_identity_and_rejects_unknown_strategies():
    model = fresh_model()
    assert parallel.wrap(model, "ddp") is model and parallel.wrap(model, "fsdp") is model
    assert len(parallel.decoder_layers(model)) == CONFIG["num_hidden_layers"]
    with pytest.raises(ValueError, match="train.strategy must be one of"):
        parallel.wrap(model, "zero3")
    with parallel.no_sync(model, is_last_micro_batch=False):  # a plain module: nothing to switch off
        pass
