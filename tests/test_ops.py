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
from ops import _build, _custom, _dispatch
from ops.upfirdn2d import _parse_padding, _parse_scaling

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(autouse=True)
def true_float32(monkeypatch):
    """cuDNN convolutions and matmuls in true float32 on a GPU: TF32 (on by default for cuDNN) keeps 10 bits
    of mantissa, which the float32 tolerances below do not allow for."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)


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


def test_upfirdn2d_crop_past_the_far_edge():
    # Cropping 8 columns of 6 and padding 4 leaves zeros only.
    x = _double(1, 1, 3, 6)
    for impl_pad in ([-8, 4, 0, 0], [4, -8, 1, -1]):
        y = ops.upfirdn2d(x, None, padding=impl_pad)
        torch.testing.assert_close(y, upfirdn2d_loops(x, None, padding=impl_pad))
        assert y.shape[3] == 2 and not y.any()


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
    flipped = ops.setup_filter([[1, 2], [3, 4]], normalize=False, flip_filter=True)
    torch.testing.assert_close(flipped, torch.tensor([[4.0, 3], [2, 1]]))


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
        y = ops.conv2d_resample(
            x, w, f, up=up, down=down, padding=padding, groups=groups, flip_weight=flip_weight, flip_filter=flip_filter
        )
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
    assert torch.autograd.gradcheck(fn, (x,), fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, (x,), fast_mode=True)


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
        assert torch.autograd.gradcheck(fn, (x, w), fast_mode=True)
        assert torch.autograd.gradgradcheck(fn, (x, w), fast_mode=True)


# ----------------------------------------------------------------------------
# The torch.library ops behind impl='cuda'. On CPU tensors they run the
# reference, which checks their schemas, fake kernels and backward formulas
# (the same formulas the CUDA kernels are differentiated with).

UPFIRDN2D_OP_CASES = [
    # f, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1, flip_filter, gain
    ("4x4", 2, 2, 1, 1, 2, 1, 2, 1, False, 4.0),
    ("4x4", 1, 1, 2, 2, 1, 1, 1, 1, False, 1.0),
    ("3x2", 2, 1, 1, 3, 1, -1, 2, 0, True, 1.5),
    ("1d5", 3, 2, 2, 1, -1, 3, 2, 2, False, 2.0),
]


def _op_filter(name):
    return {"4x4": ops.setup_filter([1, 3, 3, 1]), "3x2": _double(3, 2, seed=4).float(), "1d5": _double(5, seed=5).float()}[name]


@pytest.mark.parametrize("case", UPFIRDN2D_OP_CASES, ids=lambda c: f"{c[0]}-up{c[1]}{c[2]}-down{c[3]}{c[4]}")
def test_registered_upfirdn2d_derivatives(case):
    f = _op_filter(case[0]).double()
    x = _double(1, 2, 5, 4).requires_grad_()
    fn = lambda t: _custom.upfirdn2d_cuda(t, f, *case[1:])  # noqa: E731
    up, down, padding, flip_filter, gain = case[1:3], case[3:5], case[5:9], case[9], case[10]
    expected = ops.upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain, impl="ref")
    torch.testing.assert_close(fn(x), expected)
    assert torch.autograd.gradcheck(fn, (x,), fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, (x,), fast_mode=True)


@pytest.mark.parametrize("act", list(ops.activation_funcs))
def test_registered_bias_act_derivatives(act):
    x = _double(2, 3, 2, 2)
    x = (x + 0.1 * torch.sign(x)).requires_grad_()
    b = (_double(3, seed=1) * 0.01).requires_grad_()
    for clamp in (-1.0, 0.7):
        fn = lambda t, bias: _custom.bias_act_cuda(t, bias, 1, act, 0.25, 1.3, clamp)  # noqa: E731
        torch.testing.assert_close(fn(x, b), ops.bias_act(x, b, act=act, alpha=0.25, gain=1.3, clamp=clamp, impl="ref"))
        assert torch.autograd.gradcheck(fn, (x, b))
        assert torch.autograd.gradgradcheck(fn, (x, b))


def test_registered_ops_opcheck():
    x = _double(2, 3, 5, 5).requires_grad_()
    x_cl = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    f = _op_filter("4x4").double()
    b = _double(3, seed=1).requires_grad_()
    cases = [
        (torch.ops.smallgan.upfirdn2d.default, (x, f, 2, 2, 1, 1, 2, 1, 2, 1, False, 4.0)),
        (torch.ops.smallgan.upfirdn2d.default, (x_cl, f, 1, 1, 2, 2, 1, 1, 1, 1, True, 1.0)),
        (torch.ops.smallgan.bias_act.default, (x, b, 1, "lrelu", 0.2, 1.4, -1.0)),
        (torch.ops.smallgan.bias_act.default, (x_cl, None, 1, "swish", 0.0, 1.0, 0.5)),
        (torch.ops.smallgan.bias_act_grad.default, (torch.randn_like(x), x, b, 1, "tanh", 0.0, 1.0, -1.0, 1)),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args, test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))


def test_registered_ops_compile_without_graph_breaks():
    f = ops.setup_filter([1, 3, 3, 1])
    b = torch.randn(3, requires_grad=True)

    def layer(t, bias):
        t = _custom.upfirdn2d_cuda(t, f, 2, 2, 1, 1, 2, 1, 2, 1, False, 4.0)
        return _custom.bias_act_cuda(t, bias, 1, "lrelu", 0.2, 2**0.5, 256.0)

    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager", dynamic=False)
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    y = compiled(x, b)
    torch.testing.assert_close(y, layer(x, b))
    grads = torch.autograd.grad(y.square().sum(), [x, b])
    expected = torch.autograd.grad(layer(x, b).square().sum(), [x, b])
    for g, e in zip(grads, expected):
        torch.testing.assert_close(g, e)


def test_public_ops_compile_without_graph_breaks(monkeypatch):
    # The impl decision (including a failed build and its warning) is made at
    # trace time, so a compiled network keeps one graph.
    def unavailable():
        raise _build.BuildUnavailable("no GPU in this test")

    monkeypatch.setattr(_build, "load", unavailable)
    monkeypatch.setattr(_dispatch, "_warned", True)
    f = ops.setup_filter([1, 3, 3, 1])
    w = torch.randn(4, 3, 3, 3)
    b = torch.randn(4)

    def block(t):
        assert not _dispatch.extension_available()
        t = ops.conv2d_resample(ops.upsample2d(t, f), w, f, down=2, padding=1)
        return ops.bias_act(t, b, act="lrelu", clamp=256)

    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), block(x))


def test_bias_act_third_derivative_is_refused():
    x = _double(3).requires_grad_()
    y = _custom.bias_act_cuda(x, None, 0, "tanh", 0.0, 1.0, -1.0)
    (g,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    (gg,) = torch.autograd.grad(g.sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="first and second derivatives"):
        torch.autograd.grad(gg.sum(), x)


# ----------------------------------------------------------------------------
# GPU: the CUDA kernels against the reference. Skipped without a GPU.

GPU_UPFIRDN2D_CASES = {
    "upsample2d": dict(f="4x4", up=2, padding=[2, 1, 2, 1], gain=4.0),
    "downsample2d": dict(f="4x4", down=2, padding=1),
    "blur": dict(f="4x4", padding=2),
    "mixed": dict(f="3x2", up=[2, 1], down=[1, 3], padding=[1, -1, 2, 0], flip_filter=True, gain=1.5),
    "separable": dict(f="1d5", up=3, down=2, padding=[-1, 3, 2, 2], gain=2.0),
}

# Agreement with a float64 reference: (rtol, atol) per dtype.
GPU_TOLERANCE = {torch.float32: (1e-5, 1e-5), torch.float16: (1e-2, 1e-2), torch.bfloat16: (5e-2, 5e-2)}


@pytest.fixture
def cuda_ext():
    """The built extension; fails (instead of silently testing the reference) when it does not build."""
    assert _dispatch.use_cuda(torch.zeros(1, device="cuda"), "cuda"), "the CUDA extension did not build"


def _gpu_upfirdn2d(x, spec, impl):
    spec = dict(spec)
    f = _op_filter(spec.pop("f")).to(x.device)
    return ops.upfirdn2d(x, f, impl=impl, **spec)


def _scaled_close(actual, expected, dtype):
    rtol, atol = GPU_TOLERANCE[dtype]
    scale = expected.abs().max().clamp(min=1).item()
    torch.testing.assert_close(actual.double(), expected.double(), rtol=rtol, atol=atol * scale)


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("case", list(GPU_UPFIRDN2D_CASES))
def test_gpu_upfirdn2d_matches_reference(cuda_ext, case, channels_last, dtype):
    spec = GPU_UPFIRDN2D_CASES[case]
    x64 = torch.randn(4, 8, 17, 16, dtype=torch.float64, device="cuda")
    x = x64.to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x = x.requires_grad_()
    x64 = x.detach().double().requires_grad_()
    y = _gpu_upfirdn2d(x, spec, "cuda")
    y64 = _gpu_upfirdn2d(x64, spec, "ref")
    assert y.dtype == dtype and y.shape == y64.shape
    _scaled_close(y, y64, dtype)
    # First derivative, and the second through the backward's backward (w.r.t. dy).
    dy64 = torch.randn_like(y64).requires_grad_()
    dy = dy64.detach().to(dtype).requires_grad_()
    (g,) = torch.autograd.grad(y, x, dy, create_graph=True)
    (g64,) = torch.autograd.grad(y64, x64, dy64, create_graph=True)
    _scaled_close(g, g64, dtype)
    v64 = torch.randn_like(g64)
    (h,) = torch.autograd.grad(g, dy, v64.to(dtype))
    (h64,) = torch.autograd.grad(g64, dy64, v64)
    _scaled_close(h, h64, dtype)


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("act", list(ops.activation_funcs))
def test_gpu_bias_act_matches_reference(cuda_ext, act, dtype):
    for clamp, channels_last in [(None, False), (0.8, True)]:
        x64 = torch.randn(4, 8, 6, 5, dtype=torch.float64, device="cuda") * 2
        b64 = torch.randn(8, dtype=torch.float64, device="cuda")
        x = x64.to(dtype)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x, b = x.requires_grad_(), b64.to(dtype).requires_grad_()
        x64, b64 = x.detach().double().requires_grad_(), b.detach().double().requires_grad_()
        y = ops.bias_act(x, b, act=act, clamp=clamp, impl="cuda")
        y64 = ops.bias_act(x64, b64, act=act, clamp=clamp, impl="ref")
        assert y.dtype == dtype and y.is_contiguous(memory_format=torch.channels_last) == channels_last
        _scaled_close(y, y64, dtype)
        dy64 = torch.randn_like(y64).requires_grad_()
        dy = dy64.detach().to(dtype).requires_grad_()
        gx, gb = torch.autograd.grad(y, [x, b], dy, create_graph=True)
        gx64, gb64 = torch.autograd.grad(y64, [x64, b64], dy64, create_graph=True)
        _scaled_close(gx, gx64, dtype)
        _scaled_close(gb, gb64, dtype)
        if act in ("linear", "relu", "lrelu"):
            continue  # zero second derivative w.r.t. x: the graph ends at dy
        v64 = torch.randn_like(gx64)
        hx, hdy = torch.autograd.grad(gx, [x, dy], v64.to(dtype))
        hx64, hdy64 = torch.autograd.grad(gx64, [x64, dy64], v64)
        _scaled_close(hx, hx64, dtype)
        _scaled_close(hdy, hdy64, dtype)


@requires_cuda
def test_gpu_gradgradcheck_float64(cuda_ext):
    f = _op_filter("4x4").double().cuda()
    x = torch.randn(1, 2, 5, 4, dtype=torch.float64, device="cuda", requires_grad=True)
    up = lambda t: ops.upfirdn2d(t, f, up=2, down=[1, 2], padding=[2, 1, 1, 2], impl="cuda")  # noqa: E731
    assert torch.autograd.gradcheck(up, (x,)) and torch.autograd.gradgradcheck(up, (x,))
    b = torch.randn(2, dtype=torch.float64, device="cuda", requires_grad=True)
    act = lambda t, bias: ops.bias_act(t, bias, act="swish", clamp=3.0, impl="cuda")  # noqa: E731
    assert torch.autograd.gradcheck(act, (x, b)) and torch.autograd.gradgradcheck(act, (x, b))


@requires_cuda
def test_gpu_resampling_layers_and_compile(cuda_ext, monkeypatch):
    f = ops.setup_filter([1, 3, 3, 1], device="cuda")
    x = torch.randn(2, 8, 8, 8, device="cuda")
    w = torch.randn(4, 8, 3, 3, device="cuda")
    for kwargs in (dict(up=2, padding=1), dict(down=2, padding=1), dict(down=2)):
        weight = w if kwargs.get("padding") else w[:, :, :1, :1]
        expected = ops.conv2d_resample(x.double(), weight.double(), f.double(), impl="ref", **kwargs)
        _scaled_close(ops.conv2d_resample(x, weight, f, impl="cuda", **kwargs), expected, torch.float32)

    def layer(t):
        return ops.bias_act(ops.upsample2d(t, f, impl="cuda"), act="lrelu", impl="cuda")

    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), layer(x))
