"""Custom ops for the GAN networks: upfirdn2d, bias_act and helpers.

Every op has a pure-PyTorch reference (`impl='ref'`) and a CUDA kernel
(`impl='cuda'`); `impl=None` picks CUDA for GPU tensors when the extension
builds and its kernels pass their first-use check against the reference. Set
SMALLGAN_OPS_IMPL=ref to force the reference. See docs/ops.md.
"""

from ops.bias_act import activation_funcs, bias_act
from ops.conv2d_resample import conv2d_resample
from ops.upfirdn2d import downsample2d, filter2d, setup_filter, upfirdn2d, upsample2d

__all__ = [
    "activation_funcs",
    "bias_act",
    "conv2d_resample",
    "downsample2d",
    "filter2d",
    "setup_filter",
    "upfirdn2d",
    "upsample2d",
]
