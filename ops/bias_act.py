"""bias_act: fused bias add, activation, gain and clamp.

`bias_act(x, b, dim, act, ...)` computes clamp(act(x + b) * gain, -clamp, clamp)
with `b` broadcast along dimension `dim`. Implementations behind `impl`:

- 'ref': pure PyTorch; autograd gives every derivative.
- 'cuda': one elementwise kernel (csrc/bias_act.cu) for the forward, the first
  and the second derivative, registered through torch.library with its own
  backward (see ops/_custom.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ops import _dispatch

__all__ = ["bias_act", "activation_funcs"]


@dataclass(frozen=True)
class Activation:
    """One supported activation."""

    code: int  # kernel selector in csrc/bias_act.cu
    def_alpha: float  # default `alpha` (lrelu slope, elu scale); unused by the others
    def_gain: float  # default `gain`: sqrt(2) keeps the variance of (leaky) ReLUs


activation_funcs = {
    "linear": Activation(code=0, def_alpha=0.0, def_gain=1.0),
    "relu": Activation(code=1, def_alpha=0.0, def_gain=math.sqrt(2)),
    "lrelu": Activation(code=2, def_alpha=0.2, def_gain=math.sqrt(2)),
    "tanh": Activation(code=3, def_alpha=0.0, def_gain=1.0),
    "sigmoid": Activation(code=4, def_alpha=0.0, def_gain=1.0),
    "elu": Activation(code=5, def_alpha=1.0, def_gain=1.0),
    "selu": Activation(code=6, def_alpha=0.0, def_gain=1.0),
    "softplus": Activation(code=7, def_alpha=0.0, def_gain=1.0),
    "swish": Activation(code=8, def_alpha=0.0, def_gain=1.0),
}


def bias_act(x, b=None, dim=1, act="linear", alpha=None, gain=None, clamp=None, impl=None):
    """Adds a bias, applies an activation, scales and clamps.

    Args:
        x:     Input tensor of any shape and memory format.
        b:     Bias, shape [x.shape[dim]] on x's device, or None.
        dim:   Dimension of x that b runs along.
        act:   'linear', 'relu', 'lrelu', 'tanh', 'sigmoid', 'elu', 'selu',
               'softplus' or 'swish' (x * sigmoid(x)).
        alpha: Negative slope of lrelu (default 0.2) or scale of elu's
               negative branch (default 1); ignored by the other activations.
        gain:  Factor applied after the activation; default sqrt(2) for relu
               and lrelu, 1 otherwise.
        clamp: Clamp the result to [-clamp, clamp]; None (or negative) disables.
        impl:  'cuda', 'ref' or None (cuda when x is on a GPU and the extension
               is available).

    Returns:
        Tensor of the same shape, dtype and memory format as x.
    """
    if act not in activation_funcs:
        raise ValueError(f"unknown activation {act!r}; expected one of {sorted(activation_funcs)}")
    spec = activation_funcs[act]
    alpha = float(spec.def_alpha if alpha is None else alpha)
    gain = float(spec.def_gain if gain is None else gain)
    clamp = float(-1 if clamp is None else clamp)
    dim = dim % x.ndim if x.ndim else 0
    if b is not None:
        if b.ndim != 1 or b.shape[0] != x.shape[dim]:
            raise ValueError(f"bias of shape {tuple(b.shape)} does not match dim {dim} of input {tuple(x.shape)}")
        if b.device != x.device:
            raise ValueError(f"bias_act: b is on {b.device} but x is on {x.device}; put both on one device")
    if _dispatch.use_cuda(x, impl):
        from ops import _custom

        return _custom.bias_act_cuda(x, b, dim, act, alpha, gain, clamp)
    return _bias_act_ref(x, b, dim, act, alpha, gain, clamp)


def _activate(x, act, alpha):
    """act(x) with standard PyTorch ops, so autograd differentiates it."""
    if act == "linear":
        return x
    if act == "relu":
        return F.relu(x)
    if act == "lrelu":
        return F.leaky_relu(x, alpha)
    if act == "tanh":
        return torch.tanh(x)
    if act == "sigmoid":
        return torch.sigmoid(x)
    if act == "elu":
        return F.elu(x, alpha)
    if act == "selu":
        return F.selu(x)
    if act == "softplus":
        return F.softplus(x)
    if act == "swish":
        return F.silu(x)
    raise ValueError(f"unknown activation {act!r}")


def _bias_act_ref(x, b, dim, act, alpha, gain, clamp):
    """Pure-PyTorch bias_act; arguments already resolved."""
    if b is not None:
        shape = [1] * x.ndim
        shape[dim] = -1
        x = x + b.to(x.dtype).reshape(shape)
    x = _activate(x, act, alpha)
    if gain != 1:
        x = x * gain
    if clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x
