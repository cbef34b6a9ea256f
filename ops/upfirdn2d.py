"""upfirdn2d: upsample, pad, FIR-filter and downsample a batch of 2-D images.

The public entry point is `upfirdn2d`; `setup_filter`, `upsample2d`,
`downsample2d` and `filter2d` are the thin helpers the networks use. Two
implementations sit behind the `impl` switch:

- 'ref': pure PyTorch built from conv2d / conv_transpose2d, so autograd gives
  every derivative for free. It avoids the work a literal zero-insertion
  formulation wastes: upsampling runs as a strided transposed convolution,
  downsampling as a strided convolution, and long 1-D filters as two 1-D
  passes.
- 'cuda': the kernel in csrc/upfirdn2d.cu, registered through torch.library
  (see ops/_custom.py) with its own backward, so it has first and second
  derivatives and does not break torch.compile graphs.

Semantics (identical in both): insert `up - 1` zeros after every pixel, pad
(negative padding crops), convolve with `f` (a true convolution: the filter is
flipped unless `flip_filter`), multiply by `gain`, keep every `down`-th pixel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ops import _dispatch

__all__ = ["setup_filter", "upfirdn2d", "upsample2d", "downsample2d", "filter2d"]


# ----------------------------------------------------------------------------
# Argument parsing.


def _parse_scaling(scaling) -> tuple[int, int]:
    """Returns (sx, sy) from an int or an [x, y] pair."""
    if isinstance(scaling, int):
        scaling = [scaling, scaling]
    sx, sy = (int(s) for s in scaling)
    if sx < 1 or sy < 1:
        raise ValueError(f"up/down factors must be >= 1, got {scaling}")
    return sx, sy


def _parse_padding(padding) -> tuple[int, int, int, int]:
    """Returns (x0, x1, y0, y1) from an int, [x, y] or [x0, x1, y0, y1]."""
    if isinstance(padding, int):
        padding = [padding, padding]
    padding = [int(p) for p in padding]
    if len(padding) == 2:
        px, py = padding
        padding = [px, px, py, py]
    if len(padding) != 4:
        raise ValueError(f"padding must be an int, [x, y] or [x0, x1, y0, y1], got {padding}")
    return tuple(padding)


def _filter_size(f: torch.Tensor | None) -> tuple[int, int]:
    """Returns (width, height) of a filter given as None, 1-D or 2-D tensor."""
    if f is None:
        return 1, 1
    if f.ndim not in (1, 2):
        raise ValueError(f"filter must be 1-D or 2-D, got shape {tuple(f.shape)}")
    fw = f.shape[-1]
    fh = f.shape[0]
    return fw, fh


def setup_filter(f, device=torch.device("cpu"), normalize=True, flip_filter=False, gain=1, separable=None):
    """Turns a list of taps into a filter tensor for upfirdn2d and friends.

    Args:
        f:           Taps: None (identity), a number, a 1-D or a 2-D array-like.
        device:      Device of the result.
        normalize:   Divide by the sum of the taps, so the filter keeps the mean.
        flip_filter: Flip the result (see upfirdn2d).
        gain:        Overall gain; a separable filter gets gain**0.5 per axis.
        separable:   Keep a 1-D filter 1-D (separable). None = only when it has
                     at least 8 taps, as StyleGAN2 does; shorter ones become
                     outer(f, f), which the CUDA kernel handles in one pass.

    Returns:
        float32 tensor of shape [taps] (separable) or [height, width].
    """
    if f is None:
        f = 1
    f = torch.as_tensor(f, dtype=torch.float32)
    if f.ndim == 0:
        f = f[None]
    if f.ndim not in (1, 2) or f.numel() == 0:
        raise ValueError(f"filter must be a non-empty 1-D or 2-D array, got shape {tuple(f.shape)}")
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if f.ndim != (1 if separable else 2):
        raise ValueError("a separable filter must be 1-D")
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f.to(device)


# ----------------------------------------------------------------------------
# Public op.


def upfirdn2d(x, f, up=1, down=1, padding=0, gain=1, flip_filter=False, impl=None):
    """Upsample, pad, FIR-filter and downsample a batch of 2-D images.

    Args:
        x:           [N, C, H, W] tensor (any memory format).
        f:           Filter: None (identity), 1-D [taps] (the separable filter
                     outer(f, f)) or 2-D [height, width]. On x's device;
                     not differentiated.
        up:          Upsampling factor, int or [x, y]: `up - 1` zeros are
                     inserted after every pixel.
        down:        Downsampling factor, int or [x, y]: every `down`-th pixel
                     of the filtered image is kept, starting with the first.
        padding:     Padding of the upsampled image, int, [x, y] or
                     [x0, x1, y0, y1]; negative values crop.
        gain:        Overall scaling of the result.
        flip_filter: False = true convolution (filter flipped), True = correlation.
        impl:        'cuda', 'ref' or None (cuda when x is on a GPU and the
                     extension is available).

    Returns:
        [N, C, (H * up_y + y0 + y1 - fh + down_y) // down_y,
               (W * up_x + x0 + x1 - fw + down_x) // down_x] tensor.
    """
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d expects a 4-D [N, C, H, W] input, got shape {tuple(x.shape)}")
    if f is not None and f.device != x.device:
        # Moving it silently would copy the filter to the GPU on every call.
        raise ValueError(f"upfirdn2d: the filter is on {f.device} but x is on {x.device}; "
                         f"make it with setup_filter(..., device=x.device) or register it as a buffer")
    upx, upy = _parse_scaling(up)
    downx, downy = _parse_scaling(down)
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    fw, fh = _filter_size(f)
    out_h = (x.shape[2] * upy + pady0 + pady1 - fh + downy) // downy
    out_w = (x.shape[3] * upx + padx0 + padx1 - fw + downx) // downx
    if out_h < 1 or out_w < 1:
        raise ValueError(f"upfirdn2d output would be empty ({out_h}x{out_w}) for input {tuple(x.shape)}")
    args = (upx, upy, downx, downy, padx0, padx1, pady0, pady1, bool(flip_filter), float(gain))
    if _dispatch.use_cuda(x, impl):
        from ops import _custom

        return _custom.upfirdn2d_cuda(x, f, *args)
    return _upfirdn2d_ref(x, f, *args)


# ----------------------------------------------------------------------------
# Reference implementation.


# Up to this many taps a 1-D filter runs faster as one 2-D pass with
# outer(f, f) than as two 1-D passes (measured with benchmarks/ops_speed.py on
# CPU: each extra pass costs more than the taps it saves).
_MAX_TAPS_AS_2D = 8


def _upfirdn2d_ref(x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip_filter, gain):
    """Pure-PyTorch upfirdn2d; arguments already parsed."""
    if f is None:
        f = torch.ones([1, 1], dtype=x.dtype, device=x.device)
    f = f.to(device=x.device, dtype=x.dtype)
    # `g` is the filter in true-convolution orientation, `flip(g)` in the
    # cross-correlation orientation that conv2d uses.
    g = f if not flip_filter else f.flip(list(range(f.ndim)))
    if g.ndim == 1 and g.shape[0] <= _MAX_TAPS_AS_2D:
        g = torch.outer(g, g)
    if g.ndim == 2:
        return _upfirdn_pass(x, g * gain, upx, upy, downx, downy, padx0, padx1, pady0, pady1)
    # Long separable filter: one pass along x, then one along y.
    x = _upfirdn_pass(x, g[None, :] * gain, upx, 1, downx, 1, padx0, padx1, 0, 0)
    return _upfirdn_pass(x, g[:, None], 1, upy, 1, downy, 0, 0, pady0, pady1)


def _upfirdn_pass(x, g, upx, upy, downx, downy, padx0, padx1, pady0, pady1):
    """One depthwise 2-D pass with the true-convolution filter g [kh, kw]."""
    # A plain int even while tracing: the depthwise filter's shape must be static for ONNX export.
    channels = int(x.shape[1])
    kh, kw = g.shape
    if upx == 1 and upy == 1:
        # Pad (or crop), then a strided cross-correlation with flip(g).
        w = g.flip([0, 1])[None, None].expand(channels, 1, kh, kw)
        x, conv_pad = _split_padding(x, padx0, padx1, pady0, pady1)
        return F.conv2d(x, w, stride=(downy, downx), padding=conv_pad, groups=channels)

    # conv_transpose2d with stride `up` is the full true convolution of the
    # zero-inserted image: full[i] = sum_j x[j] g[i - up * j], length
    # (n - 1) * up + k. upfirdn's pre-downsampling output is full[i + k - 1 - pad0],
    # i.e. full padded by (pad0 - k + 1, pad1 + up - k).
    w = g[None, None].expand(channels, 1, kh, kw)
    ex0, ex1 = padx0 - kw + 1, padx1 + upx - kw
    ey0, ey1 = pady0 - kh + 1, pady1 + upy - kh
    # conv_transpose2d's own padding crops equally on both sides; use it for
    # the common part of the crop and F.pad for the rest.
    cx = max(min(-ex0, -ex1), 0)
    cy = max(min(-ey0, -ey1), 0)
    x = F.conv_transpose2d(x, w, stride=(upy, upx), padding=(cy, cx), groups=channels)
    x = _pad(x, [ex0 + cx, ex1 + cx, ey0 + cy, ey1 + cy])
    if downx > 1 or downy > 1:
        x = x[:, :, ::downy, ::downx]
    return x


def _split_padding(x, padx0, padx1, pady0, pady1):
    """Applies the asymmetric or negative part of a padding to x.

    Returns the tensor and the symmetric, non-negative (py, px) padding that
    remains for conv2d to apply (which does it without a copy).
    """
    px = max(min(padx0, padx1), 0)
    py = max(min(pady0, pady1), 0)
    return _pad(x, [padx0 - px, padx1 - px, pady0 - py, pady1 - py]), (py, px)


def _pad(x, pads):
    """Pads [x0, x1, y0, y1]; negative values crop, even past the far edge
    (e.g. [-5, 3] on 4 pixels leaves 2 zeros), which F.pad cannot do in one go."""
    if min(pads) >= 0:
        return F.pad(x, pads) if max(pads) > 0 else x
    if max(pads) > 0:
        x = F.pad(x, [max(p, 0) for p in pads])
    x0, x1, y0, y1 = (max(-p, 0) for p in pads)
    return x[:, :, y0 : x.shape[2] - y1, x0 : x.shape[3] - x1]


# ----------------------------------------------------------------------------
# Helpers.


def filter2d(x, f, padding=0, flip_filter=False, gain=1, impl=None):
    """Filters x with f, keeping its size (plus `padding`).

    Args/Returns: as upfirdn2d; padding is added to the size-preserving one.
    """
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    fw, fh = _filter_size(f)
    p = [padx0 + fw // 2, padx1 + (fw - 1) // 2, pady0 + fh // 2, pady1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)


def upsample2d(x, f, up=2, padding=0, flip_filter=False, gain=1, impl=None):
    """Upsamples x by `up` with the interpolation filter f.

    The result is multiplied by up_x * up_y (times `gain`) so that a
    normalized filter keeps the image mean. Output size is [H * up_y, W * up_x]
    (plus `padding`).
    """
    upx, upy = _parse_scaling(up)
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    fw, fh = _filter_size(f)
    p = [
        padx0 + (fw + upx - 1) // 2,
        padx1 + (fw - upx) // 2,
        pady0 + (fh + upy - 1) // 2,
        pady1 + (fh - upy) // 2,
    ]
    return upfirdn2d(x, f, up=up, padding=p, flip_filter=flip_filter, gain=gain * upx * upy, impl=impl)


def downsample2d(x, f, down=2, padding=0, flip_filter=False, gain=1, impl=None):
    """Downsamples x by `down` after low-pass filtering with f.

    Output size is [H // down_y, W // down_x] (plus `padding`) for even sizes.
    """
    downx, downy = _parse_scaling(down)
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    fw, fh = _filter_size(f)
    p = [
        padx0 + (fw - downx + 1) // 2,
        padx1 + (fw - downx) // 2,
        pady0 + (fh - downy + 1) // 2,
        pady1 + (fh - downy) // 2,
    ]
    return upfirdn2d(x, f, down=down, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)
