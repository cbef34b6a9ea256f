"""Chooses between the CUDA and the reference implementation of an op."""

from __future__ import annotations

import os
import warnings

import torch

# SMALLGAN_OPS_IMPL=ref forces the pure-PyTorch reference everywhere.
ENV_IMPL = "SMALLGAN_OPS_IMPL"

_warned = False


# Both answers are fixed for the life of the process; under torch.compile they
# are evaluated once at trace time instead of traced (the build and the
# warning cannot be traced).
@torch.compiler.assume_constant_result
def forced_ref() -> bool:
    """True when the environment forces the reference implementation."""
    value = os.environ.get(ENV_IMPL, "").strip().lower()
    if value in ("", "auto", "cuda"):
        return False
    if value == "ref":
        return True
    raise ValueError(f"{ENV_IMPL} must be 'ref', 'cuda' or 'auto', got {value!r}")


def use_cuda(x: torch.Tensor, impl: str | None) -> bool:
    """True when an op on x should run the CUDA implementation.

    Only a CUDA tensor with impl 'cuda' or None asks for it, so CPU-only use
    never starts a build; the first such request builds (or loads) the
    extension and checks its kernels against the reference
    (ops/_selfcheck.py); when either fails it warns once why and returns False.
    """
    if impl not in (None, "cuda", "ref"):
        raise ValueError(f"impl must be 'cuda', 'ref' or None, got {impl!r}")
    if impl == "ref" or x.device.type != "cuda" or forced_ref():
        return False
    return extension_available()


@torch.compiler.assume_constant_result
def extension_available() -> bool:
    """Whether the compiled extension can be used (it builds, and its kernels
    passed their first-use check); warns once when it cannot."""
    global _warned
    from ops import _build, _selfcheck

    try:
        _selfcheck.verify_once(_build.load())
        return True
    except _build.BuildUnavailable as e:
        if not _warned:
            _warned = True
            warnings.warn(f"smallgan ops: using the PyTorch reference instead of the CUDA kernels: {e}", stacklevel=4)
        return False
