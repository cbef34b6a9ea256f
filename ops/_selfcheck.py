"""First-use check of the compiled kernels against the reference.

A build can succeed and still be wrong for the GPU that runs it: machine code
for another architecture ("no kernel image is available for execution on the
device"), a toolkit that does not match the driver, a miscompiled kernel.
So before the ops switch to the CUDA path, `verify_once(module)` runs every
kernel once on small tensors of the current GPU, in the calls the networks
make (the forward passes and the calls their derivatives make), and compares
each result with the PyTorch reference computed in float64 on the CPU. Any
launch error, NaN or mismatch raises KernelCheckFailed, a BuildUnavailable, so
ops/_dispatch.py warns once with the reason and uses the reference instead
of failing in the middle of a training run.

The check draws its inputs from its own generator (the global random state,
and so the training's seeding, is untouched) and takes a few milliseconds.
`verify(module, device)` is the same check on any device; the tests run it on
the CPU with the kernels' CPU emulation (tests/test_ops_cuda_build.py).
"""

from __future__ import annotations

import contextlib
import math

import torch

from ops import _build
from ops.bias_act import _bias_act_ref, activation_funcs
from ops.upfirdn2d import _upfirdn2d_ref

# (name, input shape, filter, up (x, y), down (x, y), padding (x0, x1, y0, y1), gain, flip_filter).
# The first three are the resampling steps of the StyleGAN2 networks with
# their 4x4 filter (G's upsampling, D's downsampling, the blur before D's
# strided convolutions); the last covers a separable filter, unequal factors,
# crops and flipping.
UPFIRDN2D_CASES = [
    ("upsample2d", (2, 3, 5, 6), "4x4", (2, 2), (1, 1), (2, 1, 2, 1), 4.0, False),
    ("downsample2d", (2, 3, 8, 7), "4x4", (1, 1), (2, 2), (1, 1, 1, 1), 1.0, False),
    ("blur", (2, 3, 7, 9), "4x4", (1, 1), (1, 1), (2, 2, 2, 2), 1.0, False),
    ("mixed", (1, 2, 6, 5), "1d5", (2, 1), (1, 2), (1, -1, 3, 0), 1.5, True),
]

# The activations the networks use, with and without the conv clamp.
BIAS_ACT_CASES = [("lrelu", None), ("lrelu", 1.5), ("linear", None), ("linear", 1.5)]

# Largest accepted ||kernel - reference|| / ||reference|| per dtype: float32
# arithmetic lands far below 1e-5; fp16 and bf16 are dominated by rounding the
# stored results (about 3e-4 and 2e-3 over many elements).
TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


class KernelCheckFailed(_build.BuildUnavailable):
    """The compiled kernels failed to launch or disagreed with the reference."""


def verify(module, device: torch.device, dtypes=(torch.float32, torch.float16, torch.bfloat16)) -> None:
    """Checks the extension `module` on `device`; raises KernelCheckFailed
    naming the first failing call (op, derivative, dtype) and why."""
    gen = torch.Generator().manual_seed(1234)
    guards = contextlib.ExitStack()
    with guards:
        # Whatever mode the first op call happens in (no_grad sampling,
        # inference_mode, autocast), the references need autograd in float64.
        guards.enter_context(torch.inference_mode(False))
        guards.enter_context(torch.enable_grad())
        for device_type in {"cpu", device.type}:
            guards.enter_context(torch.autocast(device_type, enabled=False))
        for case in UPFIRDN2D_CASES:
            _check_upfirdn2d(module, device, gen, case, dtypes)
        for act, clamp in BIAS_ACT_CASES:
            _check_bias_act(module, device, gen, act, clamp, dtypes)


_passed = False
_failure: KernelCheckFailed | None = None


def verify_once(module) -> None:
    """verify() on the current GPU, once per process; a failure is remembered
    and raised again on every later call."""
    global _passed, _failure
    if _passed:
        return
    if _failure is None:
        device = torch.device("cuda", torch.cuda.current_device())
        try:
            verify(module, device)
            _passed = True
            return
        except Exception as e:  # whatever went wrong, the reference is the safe way on
            reason = str(e) if isinstance(e, KernelCheckFailed) else f"the check itself failed: {type(e).__name__}: {e}"
            name = torch.cuda.get_device_name(device)
            major, minor = torch.cuda.get_device_capability(device)
            _failure = KernelCheckFailed(f"the CUDA kernels failed their first-use check on {name} "
                                         f"(compute capability {major}.{minor}): {reason}")
    raise _failure


# ----------------------------------------------------------------------------
# The checks.


def _filter(name: str, gen: torch.Generator) -> torch.Tensor:
    if name == "4x4":  # setup_filter([1, 3, 3, 1])
        taps = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=torch.float64)
        return torch.outer(taps, taps) / 64
    return torch.rand(int(name[2:]), generator=gen, dtype=torch.float64) + 0.5  # "1dN": separable, N taps


def _check_upfirdn2d(module, device, gen, case, dtypes) -> None:
    name, shape, filter_name, (up_x, up_y), (down_x, down_y), pad, gain, flip = case
    from ops import _custom  # the registered ops: shapes and the backward's arguments

    f64 = _filter(filter_name, gen)
    f_hw = (f64.shape[0], f64.shape[0]) if f64.dim() == 1 else tuple(f64.shape)
    args = (up_x, up_y, down_x, down_y, *pad, flip, gain)
    x64 = torch.randn(shape, generator=gen, dtype=torch.float64).requires_grad_()
    y64 = _upfirdn2d_ref(x64, f64, *args)
    dy64 = torch.randn(y64.shape, generator=gen, dtype=torch.float64)
    (dx64,) = torch.autograd.grad(y64, x64, dy64)
    # The gradient is upfirdn2d with the adjoint's arguments; its own gradient
    # (the second derivative) is upfirdn2d with the forward's arguments again.
    adjoint = _custom.upfirdn2d_adjoint_args(f_hw, tuple(shape[2:]), tuple(y64.shape[2:]), up_x, up_y, down_x, down_y,
                                             pad[0], pad[2], flip, gain)
    f = f64.float().to(device)
    for dtype in dtypes:
        x, dy = (t.detach().to(dtype) for t in (x64, dy64))
        y = _call(f"upfirdn2d {name} forward {_dtype_name(dtype)}",
                  lambda: _run_upfirdn2d(module, _custom, x.to(device), f, args))
        _compare(f"upfirdn2d {name} forward {_dtype_name(dtype)}", y, _upfirdn2d_ref(x.double(), f64, *args), dtype)
        if dtype == torch.float32:
            dx = _call(f"upfirdn2d {name} gradient float32",
                       lambda: _run_upfirdn2d(module, _custom, dy.to(device), f, adjoint))
            _compare(f"upfirdn2d {name} gradient float32", dx, dx64, dtype)


def _run_upfirdn2d(module, custom, x, f, args):
    """The raw kernel call that ops/_custom.py makes, into a NaN-poisoned output."""
    up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1, flip, gain = args
    shape = custom._upfirdn2d_out_shape(x, f, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1)
    y = torch.full(shape, math.nan, dtype=x.dtype, device=x.device)
    module.upfirdn2d(x, f, y, up_x, up_y, down_x, down_y, pad_x0, pad_y0, flip, gain)
    return y


def _check_bias_act(module, device, gen, act, clamp, dtypes) -> None:
    spec = activation_funcs[act]
    alpha, gain, clamp = spec.def_alpha, spec.def_gain, -1.0 if clamp is None else clamp
    x64 = torch.randn(2, 8, 3, 5, generator=gen, dtype=torch.float64)
    b64 = torch.randn(8, generator=gen, dtype=torch.float64)
    dy64 = torch.randn(x64.shape, generator=gen, dtype=torch.float64)
    # Derivatives of the reference w.r.t. z = x + b: act' for the backward
    # (order 1), act'' for the double backward of R1 and path length (order 2).
    z64 = (x64 + b64[:, None, None]).requires_grad_()
    y64 = _bias_act_ref(z64, None, 1, act, alpha, gain, clamp)
    (d1,) = torch.autograd.grad(y64, z64, torch.ones_like(y64), create_graph=True)
    d2 = torch.autograd.grad(d1.sum(), z64, allow_unused=True)[0] if d1.requires_grad else None
    expected = [y64.detach(), dy64 * d1.detach(), dy64 * (torch.zeros_like(z64) if d2 is None else d2)]
    for dtype in dtypes:
        x, b, dy = (t.to(dtype).to(device) for t in (x64, b64, dy64))
        for order in (0, 1, 2) if dtype == torch.float32 else (0,):
            what = f"bias_act {act}{'' if clamp < 0 else f' clamp {clamp:g}'} " + \
                   ("forward" if order == 0 else f"derivative {order}") + f" {_dtype_name(dtype)}"

            def run():
                out = torch.full_like(x, math.nan)
                module.bias_act(x, b, dy if order else None, out, 1, spec.code, order, alpha, gain, clamp)
                return out

            result = _call(what, run)
            if dtype == torch.float32:
                _compare(what, result, expected[order], dtype)
            else:  # against the reference of the rounded inputs
                reference = _bias_act_ref(x.cpu().double(), b.cpu().double(), 1, act, alpha, gain, clamp)
                _compare(what, result, reference, dtype)


def _call(what: str, fn):
    """fn() with its launch errors (also those that surface at the next
    synchronization) turned into KernelCheckFailed."""
    try:
        result = fn()
        if result.device.type == "cuda":
            torch.cuda.synchronize(result.device)
        return result
    except Exception as e:  # launch errors are RuntimeErrors; a bad binding, a TypeError
        message = " ".join(str(e).split())[:300] or type(e).__name__
        raise KernelCheckFailed(f"{what}: {message}") from e


def _compare(what: str, actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype) -> None:
    actual = actual.detach().cpu().double()
    expected = expected.detach().cpu().double()
    if actual.shape != expected.shape:
        raise KernelCheckFailed(f"{what}: shape {tuple(actual.shape)}, expected {tuple(expected.shape)}")
    if not torch.isfinite(actual).all():
        raise KernelCheckFailed(f"{what}: {int((~torch.isfinite(actual)).sum())} of {actual.numel()} values "
                                f"are NaN or infinite (not written, or overflowed)")
    error = (actual - expected).norm().item() / max(expected.norm().item(), 1e-30)
    if error > TOLERANCE[dtype]:
        raise KernelCheckFailed(f"{what}: relative error {error:.2e} against the reference (at most "
                                f"{TOLERANCE[dtype]:.0e} allowed)")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
