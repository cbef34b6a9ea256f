"""Parallel test workers (pytest-xdist, `-n 2`) share the machine's cores: each in-process test gets its
share of them, as every training a test starts in a subprocess gets one thread (plumbing.run_script)."""

import os

import torch

workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if workers > 1:
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
