"""Entry points and everything that knows about hardware: runtime, training loop, checkpoints, monitoring."""
