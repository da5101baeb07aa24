"""PPO's critic: a value head on a copy of the policy's base transformer.

Why a copy of the policy rather than a separate small model: the critic must read the same token ids
with the same tokenizer, and starting from the policy's representations is what LLM-PPO does (RLHF
pipelines initialise the value model from a model of the policy's or reward model's size). The head
starts at zero so V(s) = 0 at step 0, which makes the first advantages plain Monte-Carlo returns rather
than noise from a random head.
"""

from __future__ import annotations

import torch
from transformers import AutoModel

from rlx.models.logprobs import PackedBatch, decoder_states


class ValueModel(torch.nn.Module):
    def __init__(self, model_path: str, dtype: torch.dtype):
        super().__init__()
        self.base = AutoModel.from_pretrained(model_path, dtype=dtype)
        self.head = torch.nn.Linear(self.base.config.hidden_size, 1, dtype=dtype)
        torch.nn.init.zeros_(self.head.weight)
        torch.nn.init.zeros_(self.head.bias)

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        """V(s_t) for every response token t: the value of the state *before* token t, read at the
        position whose logits predict token t (with a shared layout, each shared prefix computed once).
        -> [B, T], 0 on padding."""
        hidden, index = decoder_states(self.base, batch, self.head.weight.device)  # [M, H], [B, T]
        values = self.head(hidden[index.to(hidden.device)]).squeeze(-1)  # [B, T]
        return values.to(torch.promote_types(values.dtype, torch.float32)).cpu() * batch.response_mask
