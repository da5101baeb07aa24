"""Moved to `rlx.models.logprobs`; this module re-exports it so existing imports keep working."""

from rlx.models.logprobs import PackedBatch, model_device, pack, response_logprobs, select_rows

__all__ = ["PackedBatch", "model_device", "pack", "response_logprobs", "select_rows"]
