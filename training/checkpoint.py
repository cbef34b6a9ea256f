"""Checkpoints: plain dicts of tensors and JSON-able values, written atomically.

A checkpoint holds the state dicts of the unwrapped networks and optimizers,
counters, RNG states and the resolved config, so it rebuilds its own networks
and loads with `torch.load(path, weights_only=True)`: no pickled code.
"""

import os

import torch

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that is missing or unreadable; the message says which and what to do."""


def save_checkpoint(state: dict, path: str) -> None:
    """Write `state` to `path` so that a crash at any moment leaves the previous file intact."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        torch.save({"format_version": FORMAT_VERSION, **state}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str, map_location="cpu") -> dict:
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated, not a torch file, or holds pickled objects
        raise CheckpointError(f"cannot read checkpoint {path} ({type(e).__name__}); "
                              f"it is damaged or not a checkpoint of this toolkit")
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise CheckpointError(f"{path} is not a checkpoint of this toolkit (no model/config entries)")
    return state


def resolve_resume(resume: str | None, out_dir: str) -> str | None:
    """`--resume auto` -> out_dir/checkpoints/last.pt when it exists (else a fresh start); a path must exist."""
    if resume is None:
        return None
    if resume == "auto":
        path = os.path.join(out_dir, "checkpoints", "last.pt")
        return path if os.path.isfile(path) else None
    if not os.path.isfile(resume):
        raise CheckpointError(f"--resume: checkpoint not found: {resume} (use --resume auto to continue out_dir)")
    return resume
