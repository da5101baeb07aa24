"""rlx: online RL fine-tuning of LLMs on reasoning tasks (TRePO and baselines)."""

__version__ = "0.1.0"
