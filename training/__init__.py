"""Plumbing the three training scripts share: config, data, run folder, checkpoints, loop."""
