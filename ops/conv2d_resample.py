"""conv2d_resample: 2-D convolution fused with FIR up/downsampling.

`conv2d_resample(x, w, f, up, down, padding, groups)` gives the same result as

    y = upfirdn2d(x, f if up > 1 else None, up=up, padding=P, gain=up**2)
    y = conv2d(y, w, groups=groups)          # correlation; flipped w if not flip_weight
    y = upfirdn2d(y, f, down=down)           # only when down > 1

where P is `padding` plus the padding that keeps the resampling centred
(the StyleGAN2 convention, so an up=2, 3x3, padding=1 layer exactly doubles
the size and down=2 halves it). It never materialises the zero-inserted
image: upsampling runs as a strided transposed convolution followed by the
filter, downsampling as the filter followed by a strided convolution, and 1x1
kernels move the (cheap) convolution to the low-resolution side.
"""

from __future__ import annotations

import torch.nn.functional as F

from ops.upfirdn2d import _filter_size, _parse_padding, upfirdn2d

__all__ = ["conv2d_resample"]


def _conv2d(x, w, stride=1, padding=0, groups=1, transpose=False, flip_weight=True):
    """conv2d / conv_transpose2d with the weight in correlation orientation when
    flip_weight is True (plain conv2d), or flipped otherwise."""
    if not flip_weight:
        w = w.flip([2, 3])
    if transpose:
        return F.conv_transpose2d(x, w, stride=stride, padding=padding, groups=groups)
    return F.conv2d(x, w, stride=stride, padding=padding, groups=groups)


def conv2d_resample(x, w, f=None, up=1, down=1, padding=0, groups=1, flip_weight=True, flip_filter=False, impl=None):
    """2-D convolution with optional FIR upsampling before and downsampling after.

    Args:
        x:           [N, in_channels, H, W] input.
        w:           [out_channels, in_channels // groups, kh, kw] weight.
        f:           FIR filter for the resampling (see setup_filter); None = identity.
        up:          Integer upsampling factor.
        down:        Integer downsampling factor.
        padding:     Padding of the (upsampled) image, int, [x, y] or [x0, x1, y0, y1].
        groups:      Groups of the convolution (modulated convolution folds the
                     batch into groups).
        flip_weight: True = cross-correlation like conv2d, False = true convolution.
        flip_filter: Passed on to upfirdn2d.
        impl:        Implementation of the filtering steps (see upfirdn2d).

    Returns:
        [N, out_channels, H', W'] tensor.
    """
    if x.ndim != 4 or w.ndim != 4:
        raise ValueError(f"conv2d_resample expects 4-D x and w, got {tuple(x.shape)} and {tuple(w.shape)}")
    if not (isinstance(up, int) and isinstance(down, int) and up >= 1 and down >= 1):
        raise ValueError(f"up and down must be positive ints, got {up!r}, {down!r}")
    out_channels, in_per_group, kh, kw = w.shape
    if x.shape[1] != in_per_group * groups or out_channels % groups:
        raise ValueError(f"weight {tuple(w.shape)} with groups={groups} does not fit input {tuple(x.shape)}")
    fw, fh = _filter_size(f)
    px0, px1, py0, py1 = _parse_padding(padding)

    # Padding that centres the resampling filter.
    if up > 1:
        px0, px1 = px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2
        py0, py1 = py0 + (fh + up - 1) // 2, py1 + (fh - up) // 2
    if down > 1:
        px0, px1 = px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2
        py0, py1 = py0 + (fh - down + 1) // 2, py1 + (fh - down) // 2
    pad = [px0, px1, py0, py1]
    pointwise = kw == 1 and kh == 1

    if up == 1 and down == 1:
        if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
            return _conv2d(x, w, padding=[py0, px0], groups=groups, flip_weight=flip_weight)
        x = F.pad(x, pad)
        return _conv2d(x, w, groups=groups, flip_weight=flip_weight)

    if up == 1:
        if pointwise:
            # Filter and subsample first, then the 1x1 convolution on 1/down^2 the pixels.
            x = upfirdn2d(x, f, down=down, padding=pad, flip_filter=flip_filter, impl=impl)
            return _conv2d(x, w, groups=groups, flip_weight=flip_weight)
        x = upfirdn2d(x, f, padding=pad, flip_filter=flip_filter, impl=impl)
        return _conv2d(x, w, stride=down, groups=groups, flip_weight=flip_weight)

    if pointwise and down == 1:
        x = _conv2d(x, w, groups=groups, flip_weight=flip_weight)
        return upfirdn2d(x, f, up=up, padding=pad, gain=up**2, flip_filter=flip_filter, impl=impl)

    # Upsampling: conv_transpose2d with stride `up` is the full convolution of
    # the zero-inserted image with its weight. Filtering commutes with it, so
    # the filter runs afterwards with its padding shifted by the kernel size.
    if groups == 1:
        wt = w.transpose(0, 1)
    else:
        wt = w.reshape(groups, out_channels // groups, in_per_group, kh, kw).transpose(1, 2)
        wt = wt.reshape(groups * in_per_group, out_channels // groups, kh, kw)
    px0, px1 = px0 - (kw - 1), px1 - (kw - up)
    py0, py1 = py0 - (kh - 1), py1 - (kh - up)
    # Let the transposed convolution do the symmetric part of any crop.
    cx = max(min(-px0, -px1), 0)
    cy = max(min(-py0, -py1), 0)
    x = _conv2d(x, wt, stride=up, padding=[cy, cx], groups=groups, transpose=True, flip_weight=not flip_weight)
    x = upfirdn2d(x, f, padding=[px0 + cx, px1 + cx, py0 + cy, py1 + cy], gain=up**2, flip_filter=flip_filter, impl=impl)
    if down > 1:
        x = upfirdn2d(x, f, down=down, flip_filter=flip_filter, impl=impl)
    return x
