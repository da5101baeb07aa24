"""The trainer's AdamW (rlx/train/setup.py): fused on CPU, and its steps are torch's default AdamW's (float64)."""

from __future__ import annotations

import torch

from rlx.train.setup import adamw


def test_fused_cpu_adamw_takes_the_default_adamws_steps():
    torch.manual_seed(0)
    default = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Linear(5, 2)).double()
    fused = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Linear(5, 2)).double()
    fused.load_state_dict(default.state_dict())
    opt_default = torch.optim.AdamW(default.parameters(), lr=1e-2, weight_decay=0.1)
    opt_fused = adamw(list(fused.parameters()), lr=1e-2, weight_decay=0.1)
    assert opt_fused.defaults["fused"] and not opt_default.defaults["fused"]
    x = torch.randn(8, 6, dtype=torch.float64)
    for _ in range(5):
        for model, opt in ((default, opt_default), (fused, opt_fused)):
            opt.zero_grad()
            model(x).pow(2).sum().backward()
            opt.step()
    for a, b in zip(default.parameters(), fused.parameters()):
        assert float((a - b).detach().abs().max()) < 1e-12


def test_adamw_keeps_torchs_default_off_the_cpu():
    param = torch.nn.Parameter(torch.zeros(3, device="meta"))
    assert adamw([param], lr=1e-3).defaults["fused"] is None
