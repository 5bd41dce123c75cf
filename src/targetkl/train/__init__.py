"""Training: the loop, atomic checkpoints and logging."""
