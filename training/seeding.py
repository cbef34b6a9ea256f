"""Randomness as a function of (seed, purpose, step).

Every random draw in training that must agree between processes -- which
images form a batch, flips, latents, noise, augmentation -- is made for the
whole global batch from a generator keyed by what it is for, and each process
keeps its slice. Per-step draws are made on the training device by a generator
of that device, so a step copies no random numbers from the host. So a run on K processes sees exactly the numbers a run on one
process sees, and a resumed run sees the numbers the uninterrupted run saw.
"""

import hashlib
import random

import numpy as np
import torch


def derive_seed(seed: int, *keys) -> int:
    """A 63-bit seed from the run seed and any keys (strings or integers)."""
    text = "/".join(str(k) for k in (seed, *keys))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def generator(seed: int, *keys, device: torch.device | str = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(seed, *keys))
    return g


def randn(shape, seed: int, *keys, device: torch.device | str = "cpu") -> torch.Tensor:
    """Standard normal tensor drawn on `device` itself (no host-to-device copy): the same on every
    machine with that kind of device; a GPU's numbers differ from the CPU's."""
    return torch.randn(shape, generator=generator(seed, *keys, device=device), device=device)


def latents_for_indices(indices: torch.Tensor, dim: int, seed: int) -> torch.Tensor:
    """One latent per sample index: sample i is the same whatever the batching or process count."""
    return torch.stack([torch.randn(dim, generator=generator(seed, "sample", int(i))) for i in indices.cpu()])


def seed_everything(seed: int) -> None:
    """Seed the global generators too, for library code that draws from them."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Global generator states as tensors and plain values (checkpoint-safe)."""
    state = {
        "torch": torch.get_rng_state(),
        "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
        "numpy_pos": int(np.random.get_state()[2]),
        "python": list(random.getstate()[1]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"]))
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
