"""The learning phase: the frozen batch of a rollout record, the forwards and the optimizer steps."""
