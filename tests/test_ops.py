"""Tests for ops/: the reference implementations against independent
formulations, their derivatives, and the helpers the networks use.

Run: python -m pytest tests/test_ops.py -q
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import ops
from ops.upfirdn2d import _parse_padding, _parse_scaling


# ----------------------------------------------------------------------------
# Independent formulations.


def upfirdn2d_loops(x, f, up=1, down=1, padding=0, gain=1, flip_filter=False):
    """upfirdn2d straight from its definition, one output pixel at a time."""
    upx, upy = _parse_scaling(up)
    downx, downy = _parse_scaling(down)
    px0, px1, py0, py1 = _parse_padding(padding)
    xs = x.detach().double().numpy()
    f = np.ones((1, 1)) if f is None else f.detach().double().numpy()
    if f.ndim == 1:
        f = np.outer(f, f)
    # A true convolution reads the filter backwards.
    taps = f if flip_filter else f[::-1, ::-1]
    n, c, h, w = xs.shape
    fh, fw = f.shape
    out_h = (h * upy + py0 + py1 - fh + downy) // downy
    out_w = (w * upx + px0 + px1 - fw + downx) // downx
    if out_h < 1 or out_w < 1:
        return None
    out = np.zeros((n, c, out_h, out_w))
    for oy in range(out_h):
        for ox in range(out_w):
            for ky in range(fh):
                for kx in range(fw):
                    # Position in the zero-inserted, padded image.
                    jy = oy * downy + ky - py0
                    jx = ox * downx + kx - px0
                    if jy < 0 or jx < 0 or jy % upy or jx % upx:
                        continue
                    iy, ix = jy // upy, jx // upx
                    if iy < h and ix < w:
                        out[:, :, oy, ox] += taps[ky, kx] * xs[:, :, iy, ix]
    return torch.from_numpy(out * gain)


def bias_act_formula(x, b, dim, act, alpha, gain, clamp):
    """bias_act from closed-form expressions in numpy."""
    v = x.detach().double().numpy()
    if b is not None:
        shape = [1] * v.ndim
        shape[dim] = -1
        v = v + b.detach().double().numpy().reshape(shape)
    selu_scale, selu_alpha = 1.0507009873554805, 1.6732632423543772
    y = {
        "linear": lambda t: t,
        "relu": lambda t: np.maximum(t, 0),
        "lrelu": lambda t: np.where(t > 0, t, t * (0.2 if alpha is None else alpha)),
        "tanh": np.tanh,
        "sigmoid": lambda t: 1 / (1 + np.exp(-t)),
        "elu": lambda t: np.where(t > 0, t, (1.0 if alpha is None else alpha) * np.expm1(t)),
        "selu": lambda t: selu_scale * np.where(t > 0, t, selu_alpha * np.expm1(t)),
        "softplus": lambda t: np.log1p(np.exp(t)),
        "swish": lambda t: t / (1 + np.exp(-t)),
    }[act](v)
    if gain is None:
        gain = math.sqrt(2) if act in ("relu", "lrelu") else 1
    y = y * gain
    if clamp is not None:
        y = np.clip(y, -clamp, clamp)
    return torch.from_numpy(y)


def conv2d_resample_composed(x, w, f, up, down, padding, groups, flip_weight, flip_filter):
    """conv2d_resample as the unfused chain its docstring defines it by."""
    fw = 1 if f is None else f.shape[-1]
    fh = 1 if f is None else f.shape[0]
    px0, px1, py0, py1 = _parse_padding(padding)
    if up > 1:
        px0, px1, py0, py1 = px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2, py0 + (fh + up - 1) // 2, py1 + (fh - up) // 2
    if down > 1:
        px0, px1 = px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2
        py0, py1 = py0 + (fh - down + 1) // 2, py1 + (fh - down) // 2
    y = upfirdn2d_loops(x, f if up > 1 else None, up=up, padding=[px0, px1, py0, py1], gain=up**2, flip_filter=flip_filter)
    y = F.conv2d(y, (w if flip_weight else w.flip([2, 3])).double(), groups=groups)
    if down > 1:
        y = upfirdn2d_loops(y, f, down=down, flip_filter=flip_filter)
    return y


def _double(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64)


# ----------------------------------------------------------------------------
# upfirdn2d reference.

FILTERS = {
    "none": None,
    "1d3": [1.0, 2.0, -0.5],
    "1d4": [1.0, 3.0, 3.0, 1.0],
    "1d10": [1.0, -2.0, 3.0, 0.5, 4.0, 1.0, 2.0, -1.0, 0.5, 1.5],
    "2d3x2": [[1.0, -2.0], [0.5, 3.0], [2.0, 1.0]],
    "2d4x4": "random4x4",
}


def _filter(name):
    spec = FILTERS[name]
    if spec is None:
        return None
    if spec == "random4x4":
        return _double(4, 4, seed=7)
    return torch.tensor(spec, dtype=torch.float64)


@pytest.mark.parametrize("fname", list(FILTERS))
@pytest.mark.parametrize("up", [1, 2, [3, 1]])
@pytest.mark.parametrize("down", [1, 2, [1, 3]])
@pytest.mark.parametrize("padding", [0, [2, 1], [3, -2, -1, 2]])
def test_upfirdn2d_ref_matches_loops(fname, up, down, padding):
    f = _filter(fname)
    x = _double(2, 3, 5, 6)
    for flip_filter, gain in [(False, 1), (True, 1.5)]:
        expected = upfirdn2d_loops(x, f, up, down, padding, gain, flip_filter)
        if expected is None:
            with pytest.raises(ValueError):
                ops.upfirdn2d(x, f, up=up, down=down, padding=padding, impl="ref")
            continue
        y = ops.upfirdn2d(x, f, up=up, down=down, padding=padding, gain=gain, flip_filter=flip_filter, impl="ref")
        assert y.shape == expected.shape
        torch.testing.assert_close(y, expected, rtol=1e-10, atol=1e-10)


def test_upfirdn2d_flip_is_true_convolution():
    # An impulse through a true convolution reproduces the filter, unflipped.
    x = torch.zeros(1, 1, 5, 5, dtype=torch.float64)
    x[0, 0, 2, 2] = 1
    f = _double(3, 3, seed=1)
    y = ops.upfirdn2d(x, f, padding=1, impl="ref")
    torch.testing.assert_close(y[0, 0, 1:4, 1:4], f)
    y = ops.upfirdn2d(x, f, padding=1, flip_filter=True, impl="ref")
    torch.testing.assert_close(y[0, 0, 1:4, 1:4], f.flip([0, 1]))


@pytest.mark.parametrize("taps", [4, 9])
def test_upfirdn2d_separable_equals_outer(taps):
    f = _double(taps, seed=taps)
    x = _double(2, 2, 7, 5)
    kwargs = dict(up=2, down=[1, 2], padding=[1, 2, -1, 3], gain=3.0)
    torch.testing.assert_close(ops.upfirdn2d(x, f, **kwargs), ops.upfirdn2d(x, torch.outer(f, f), **kwargs))


def test_upfirdn2d_channels_last_and_float32():
    f = ops.setup_filter([1, 3, 3, 1])
    x = _double(2, 4, 6, 6).float()
    expected = upfirdn2d_loops(x, f, up=2, padding=[2, 1, 2, 1], gain=4).float()
    y = ops.upfirdn2d(x.contiguous(memory_format=torch.channels_last), f, up=2, padding=[2, 1, 2, 1], gain=4)
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)


def test_upfirdn2d_rejects_bad_arguments():
    x = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError):
        ops.upfirdn2d(x, None, padding=[1, 2, 3])
    with pytest.raises(ValueError):
        ops.upfirdn2d(x, None, up=0)
    with pytest.raises(ValueError):
        ops.upfirdn2d(x, None, impl="triton")
    with pytest.raises(ValueError):
        ops.upfirdn2d(x, torch.ones(3, 3), padding=-1)


# ----------------------------------------------------------------------------
# Helpers.


def test_setup_filter_conventions():
    f = ops.setup_filter([1, 3, 3, 1])
    assert f.shape == (4, 4) and f.dtype == torch.float32
    torch.testing.assert_close(f.sum(), torch.tensor(1.0))
    # Eight taps or more stay separable by default; the gain is split over the axes.
    f8 = ops.setup_filter([1] * 8, gain=4)
    assert f8.shape == (8,)
    torch.testing.assert_close(f8.sum(), torch.tensor(2.0))
    f2d = ops.setup_filter([1, 2, 1], gain=4)
    torch.testing.assert_close(f2d.sum(), torch.tensor(4.0))
    assert ops.setup_filter(None).shape == (1, 1)
    torch.testing.assert_close(ops.setup_filter([[1, 2], [3, 4]], normalize=False, flip_filter=True), torch.tensor([[4.0, 3], [2, 1]]))


@pytest.mark.parametrize("separable", [False, True])
def test_resampling_helpers_keep_sizes_and_mean(separable):
    f = ops.setup_filter([1, 3, 3, 1], separable=separable)
    x = torch.ones(1, 2, 8, 6)
    up = ops.upsample2d(x, f)
    down = ops.downsample2d(x, f)
    same = ops.filter2d(x, f)
    assert up.shape == (1, 2, 16, 12) and down.shape == (1, 2, 4, 3) and same.shape == x.shape
    # Away from the zero-padded border a normalized filter keeps a constant image.
    torch.testing.assert_close(up[..., 2:-2, 2:-2], torch.ones_like(up[..., 2:-2, 2:-2]))
    torch.testing.assert_close(down[..., 1:-1, 1:-1], torch.ones_like(down[..., 1:-1, 1:-1]))
    torch.testing.assert_close(same[..., 2:-2, 2:-2], torch.ones_like(same[..., 2:-2, 2:-2]))
    assert ops.upsample2d(x, f, up=[2, 1]).shape == (1, 2, 8, 12)
    assert ops.filter2d(x, f, padding=1).shape == (1, 2, 10, 8)


def test_helpers_match_explicit_upfirdn2d():
    f = _double(4, 4, seed=3)
    x = _double(1, 2, 5, 5)
    torch.testing.assert_close(ops.upsample2d(x, f), upfirdn2d_loops(x, f, up=2, padding=[2, 1, 2, 1], gain=4))
    torch.testing.assert_close(ops.downsample2d(x, f), upfirdn2d_loops(x, f, down=2, padding=1))
    torch.testing.assert_close(ops.filter2d(x, f), upfirdn2d_loops(x, f, padding=[2, 1, 2, 1]))


# ----------------------------------------------------------------------------
# conv2d_resample.


@pytest.mark.parametrize("kernel", [(1, 1), (3, 3), (3, 2)])
@pytest.mark.parametrize("up,down", [(1, 1), (2, 1), (1, 2), (2, 2), (3, 1)])
@pytest.mark.parametrize("groups", [1, 2])
def test_conv2d_resample_matches_composition(kernel, up, down, groups):
    f = ops.setup_filter([1, 3, 3, 1]).double()
    x = _double(2, 4, 6, 7)
    w = _double(6, 4 // groups, *kernel, seed=1)
    for padding, flip_weight, flip_filter in [(0, True, False), (1, False, True), ([1, 0, 2, -1], True, True)]:
        expected = conv2d_resample_composed(x, w, f, up, down, padding, groups, flip_weight, flip_filter)
        y = ops.conv2d_resample(x, w, f, up=up, down=down, padding=padding, groups=groups, flip_weight=flip_weight, flip_filter=flip_filter)
        assert y.shape == expected.shape
        torch.testing.assert_close(y, expected, rtol=1e-9, atol=1e-9)


def test_conv2d_resample_stylegan_shapes():
    f = ops.setup_filter([1, 3, 3, 1])
    x = torch.randn(2, 8, 8, 8)
    # Modulated convolution: batch folded into groups.
    w = torch.randn(2 * 4, 8, 3, 3)
    y = ops.conv2d_resample(x.reshape(1, 16, 8, 8), w, f, up=2, padding=1, groups=2, flip_weight=False)
    assert y.shape == (1, 8, 16, 16)
    assert ops.conv2d_resample(x, torch.randn(4, 8, 3, 3), f, down=2, padding=1).shape == (2, 4, 4, 4)
    assert ops.conv2d_resample(x, torch.randn(4, 8, 1, 1), f, down=2).shape == (2, 4, 4, 4)


# ----------------------------------------------------------------------------
# bias_act reference.


@pytest.mark.parametrize("act", list(ops.activation_funcs))
@pytest.mark.parametrize("clamp", [None, 0.5])
def test_bias_act_ref_matches_formula(act, clamp):
    x = _double(2, 3, 4, 5) * 2
    b = _double(3, seed=1)
    for dim, bias, alpha, gain in [(1, b, None, None), (-1, _double(5, seed=2), 0.3, 0.7), (2, None, None, 2.0)]:
        y = ops.bias_act(x, bias, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp, impl="ref")
        expected = bias_act_formula(x, bias, dim % x.ndim, act, alpha if act in ("lrelu", "elu") else None, gain, clamp)
        torch.testing.assert_close(y, expected, rtol=1e-10, atol=1e-10)


def test_bias_act_defaults_and_errors():
    x = torch.tensor([[-1.0, 2.0]])
    torch.testing.assert_close(ops.bias_act(x, act="lrelu"), torch.tensor([[-0.2, 2.0]]) * math.sqrt(2))
    torch.testing.assert_close(ops.bias_act(x, torch.tensor([1.0, 1.0]), act="relu"), torch.tensor([[0.0, 3.0]]) * math.sqrt(2))
    torch.testing.assert_close(ops.bias_act(x, act="linear", clamp=1.5), torch.tensor([[-1.0, 1.5]]))
    with pytest.raises(ValueError):
        ops.bias_act(x, act="gelu")
    with pytest.raises(ValueError):
        ops.bias_act(x, torch.zeros(3))


def test_bias_act_channels_last():
    x = _double(2, 3, 4, 4).contiguous(memory_format=torch.channels_last)
    b = _double(3, seed=1)
    y = ops.bias_act(x, b, act="lrelu")
    torch.testing.assert_close(y, bias_act_formula(x, b, 1, "lrelu", None, None, None))


# ----------------------------------------------------------------------------
# Derivatives of the reference (float64).


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(f=[1.0, 3.0, 3.0, 1.0], up=2, padding=[2, 1, 2, 1]),
        dict(f=[[1.0, 2.0], [0.5, -1.0], [3.0, 1.0]], down=2, padding=[1, 0, -1, 2], flip_filter=True),
        dict(f=[1.0, 2.0, 1.0], up=[2, 1], down=[1, 2], padding=1, gain=2.0),
    ],
    ids=["up-1d", "down-2d-crop", "mixed"],
)
def test_upfirdn2d_ref_gradgradcheck(kwargs):
    kwargs = dict(kwargs)
    f = torch.tensor(kwargs.pop("f"), dtype=torch.float64)
    x = _double(1, 2, 4, 5).requires_grad_()
    fn = lambda t: ops.upfirdn2d(t, f, impl="ref", **kwargs)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


@pytest.mark.parametrize("act", list(ops.activation_funcs))
def test_bias_act_ref_gradgradcheck(act):
    # Keep values away from the kinks of relu/lrelu/clamp, where finite
    # differences are meaningless.
    x = _double(2, 3, 3, 2)
    x = (x + 0.1 * torch.sign(x)).requires_grad_()
    b = (_double(3, seed=1) * 0.01).requires_grad_()
    fn = lambda t, bias: ops.bias_act(t, bias, act=act, clamp=10.0, impl="ref")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))


def test_conv2d_resample_gradgradcheck():
    f = ops.setup_filter([1, 3, 3, 1]).double()
    x = _double(1, 2, 4, 4).requires_grad_()
    w = _double(2, 2, 3, 3, seed=1).requires_grad_()
    for up, down in [(2, 1), (1, 2)]:
        fn = lambda a, b: ops.conv2d_resample(a, b, f, up=up, down=down, padding=1)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (x, w))
        assert torch.autograd.gradgradcheck(fn, (x, w))
