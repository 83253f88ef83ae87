"""Training loop, DDP, checkpoints, evaluation protocols, distillation and export."""
