"""Model and LoRA settings (`model.*`): typed here, beside the code that loads models, so `rlx.models` never
imports the config layer above it. Errors name the full key (`model.lora.r`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from rlx.data.configs import _require

QWEN2_LINEAR_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class LoRAConfig:
    """`model.lora`: train low-rank adapters (PEFT) instead of the full policy; r = 0 turns LoRA off."""

    r: int = 0  # adapter rank; 0 = full fine-tuning
    alpha: float = 32.0  # merged weight is W + (alpha / r) B A
    dropout: float = 0.0  # dropout on the adapter's input (training forward passes only)
    target_modules: tuple[str, ...] = QWEN2_LINEAR_PROJECTIONS  # module names that get adapters

    def validate(self) -> None:
        _require(self.r >= 0, "model.lora.r", "must be >= 0 (0 = off)", self.r)
        _require(self.alpha > 0, "model.lora.alpha", "must be > 0", self.alpha)
        _require(0 <= self.dropout < 1, "model.lora.dropout", "must be in [0, 1)", self.dropout)
        _require(len(self.target_modules) >= 1, "model.lora.target_modules", "must name at least one module",
                 self.target_modules)


@dataclass(frozen=True)
class ModelConfig:
    name: str = "tiny"
    path: str | None = None  # a local Hugging Face model directory; wins over hub_id
    hub_id: str | None = None
    # A model shipped as one GGUF file, converted once into the model cache (rlx/models/gguf.py): `gguf_file` is a
    # file name inside the installed distribution `package`, or a local .gguf path when `package` is null.
    package: str | None = None
    gguf_file: str | None = None
    cache_dir: str | None = None
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"  # training: autocast over fp32 weights
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    gradient_checkpointing: bool = False  # recompute decoder activations in the backward pass
    logprob_chunk: int = 1024  # response positions per LM-head chunk: peak logits memory chunk x vocab

    def validate(self) -> None:
        _require(self.logprob_chunk >= 1, "model.logprob_chunk", "must be >= 1", self.logprob_chunk)
        _require(self.package is None or self.gguf_file is not None, "model.gguf_file",
                 "must name the .gguf file inside model.package", self.gguf_file)
