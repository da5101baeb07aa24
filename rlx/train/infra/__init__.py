"""Run infrastructure: processes, signals, run directories and checkpoints."""
