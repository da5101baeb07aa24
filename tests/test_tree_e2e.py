"""Training on every branch end to end: 3-step tree runs through the real CLI on vLLM and HF, exact resume of a
tree run, bad tree settings refused before any model loads, and the loss over a tree's shared prefixes equal to
the loss over the same rows written out unshared (the real tiny model)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlx.algos.base import LossInputs
from rlx.algos.losses import clipped_policy_loss
from rlx.algos.tree_preset import TreeAlgoConfig
from rlx.models.load import load_causal_lm
from rlx.models.logprobs import pack, response_logprobs
from rlx.train.infra.checkpoint import complete_checkpoints
from tests.algos.test_tree import hand_tree
from tests.helpers import resume_matches, run_to_end, signal_when
from tests.test_train_e2e import rlx

TREE = ("algo=tree", "algo.tree.depth=2", "algo.tree.fork_budget=16", "algo.samples_per_prompt=2",
        "algo.num_branch_points=3", "algo.rollouts_per_branch=2")


def tree_cmd(run_dir: Path, model_dir: Path, sampler: str, *extra: str) -> list[str]:
    return ["train", *TREE, f"sampler={sampler}", f"model.path={model_dir}", "train.steps=3",
            "train.prompts_per_step=3", "train.eval_size=8", "train.eval_every=0", "train.progress_bar=false",
            f"hydra.run.dir={run_dir}", *extra]


def step_rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "reward_mean" in r]


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["hf", "vllm"])
def test_three_step_tree_run(sampler, tiny_model_dir, tmp_path):
    run_dir = tmp_path / "run"
    result = rlx(*tree_cmd(run_dir, tiny_model_dir, sampler), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = step_rows(run_dir)
    assert [r["step"] for r in rows] == [1, 2, 3]
    total = 0
    for r in rows:
        # every node is sampled at train.temperature and none is a duplicate: every generated token is trained
        assert r["tokens_trained"] == r["tokens_policy"] + r["tokens_branch"]
        assert r["num_branch_rollouts"] <= 3 * 16  # the fork budget, per prompt (12 on the first level)
        assert r["leaves_per_prompt"] == 2 + r["num_branch_rollouts"] / 3
        assert r["tree_depth"] == 3.0  # forks of forks were made within the budget
        total += r["tokens_policy"] + r["tokens_branch"]
        assert r["tokens_total"] == total  # each generated token counted once
        assert all(map(torch.isfinite, torch.tensor([r["loss"], r["adv_std"]])))


@pytest.mark.slow
def test_tree_run_resumes_exactly(tiny_model_dir, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}

    def cmd(run_dir: Path, *extra: str) -> list[str]:
        return [sys.executable, "-m", "rlx.cli", *tree_cmd(run_dir, tiny_model_dir, "hf", "train.save_every=1",
                                                             "train.steps=4", *extra)]

    reference = tmp_path / "reference"
    run_to_end(cmd(reference), env)
    killed = tmp_path / "killed"
    proc = signal_when(cmd(killed), env, lambda: any(p.name == "step_2" for p in
                                                     complete_checkpoints(killed / "checkpoints")),
                       signal.SIGKILL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc.wait()
    assert not (killed / "summary.json").exists()
    resume_matches(cmd(killed, "resume=auto"), env, killed, reference)


@pytest.mark.parametrize(("override", "message"), [
    (("algo=tree", "algo.tree.depth=0"), "algo.tree.depth"),
    (("algo=tree", "algo.tree.fork_budget=1"), "algo.tree.fork_budget=1 is smaller than one fork"),
    (("algo=trepo", "algo.train_on_branches=true"), "algo.tree.off_temperature=exclude"),
    (("algo=trepo", "algo.tree.depth=2"), "algo.train_on_branches=true"),
])
def test_bad_tree_settings_fail_before_any_model_loads(override, message, tmp_path):
    model = tmp_path / "model"  # passes the cheap checks (rlx/preflight.py), is never loaded
    model.mkdir()
    (model / "config.json").write_text("{}")
    result = rlx("train", *override, f"model.path={model}", cwd=tmp_path)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr[-2000:]
    assert not list(tmp_path.rglob("metrics.jsonl"))


def test_loss_over_shared_prefixes_equals_the_unshared_rows(tiny_model_dir):
    """Each tree row is its context (prompt + ancestors' kept tokens) + its own tokens; written out unshared,
    each row is the prompt + its whole response with the prefix masked out of the loss. Same log-probs of the
    trained tokens, same loss."""
    torch.manual_seed(0)
    model = load_causal_lm(str(tiny_model_dir), "float32").eval()
    tree = hand_tree()
    rows = range(len(tree.nodes))
    shared = pack([list(tree.context(i)) for i in rows], [list(tree.nodes[i].token_ids) for i in rows], 0)
    unshared = pack([list(tree.prompt_ids)] * len(tree.nodes),
                    [list(tree.prefix(i) + tree.nodes[i].token_ids) for i in rows], 0)
    keep = torch.zeros_like(unshared.response_mask)  # [B, T'] only each row's own tokens are trained
    for b in rows:
        start = len(tree.prefix(b))
        keep[b, start: start + len(tree.nodes[b].token_ids)] = 1.0
    with torch.no_grad():
        logp_shared, _ = response_logprobs(model, shared)  # [B, T]
        logp_unshared, _ = response_logprobs(model, unshared)  # [B, T']
    aligned = torch.zeros_like(logp_shared)  # the unshared rows' trained log-probs, moved to column 0
    advantages = torch.zeros_like(logp_shared)
    for b in rows:
        cols = keep[b].nonzero().squeeze(1)
        aligned[b, : cols.numel()] = logp_unshared[b, cols]
        advantages[b, : cols.numel()] = torch.linspace(-1.0, 1.0, cols.numel())
    assert torch.allclose(aligned * shared.response_mask, logp_shared * shared.response_mask, atol=1e-5)
    cfg = TreeAlgoConfig()
    loss_shared, _ = clipped_policy_loss(LossInputs(logp_shared, logp_shared.detach() - 0.1, advantages,
                                                    shared.response_mask, torch.zeros(6)), cfg)
    full_adv = torch.zeros_like(logp_unshared)
    full_adv[keep > 0] = advantages[shared.response_mask > 0]
    loss_unshared, _ = clipped_policy_loss(LossInputs(logp_unshared, logp_unshared.detach() - 0.1, full_adv,
                                                      keep, torch.zeros(6)), cfg)
    assert float(loss_shared) == pytest.approx(float(loss_unshared), abs=1e-6)
