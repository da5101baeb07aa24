"""Multi-process data parallelism: helpers with one process, collectives with two gloo processes, and a
2-rank `torchrun ... rlx.cli train` run on the real tiny model."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from rlx.algos.base import AdvantageInputs
from rlx.algos.stats import masked_whiten
from rlx.models.load import load_causal_lm
from rlx.train.infra import distributed as dist
from tests.algos.algo_helpers import knot_rows

# This interpreter's torchrun: a `torchrun` script's shebang may name another environment's Python, whose
# workers would import another checkout of rlx.
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def batch_whiten(inputs: AdvantageInputs, cfg) -> torch.Tensor:
    """An advantage function with batch statistics (TRePO/PPO adv_norm=batch), on the terminal rewards."""
    return masked_whiten(inputs.token_rewards, inputs.response_mask)  # [B, T]


def rank_inputs(rank: int) -> AdvantageInputs:
    """Rank 0: 2 rows of width 3; rank 1: 3 rows of width 5 (different B and T on purpose)."""
    rows, width = (2, 3) if rank == 0 else (3, 5)
    generator = torch.Generator().manual_seed(rank)
    mask = torch.ones(rows, width)
    mask[0, -1] = 0.0
    rewards = torch.randn(rows, width, generator=generator) * mask  # [B, T]
    return AdvantageInputs(token_rewards=rewards, response_mask=mask, group_ids=torch.arange(rows) // 2,
                           rows=knot_rows([[1]] * rows, [[[[0.0]]]] * rows))  # each row's tree: one fork at t = 1


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    torch.set_num_threads(1)
    dist.init()
    advantages = dist.global_advantages(batch_whiten, rank_inputs(rank), None)
    metrics = dist.mean_metrics({"reward_mean": float(rank)})
    torch.save({"advantages": advantages, "metrics": metrics,
                "shard": dist.shard(list(range(5)))}, Path(out_dir) / f"rank{rank}.pt")
    dist.close()


def test_helpers_are_no_ops_in_one_process():
    items = list(range(5))
    assert dist.world_size() == 1 and dist.is_main() and dist.shard(items) == items
    inputs = rank_inputs(0)
    torch.testing.assert_close(dist.global_advantages(batch_whiten, inputs, None), batch_whiten(inputs, None))
    assert dist.mean_metrics({"a": 1.0}) == {"a": 1.0}


def test_concat_pads_columns_and_makes_groups_global():
    merged = dist._concat_inputs([rank_inputs(0), rank_inputs(1)])
    assert merged.token_rewards.shape == (5, 5) and merged.response_mask[:2, 3:].sum() == 0
    assert merged.group_ids.tolist() == [0, 0, 1, 1, 3]  # local group g of rank r -> g * 2 + r
    assert [merged.knots(b) for b in range(5)] == [[1]] * 5 and merged.values is None  # the trees travelled


def test_two_gloo_ranks_share_batch_statistics(tmp_path):
    mp.start_processes(_worker, args=(free_port(), str(tmp_path)), nprocs=2, start_method="spawn")
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    full = batch_whiten(dist._concat_inputs([rank_inputs(0), rank_inputs(1)]), None)  # [5, 5] one-process
    torch.testing.assert_close(results[0]["advantages"], full[:2, :3])
    torch.testing.assert_close(results[1]["advantages"], full[2:, :5])
    for res in results:
        assert res["metrics"] == {"reward_mean": 0.5}
    assert [res["shard"] for res in results] == [[0, 2, 4], [1, 3]]
    assert not dist.joined()  # the test process itself never joined (vLLM may own a group here)


def torchrun_cli_train(run_dir: Path, *overrides: str) -> list[str]:
    """`rlx train` on 2 torchrun ranks (one thread each, offline), run from run_dir's parent; it must succeed.
    Returns the ranks' parameter digests."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [*TORCHRUN, "--nproc_per_node=2", f"--master_port={free_port()}", "-m", "rlx.cli", "train", *overrides,
         f"hydra.run.dir={run_dir}"], cwd=run_dir.parent, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return [(run_dir / f"rank_{r}.params.sha256").read_text().strip() for r in range(2)]


def torchrun_train(run_dir: Path, model_dir: Path, *extra: str) -> None:
    """A 2-rank GRPO run of 2 steps with one vLLM engine per rank; its replicas, checkpoint and metrics checked."""
    digests = torchrun_cli_train(
        run_dir, "algo=grpo", "sampler=vllm", "sampler.kv_cache_gib=0.5", f"model.path={model_dir}", "train.steps=2",
        "train.prompts_per_step=4", "algo.samples_per_prompt=4", "train.lr=1e-3", "train.eval_size=8",
        "train.eval_every=1", "train.progress_bar=false", "train.save_every=1", *extra)
    assert set(digests) == {dist.parameter_digest(load_causal_lm(str(run_dir / "checkpoint"), "float32"))}
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 4  # step 0, 1, 2, final


def metric_rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    timing = ("wall_seconds", "wall_train_s", "cpu_train_s")
    return [{k: v for k, v in row.items() if not k.startswith("time_") and k not in timing} for row in rows]


@pytest.mark.slow
def test_torchrun_vllm_per_rank_with_ddp_and_fsdp(tiny_model_dir, tmp_path):
    """One in-process vLLM engine per rank (weights synced after every step, checked by the canary), under DDP and
    under FSDP2: same weights and metrics; an FSDP2 run resumed from its step-1 checkpoint ends identically."""
    ddp, fsdp, resumed = tmp_path / "ddp", tmp_path / "fsdp", tmp_path / "resumed"
    torchrun_train(ddp, tiny_model_dir)
    torchrun_train(fsdp, tiny_model_dir, "train.strategy=fsdp")
    ddp_weights = load_causal_lm(str(ddp / "checkpoint"), "float32").state_dict()
    for name, tensor in load_causal_lm(str(fsdp / "checkpoint"), "float32").state_dict().items():
        torch.testing.assert_close(tensor, ddp_weights[name], rtol=0, atol=1e-6)  # seen: bit for bit
    for row_ddp, row_fsdp in zip(metric_rows(ddp), metric_rows(fsdp), strict=True):
        assert row_fsdp.keys() == row_ddp.keys()
        for key, value in row_ddp.items():  # grad_norm: the norm of DTensor shards rounds differently (1e-7)
            assert row_fsdp[key] == pytest.approx(value, rel=1e-5), key

    resumed.mkdir()
    shutil.copytree(fsdp / "checkpoints" / "step_1", resumed / "checkpoints" / "step_1")
    lines = (fsdp / "metrics.jsonl").read_text().splitlines()[:2]  # what a run killed after step 1 had logged
    (resumed / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))
    torchrun_train(resumed, tiny_model_dir, "train.strategy=fsdp", "resume=auto")
    assert (resumed / "rank_0.params.sha256").read_text() == (fsdp / "rank_0.params.sha256").read_text()
    assert metric_rows(resumed) == metric_rows(fsdp)


@pytest.mark.slow
def test_torchrun_two_ranks_train_identical_replicas(tiny_model_dir, tmp_path):
    """DDP (train.strategy default) with the HF sampler on each rank."""
    run_dir = tmp_path / "run"
    digests = torchrun_cli_train(
        run_dir, "algo=grpo", "sampler=hf", f"model.path={tiny_model_dir}", "train.steps=2", "train.prompts_per_step=4",
        "algo.samples_per_prompt=4", "train.lr=1e-3", "train.eval_size=8", "train.eval_every=1",
        "train.progress_bar=false")
    assert digests[0] == digests[1]
    initial = dist.parameter_digest(load_causal_lm(str(tiny_model_dir), "float32"))
    assert digests[0] != initial  # the replicas trained (identically)
    saved = dist.parameter_digest(load_causal_lm(str(run_dir / "checkpoint"), "float32"))
    assert saved == digests[0]  # rank 0's checkpoint is the replicas' weights
    assert [p.name for p in tmp_path.rglob("metrics.jsonl")] == ["metrics.jsonl"]
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 4  # step 0, 1, 2, final


@pytest.mark.slow
def test_torchrun_ddp_uneven_micro_batches_stay_in_step(tiny_model_dir, tmp_path):
    """3 prompts on 2 ranks with one row per micro-batch (train.micro_batch_tokens=1): rank 0 plans 8 micro-batches,
    rank 1 only 4 and pads 4 zero-loss dummies, so both run as many forwards, backwards (no_sync on all but the
    last) and optimizer steps; with a critic and a KL reference (their frozen passes likewise). No deadlock, and
    the replicas stay identical."""
    run_dir = tmp_path / "run"
    digests = torchrun_cli_train(
        run_dir, "algo=ppo", "sampler=hf", f"model.path={tiny_model_dir}", "train.steps=2", "train.prompts_per_step=3",
        "algo.samples_per_prompt=4", "algo.kl.beta=0.05", "algo.optimization_num=2", "train.micro_batch_tokens=1",
        "train.lr=1e-3", "train.eval_size=4", "train.eval_every=0", "train.progress_bar=false")
    assert digests[0] == digests[1]
    assert digests[0] != dist.parameter_digest(load_causal_lm(str(tiny_model_dir), "float32"))
