"""LoRA policies (`model.lora.r > 0`): PEFT adapters on the policy, merged weights for everyone else.

Only the adapters train; the samplers, the final checkpoint and `rlx eval` see one plain model whose
weights are the MERGED ones, W + (alpha / r) B A, under the base model's parameter names. Merged tensors
are computed on the side (`merged_named_parameters`): the trainer's module is never merged in place, so
its adapters keep training after every weight sync.
"""

from __future__ import annotations

from pathlib import Path

import torch

from rlx.data.configs import ConfigError
from rlx.models.config import LoRAConfig

ADAPTER_DIR = "adapter"  # the final checkpoint's adapter: PeftModel.from_pretrained(base, ckpt / "adapter")
ADAPTER_WEIGHTS = "adapter_model.safetensors"  # what PeftModel.save_pretrained writes


def is_lora(model: torch.nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def maybe_wrap_lora(model: torch.nn.Module, cfg: LoRAConfig) -> torch.nn.Module:
    """The model itself when `cfg.r == 0`, else a PeftModel whose only trainable weights are the adapters."""
    if cfg.r == 0:
        return model
    from peft import LoraConfig, get_peft_model

    check_target_modules(model, cfg.target_modules)
    peft_cfg = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                          target_modules=list(cfg.target_modules), bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, peft_cfg)


def check_target_modules(model: torch.nn.Module, targets: tuple[str, ...]) -> None:
    """Every `model.lora.target_modules` entry must name some linear layer (PEFT's rule: the module's name or
    its last dotted parts); a typo would otherwise leave it without adapters, or fail deep inside PEFT."""
    from transformers.pytorch_utils import Conv1D

    names = [name for name, m in model.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Embedding, Conv1D))]
    missing = [t for t in targets if not any(n == t or n.endswith(f".{t}") for n in names)]
    if missing:
        linear = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules()
                         if isinstance(m, (torch.nn.Linear, Conv1D))})
        raise ConfigError(f"model.lora.target_modules: {missing} match no module of the model; its linear modules "
                          f"are {linear} (e.g. model.lora.target_modules=[{','.join(linear[:2])}])")


def trainable_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Parameters the optimizer owns: all of a plain model, only the adapters of a LoRA one (so the
    frozen base gets neither gradients nor AdamW moments)."""
    return [p for p in model.parameters() if p.requires_grad]


def base_model(model: torch.nn.Module) -> torch.nn.Module:
    """The underlying transformers model (with the LoRA layers injected, for a PeftModel)."""
    return model.get_base_model() if is_lora(model) else model


def _is_adapter_parameter(name: str) -> bool:
    return any(part.startswith("lora_") for part in name.split("."))


@torch.no_grad()
def merged_named_parameters(model: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """(name, tensor) of the model a sampler should run, under the base model's checkpoint names.

    Plain model: its own parameters (detached, no copy). LoRA model: every wrapped `X.base_layer.weight`
    becomes `X.weight` = W + sum over active adapters of scale * B @ A (new tensors; the trainer's W is
    untouched), adapter tensors are dropped, everything else is passed through uncopied."""
    if not is_lora(model):
        return [(name, p.detach()) for name, p in model.named_parameters()]
    from peft.tuners.lora import LoraLayer

    deltas: dict[str, tuple[str, torch.Tensor]] = {}  # "X.base_layer.weight" -> ("X.weight", delta [out, in])
    for name, module in base_model(model).named_modules():
        if isinstance(module, LoraLayer) and not module.merged:
            delta = sum(module.get_delta_weight(a) for a in module.active_adapters if a in module.lora_A)
            deltas[f"{name}.base_layer.weight"] = (f"{name}.weight", delta)
    weights = []
    for name, p in base_model(model).named_parameters():
        if _is_adapter_parameter(name):
            continue
        if name in deltas:
            merged_name, delta = deltas[name]
            weights.append((merged_name, p.detach() + delta.to(p.dtype)))  # [out, in]
        else:
            weights.append((name.replace(".base_layer.", "."), p.detach()))  # e.g. a wrapped layer's bias
    return weights


def save_policy(model: torch.nn.Module, path: Path) -> None:
    """The final checkpoint. Plain model: `save_pretrained`. LoRA: the adapter under `path/adapter` AND the
    merged full model at `path`, so `AutoModelForCausalLM.from_pretrained(path)` and `rlx eval` need no PEFT."""
    if not is_lora(model):
        model.save_pretrained(str(path))
        return
    model.save_pretrained(str(path / ADAPTER_DIR))
    merged = {name: t.contiguous() for name, t in merged_named_parameters(model)}
    base_model(model).save_pretrained(str(path), state_dict=merged)


def load_adapter_weights(path: Path, model: torch.nn.Module) -> None:
    """Restore a resumable checkpoint's adapter (written by `PeftModel.save_pretrained`) in place."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    result = set_peft_model_state_dict(model, load_file(str(path / ADAPTER_WEIGHTS)))
    missing = [k for k in result.missing_keys if _is_adapter_parameter(k)]
    if missing:
        raise RuntimeError(f"checkpoint {path} lacks adapter weights, e.g. {missing[0]} (saved with another "
                           f"model.lora config?)")
