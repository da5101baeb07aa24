"""The rollout phase: sampling, branching, scoring, and the immutable rollout record it freezes."""
