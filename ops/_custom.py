"""torch.library registration of the CUDA ops, with fake kernels and autograd.

Ops (namespace `smallgan`):

    upfirdn2d(x, f, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1, flip_filter, gain)
    bias_act(x, b, dim, act, alpha, gain, clamp)
    bias_act_grad(dy, x, b, dim, act, alpha, gain, clamp, order)

On CUDA tensors they run the kernels of ops/csrc; on other devices they run
the PyTorch reference (that is what the CPU tests exercise: the schemas, the
fake kernels, the autograd formulas and torch.compile tracing are the same
whatever the device). Every backward is written with these same ops, so
second derivatives go through the kernels too:

- upfirdn2d's gradient is upfirdn2d with up and down swapped, the filter
  flipped and the padding mirrored, so its own backward is upfirdn2d again.
- bias_act's gradient is bias_act_grad(order=1), i.e. dy * act'(x + b); the
  backward of that needs dy * act''(x + b), bias_act_grad(order=2). Third
  derivatives are not supported.
"""

# No `from __future__ import annotations`: torch.library reads the type hints
# of the op signatures to build their schemas.
from typing import Optional

import torch
from torch import Tensor

from ops import _build
from ops.bias_act import _bias_act_ref, activation_funcs
from ops.upfirdn2d import _upfirdn2d_ref

# Largest filter (taps per side) the kernel takes; larger ones use the reference.
MAX_FILTER_SIZE = 32


# ----------------------------------------------------------------------------
# Layout helpers shared by the real and the fake kernels, so that both return
# tensors with identical strides.


def _memory_format(x: Tensor) -> torch.memory_format:
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _dense(x: Tensor) -> Tensor:
    """x itself when it is contiguous in some standard format, else a contiguous copy."""
    if x.is_contiguous() or (x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)):
        return x
    return x.contiguous()


def _upfirdn2d_out_shape(x, f, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1):
    fh, fw = (f.shape[0], f.shape[0]) if f.dim() == 1 else f.shape
    out_h = (x.shape[2] * up_y + pad_y0 + pad_y1 - fh + down_y) // down_y
    out_w = (x.shape[3] * up_x + pad_x0 + pad_x1 - fw + down_x) // down_x
    return [x.shape[0], x.shape[1], out_h, out_w]


# ----------------------------------------------------------------------------
# upfirdn2d.


@torch.library.custom_op("smallgan::upfirdn2d", mutates_args=())
def upfirdn2d_op(
    x: Tensor,
    f: Tensor,
    up_x: int,
    up_y: int,
    down_x: int,
    down_y: int,
    pad_x0: int,
    pad_x1: int,
    pad_y0: int,
    pad_y1: int,
    flip_filter: bool,
    gain: float,
) -> Tensor:
    shape = _upfirdn2d_out_shape(x, f, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1)
    y = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=_memory_format(x))
    args = (up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1, flip_filter, gain)
    with torch.no_grad():
        return y.copy_(_upfirdn2d_ref(x, f, *args))


@upfirdn2d_op.register_kernel("cuda")
def _upfirdn2d_cuda_kernel(x, f, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1, flip_filter, gain):
    shape = _upfirdn2d_out_shape(x, f, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1)
    y = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=_memory_format(x))
    _build.load().upfirdn2d(x, f, y, up_x, up_y, down_x, down_y, pad_x0, pad_y0, flip_filter, gain)
    return y


@upfirdn2d_op.register_fake
def _upfirdn2d_fake(x, f, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1, flip_filter, gain):
    shape = _upfirdn2d_out_shape(x, f, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1)
    return torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=_memory_format(x))


def _upfirdn2d_setup_context(ctx, inputs, output):
    x, f, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1, flip_filter, gain = inputs
    ctx.save_for_backward(f)
    ctx.args = (up_x, up_y, down_x, down_y, pad_x0, pad_y0, flip_filter, gain)
    ctx.in_hw = (x.shape[2], x.shape[3])
    ctx.out_hw = (output.shape[2], output.shape[3])


def upfirdn2d_adjoint_args(f_hw, in_hw, out_hw, up_x, up_y, down_x, down_y, pad_x0, pad_y0, flip_filter, gain):
    """The upfirdn2d arguments (after x and f) whose result is the gradient of
    an upfirdn2d from in_hw to out_hw: zero-insert dy by `down`, correlate with
    the mirrored filter, keep every `up`-th pixel. The padding puts input
    pixel 0 where the forward read it and covers the input exactly."""
    (fh, fw), (in_h, in_w), (out_h, out_w) = f_hw, in_hw, out_hw
    pad = [
        fw - pad_x0 - 1,
        in_w * up_x - out_w * down_x + pad_x0 - up_x + 1,
        fh - pad_y0 - 1,
        in_h * up_y - out_h * down_y + pad_y0 - up_y + 1,
    ]
    return (down_x, down_y, up_x, up_y, *pad, not flip_filter, gain)


def _upfirdn2d_backward(ctx, dy):
    (f,) = ctx.saved_tensors
    f_hw = (f.shape[0], f.shape[0]) if f.dim() == 1 else tuple(f.shape)
    dx = upfirdn2d_op(dy, f, *upfirdn2d_adjoint_args(f_hw, ctx.in_hw, ctx.out_hw, *ctx.args))
    return (dx,) + (None,) * 11


upfirdn2d_op.register_autograd(_upfirdn2d_backward, setup_context=_upfirdn2d_setup_context)


def upfirdn2d_cuda(x, f, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1, flip_filter, gain):
    """upfirdn2d through the registered op (arguments already parsed)."""
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    if max(f.shape) > MAX_FILTER_SIZE:
        return _upfirdn2d_ref(x, f, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1, flip_filter, gain)
    # The filter is a constant of the op: no gradient flows into it. The
    # kernel reads it in its accumulation type (a no-op for float32 buffers).
    f = f.detach().to(device=x.device, dtype=torch.float64 if x.dtype == torch.float64 else torch.float32)
    f = f.contiguous()
    return upfirdn2d_op(x, f, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1, flip_filter, gain)


# ----------------------------------------------------------------------------
# bias_act.


@torch.library.custom_op("smallgan::bias_act", mutates_args=())
def bias_act_op(x: Tensor, b: Optional[Tensor], dim: int, act: str, alpha: float, gain: float, clamp: float) -> Tensor:
    x = _dense(x)
    with torch.no_grad():
        return torch.empty_like(x).copy_(_bias_act_ref(x, b, dim, act, alpha, gain, clamp))


@bias_act_op.register_kernel("cuda")
def _bias_act_cuda_kernel(x, b, dim, act, alpha, gain, clamp):
    x = _dense(x)
    out = torch.empty_like(x)
    code = activation_funcs[act].code
    _build.load().bias_act(x, b, None, out, dim, code, 0, alpha, gain, clamp)
    return out


@bias_act_op.register_fake
def _bias_act_fake(x, b, dim, act, alpha, gain, clamp):
    return torch.empty_like(_dense(x))


@torch.library.custom_op("smallgan::bias_act_grad", mutates_args=())
def bias_act_grad_op(
    dy: Tensor, x: Tensor, b: Optional[Tensor], dim: int, act: str, alpha: float, gain: float, clamp: float, order: int
) -> Tensor:
    # Reference: the derivative formulas of csrc/bias_act.h in PyTorch.
    x = _dense(x)
    z = x
    if b is not None:
        shape = [1] * x.dim()
        shape[dim] = -1
        z = x + b.reshape(shape)
    g = dy * _act_derivative(z, act, alpha, order) * gain
    if clamp >= 0:
        g = torch.where(_bias_act_ref(z, None, dim, act, alpha, gain, -1).abs() <= clamp, g, 0)
    return torch.empty_like(x).copy_(g)


@bias_act_grad_op.register_kernel("cuda")
def _bias_act_grad_cuda_kernel(dy, x, b, dim, act, alpha, gain, clamp, order):
    x = _dense(x)
    out = torch.empty_like(x)
    if dy.stride() != x.stride():
        dy = torch.empty_like(x).copy_(dy)
    code = activation_funcs[act].code
    _build.load().bias_act(x, b, dy, out, dim, code, order, alpha, gain, clamp)
    return out


@bias_act_grad_op.register_fake
def _bias_act_grad_fake(dy, x, b, dim, act, alpha, gain, clamp, order):
    return torch.empty_like(_dense(x))


_SELU_SCALE = 1.0507009873554804934193349852946
_SELU_ALPHA = 1.6732632423543772848170429916717


def _act_derivative(z: Tensor, act: str, alpha: float, order: int) -> Tensor:
    """First (order 1) or second (order 2) derivative of the activation at z."""
    first = order == 1
    pos = z > 0
    if act in ("linear", "relu", "lrelu"):
        if not first:
            return torch.zeros_like(z)
        if act == "linear":
            return torch.ones_like(z)
        return torch.where(pos, 1.0, 0.0 if act == "relu" else alpha).to(z.dtype)
    if act == "tanh":
        t = torch.tanh(z)
        return 1 - t * t if first else -2 * t * (1 - t * t)
    if act in ("sigmoid", "softplus", "swish"):
        s = torch.sigmoid(z)
        if act == "sigmoid":
            return s * (1 - s) if first else s * (1 - s) * (1 - 2 * s)
        if act == "softplus":
            return torch.where(z > 20, 1.0 if first else 0.0, s if first else s * (1 - s))
        return s * (1 + z * (1 - s)) if first else s * (1 - s) * (2 + z * (1 - 2 * s))
    if act == "elu":
        return torch.where(pos, 1.0 if first else 0.0, alpha * torch.exp(z))
    if act == "selu":
        return torch.where(pos, _SELU_SCALE if first else 0.0, _SELU_SCALE * _SELU_ALPHA * torch.exp(z))
    raise ValueError(f"unknown activation {act!r}")


def _reduce_to_bias(g: Tensor, dim: int) -> Tensor:
    return g.sum(dim=[i for i in range(g.dim()) if i != dim])


def _bias_act_setup_context(ctx, inputs, output):
    x, b, dim, act, alpha, gain, clamp = inputs
    ctx.save_for_backward(x, b)
    ctx.args = (dim, act, alpha, gain, clamp)


def _bias_act_backward(ctx, dy):
    x, b = ctx.saved_tensors
    dim, act, alpha, gain, clamp = ctx.args
    dz = None
    if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
        dz = bias_act_grad_op(dy, x, b, dim, act, alpha, gain, clamp, 1)
    dx = dz if ctx.needs_input_grad[0] else None
    db = _reduce_to_bias(dz, dim) if b is not None and ctx.needs_input_grad[1] else None
    return dx, db, None, None, None, None, None


bias_act_op.register_autograd(_bias_act_backward, setup_context=_bias_act_setup_context)


def _bias_act_grad_setup_context(ctx, inputs, output):
    dy, x, b, dim, act, alpha, gain, clamp, order = inputs
    ctx.save_for_backward(dy, x, b)
    ctx.args = (dim, act, alpha, gain, clamp, order)


def _bias_act_grad_backward(ctx, gg):
    dy, x, b, dim, act, alpha, gain, clamp, order = (*ctx.saved_tensors, *ctx.args)
    if order != 1:
        raise RuntimeError("smallgan bias_act supports first and second derivatives only")
    # out = dy * s(z) with s = gain * act' (masked by the clamp), z = x + b.
    d_dy = bias_act_grad_op(gg, x, b, dim, act, alpha, gain, clamp, 1) if ctx.needs_input_grad[0] else None
    d_z = None
    if (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]) and act not in ("linear", "relu", "lrelu"):
        d_z = bias_act_grad_op(gg * dy, x, b, dim, act, alpha, gain, clamp, 2)
    d_x = d_z if ctx.needs_input_grad[1] else None
    d_b = _reduce_to_bias(d_z, dim) if d_z is not None and b is not None and ctx.needs_input_grad[2] else None
    return d_dy, d_x, d_b, None, None, None, None, None, None


bias_act_grad_op.register_autograd(_bias_act_grad_backward, setup_context=_bias_act_grad_setup_context)


def bias_act_cuda(x, b, dim, act, alpha, gain, clamp):
    """bias_act through the registered op (arguments already resolved)."""
    if b is not None:
        b = b.to(dtype=x.dtype).contiguous()
    return bias_act_op(x, b, dim, act, alpha, gain, clamp)
