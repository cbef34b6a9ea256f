"""StyleGAN2 (Karras et al., "Analyzing and Improving the Image Quality of StyleGAN", 2020).

Generator: a mapping network Z -> W, a learned 4x4 constant, modulated 3x3
convolutions with weight demodulation and per-pixel noise, FIR upsampling, and
the "skip" output (a toRGB at every resolution, summed up the pyramid).
Discriminator: residual blocks with FIR downsampling, minibatch standard
deviation, a small fully connected head. Every weight uses the equalized
learning rate (stored at unit scale, multiplied by 1/sqrt(fan_in) when used).
Resampling and the fused bias/activation/clamp go through `ops`, which runs
CUDA kernels on a GPU and the PyTorch reference elsewhere.

Mixed precision is StyleGAN2-ADA's: `reduce_precision(network, dtype, num_res)`
runs the blocks of the highest resolutions (not below 8x8) in bf16 or fp16;
the mapping network, the styles, the demodulation coefficients, toRGB and the
accumulated image, fromRGB and D's 4x4 epilogue stay in fp32, and modulated
convolutions pre-normalize weights and styles before going to reduced
precision. Networks are built in fp32 everywhere (samplers, evaluation).

The file reads top to bottom: layers, then G, then D, then the sampler the
evaluation tools load checkpoints with.

    G = build_generator(config_dict)         # config_dict: a resolved run config (to_dict)
    images = G(z)                            # [B, C, R, R], roughly in [-1, 1]
    logits = build_discriminator(config_dict)(images)   # [B]
"""

import contextlib
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import ops
from training.labels import LabelEncoding, labels_for_indices
from training.seeding import generator, latents_for_indices

RESAMPLE_FILTER = (1, 3, 3, 1)  # binomial FIR filter for up- and downsampling
LRELU_GAIN = math.sqrt(2)
REDUCED_DTYPES = (torch.float16, torch.bfloat16)
MIN_REDUCED_RESOLUTION = 8  # blocks below this size stay in fp32 whatever num_res says (StyleGAN2-ADA's rule)


# ---------------------------------------------------------------------------
# Layers


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale each row to unit root-mean-square (the latent normalisation of the mapping network)."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class FullyConnected(nn.Module):
    """Linear layer with equalized learning rate.

    The stored weight is N(0, 1) / lr_multiplier and is multiplied by
    lr_multiplier / sqrt(in_features) in the forward pass, so every layer
    learns at the same speed under Adam and `lr_multiplier` scales that speed.
    """

    def __init__(self,
                 in_features: int,            # input width
                 out_features: int,           # output width
                 bias: bool = True,           # learn a bias
                 activation: str = "linear",  # any ops.bias_act activation
                 lr_multiplier: float = 1.0,  # learning-rate multiplier of this layer
                 bias_init: float = 0.0):     # initial (effective) bias value
        super().__init__()
        self.activation = activation
        self.lr_multiplier = lr_multiplier
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], bias_init / lr_multiplier)) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight * self.weight_gain
        b = self.bias * self.lr_multiplier if self.bias is not None else None
        if self.activation == "linear":
            return F.linear(x, w, b)
        return ops.bias_act(x.matmul(w.t()), b, act=self.activation)


class Conv2dLayer(nn.Module):
    """Convolution with equalized learning rate, optional FIR downsampling, bias, activation and clamp."""

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_size: int,
                 bias: bool = True,
                 activation: str = "linear",        # any ops.bias_act activation
                 down: int = 1,                     # downsampling factor (FIR filter, then strided conv)
                 conv_clamp: float | None = None):  # clamp the output to +-conv_clamp (fp16 safety)
        super().__init__()
        self.activation, self.down, self.conv_clamp = activation, down, conv_clamp
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.register_buffer("resample_filter", ops.setup_filter(RESAMPLE_FILTER), persistent=False)

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w = (self.weight * self.weight_gain).to(x.dtype)
        x = ops.conv2d_resample(x, w, f=self.resample_filter if self.down > 1 else None,
                                down=self.down, padding=self.padding)
        act_gain = ops.activation_funcs[self.activation].def_gain * gain
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return ops.bias_act(x, self.bias, act=self.activation, gain=act_gain, clamp=clamp)


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool = True,
                     up: int = 1, padding: int = 0, resample_filter: torch.Tensor | None = None,
                     fused: bool = False) -> torch.Tensor:
    """Convolve each sample with the weight scaled by its own styles (StyleGAN2 eq. 1-3).

    Args:
        x:          [B, I, H, W] input
        weight:     [O, I, k, k] shared weight (already scaled by its gain)
        styles:     [B, I] per-sample scale of each input channel
        demodulate: rescale each sample's modulated weight to unit norm per output channel
        up:         upsampling factor (FIR `resample_filter`, through ops.conv2d_resample)
        padding:    convolution padding
        fused:      one grouped convolution with per-sample weights, instead of
                    scaling the activations before and after one shared
                    convolution; the same result (which is faster where: inference_path)

    Returns:
        [B, O, H * up, W * up]
    """
    batch = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    # Styles and demodulation coefficients in (at least) fp32 even under autocast: they set the scale of everything.
    precise = torch.promote_types(weight.dtype, torch.float32)
    with torch.autocast(device_type=x.device.type, enabled=False):
        styles, weight = styles.to(precise), weight.to(precise)
        if demodulate and x.dtype in REDUCED_DTYPES:
            # Bring both to at most 1 in magnitude before they meet the activations in reduced precision, so
            # nothing overflows there; demodulation divides the per-sample, per-output scale out again.
            weight = weight / weight.abs().amax(dim=[1, 2, 3], keepdim=True)
            styles = styles / styles.abs().amax(dim=1, keepdim=True)
        dcoefs = None
        if demodulate:
            # |w_b[o]|^2 = sum_i s_b[i]^2 sum_k w[o, i, k]^2, without forming per-sample weights.
            dcoefs = (styles.square().matmul(weight.square().sum(dim=[2, 3]).t()) + 1e-8).rsqrt()
    if fused:
        w = weight[None] * styles[:, None, :, None, None]
        if dcoefs is not None:
            w = w * dcoefs[:, :, None, None, None]
        w = w.reshape(batch * out_channels, in_channels, kh, kw).to(x.dtype)
        x = x.reshape(1, batch * in_channels, *x.shape[2:])
        x = ops.conv2d_resample(x, w, f=resample_filter, up=up, padding=padding, groups=batch)
        return x.reshape(batch, out_channels, *x.shape[2:])
    x = x * styles[:, :, None, None].to(x.dtype)
    x = ops.conv2d_resample(x, weight.to(x.dtype), f=resample_filter, up=up, padding=padding)
    if dcoefs is not None:
        x = x * dcoefs[:, :, None, None].to(x.dtype)
    return x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution (optionally 2x upsampling), noise, bias, leaky ReLU."""

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 w_dim: int,                        # width of the style vector w
                 resolution: int,                   # output resolution (for the noise map)
                 up: int = 1,                       # 2 = upsample before the convolution
                 conv_clamp: float | None = None,   # clamp the output to +-conv_clamp
                 use_noise: bool = True):           # add per-pixel noise with a learned strength
        super().__init__()
        self.up, self.resolution, self.conv_clamp = up, resolution, conv_clamp
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1 / math.sqrt(in_channels * 9)
        self.noise_strength = nn.Parameter(torch.zeros([])) if use_noise else None
        if use_noise:
            self.register_buffer("noise_const", torch.randn(1, 1, resolution, resolution))
        self.register_buffer("resample_filter", ops.setup_filter(RESAMPLE_FILTER), persistent=False)

    def forward(self, x, w, noise=None, noise_mode="random", fused=False):
        styles = self.affine(w)
        x = modulated_conv2d(x, self.weight * self.weight_gain, styles, demodulate=True, up=self.up, padding=1,
                             resample_filter=self.resample_filter if self.up > 1 else None, fused=fused)
        if self.noise_strength is not None:
            if noise is None and noise_mode == "random":
                noise = torch.randn(x.shape[0], 1, self.resolution, self.resolution, device=x.device)
            elif noise is None and noise_mode == "const":
                noise = self.noise_const
            if noise is not None:
                x = x + (noise * self.noise_strength).to(x.dtype)
        return ops.bias_act(x, self.bias, act="lrelu", clamp=self.conv_clamp)


class ToRGB(nn.Module):
    """Modulated 1x1 convolution to image channels, without demodulation."""

    def __init__(self, in_channels: int, img_channels: int, w_dim: int, conv_clamp: float | None = None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(img_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(img_channels))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x, w, fused=False):
        x = modulated_conv2d(x, self.weight * self.weight_gain, self.affine(w), demodulate=False, fused=fused)
        return ops.bias_act(x, self.bias, clamp=self.conv_clamp)


def minibatch_std(x: torch.Tensor, group_size: int = 4, num_channels: int = 1) -> torch.Tensor:
    """Append the mean standard deviation over groups of samples as extra feature maps.

    Groups are consecutive samples (0..G-1, G..2G-1, ...), so a batch split
    into contiguous per-process slices whose size is a multiple of G gives
    each process exactly the groups one process would form.
    """
    n, c, h, w = x.shape
    g = min(group_size, n)
    if n % g:
        raise ValueError(f"minibatch std: batch of {n} does not split into groups of {g}")
    y = x.reshape(n // g, g, num_channels, c // num_channels, h, w).float()
    y = y - y.mean(dim=1, keepdim=True)
    y = (y.square().mean(dim=1) + 1e-8).sqrt()                   # [n/g, F, c/F, h, w]: std over each group
    y = y.mean(dim=[2, 3, 4])                                     # [n/g, F]
    y = y[:, None, :, None, None].expand(n // g, g, num_channels, h, w).reshape(n, num_channels, h, w)
    return torch.cat([x, y.to(x.dtype)], dim=1)


def channels_at(resolution: int, channel_base: int, channel_max: int) -> int:
    """Feature maps at a resolution: channel_base / resolution, at most channel_max."""
    return min(channel_base // resolution, channel_max)


# ---------------------------------------------------------------------------
# Generator


class MappingNetwork(nn.Module):
    """Z (and a label c) -> W: normalised latent through an MLP with a reduced learning rate; tracks the mean
    of W. A label is embedded to w_dim, normalised the same way and concatenated with z (StyleGAN2-ADA's
    conditioning), so every style sees it."""

    def __init__(self,
                 z_dim: int,                   # latent width
                 w_dim: int,                   # style width (also the hidden width)
                 num_layers: int = 8,          # fully connected layers
                 lr_multiplier: float = 0.01,  # learning-rate multiplier of the mapping layers
                 w_avg_beta: float = 0.995,    # decay of the running mean of W (truncation trick)
                 c_dim: int = 0):              # encoded label width (training.labels); 0: unconditional
        super().__init__()
        self.w_avg_beta, self.c_dim = w_avg_beta, c_dim
        if c_dim:
            self.embed = FullyConnected(c_dim, w_dim)
        widths = [z_dim + (w_dim if c_dim else 0)] + [w_dim] * num_layers
        self.layers = nn.ModuleList([FullyConnected(a, b, activation="lrelu", lr_multiplier=lr_multiplier)
                                     for a, b in zip(widths[:-1], widths[1:])])
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        x = normalize_2nd_moment(z.float())
        if self.c_dim:
            x = torch.cat([x, normalize_2nd_moment(self.embed(c.float()))], dim=1)
        for layer in self.layers:
            x = layer(x)
        return x

    @torch.no_grad()
    def track_w_avg(self, w_mean: torch.Tensor) -> None:
        """Move the running mean of W towards a batch mean (already averaged over processes)."""
        self.w_avg.lerp_(w_mean.detach().float(), 1 - self.w_avg_beta)


class SynthesisBlock(nn.Module):
    """One resolution of the synthesis network: (upsampling) convolutions and a toRGB."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int,
                 conv_clamp: float | None, use_noise: bool = True, latent_input: bool = False):
        super().__init__()
        self.is_first, self.latent_input = in_channels == 0, latent_input
        layer = dict(w_dim=w_dim, resolution=resolution, conv_clamp=conv_clamp, use_noise=use_noise)
        if self.is_first:
            if latent_input:
                # The first maps from the sample's first style, so where things are can differ from sample to
                # sample without noise inputs (a learned constant gives every sample the same layout).
                self.input = FullyConnected(w_dim, out_channels * resolution * resolution)
            else:
                self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
            self.convs = nn.ModuleList([SynthesisLayer(out_channels, out_channels, **layer)])
        else:
            self.convs = nn.ModuleList([SynthesisLayer(in_channels, out_channels, up=2, **layer),
                                        SynthesisLayer(out_channels, out_channels, **layer)])
        self.torgb = ToRGB(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.register_buffer("resample_filter", ops.setup_filter(RESAMPLE_FILTER), persistent=False)
        self.dtype = torch.float32  # of the convolutions; see reduce_precision

    def forward(self, x, img, ws, noise, noise_mode, fused):
        """ws: [B, len(convs) + 1, w_dim] (the last one feeds toRGB); noise: one map or None per conv."""
        if self.is_first and self.latent_input:
            size = self.convs[0].resolution
            x = self.input(ws[:, 0]).reshape(ws.shape[0], -1, size, size)
        elif self.is_first:
            x = self.const[None].expand(ws.shape[0], -1, -1, -1)
        x = x.to(self.dtype)
        for i, conv in enumerate(self.convs):
            x = conv(x, ws[:, i], noise=noise[i], noise_mode=noise_mode, fused=fused)
        y = self.torgb(x.float(), ws[:, len(self.convs)], fused=fused)  # toRGB and the image in fp32
        img = y if img is None else ops.upsample2d(img, self.resample_filter) + y.to(img.dtype)
        return x, img


class SynthesisNetwork(nn.Module):
    """W+ -> image: a learned 4x4 constant (or a map of the first style) grown by SynthesisBlocks,
    skip-connected toRGB outputs."""

    def __init__(self, w_dim: int, resolution: int, img_channels: int, channel_base: int, channel_max: int,
                 conv_clamp: float | None, noise_max_resolution: int | None = None, latent_input: bool = False):
        super().__init__()
        log2 = int(np.log2(resolution))
        if resolution < 4 or 2 ** log2 != resolution:
            raise ValueError(f"resolution must be a power of two >= 4, got {resolution}")
        self.resolutions = [2 ** i for i in range(2, log2 + 1)]
        blocks, in_channels = [], 0
        for res in self.resolutions:
            out_channels = channels_at(res, channel_base, channel_max)
            use_noise = noise_max_resolution is None or res <= noise_max_resolution
            blocks.append(SynthesisBlock(in_channels, out_channels, w_dim, res, img_channels, conv_clamp, use_noise,
                                         latent_input))
            in_channels = out_channels
        self.blocks = nn.ModuleList(blocks)
        # Conv i of the network reads ws[:, i]; each toRGB reads the w after its block's last conv.
        self.num_ws = sum(len(b.convs) for b in self.blocks) + 1
        self.noise_resolutions = [conv.resolution for b in self.blocks for conv in b.convs]

    def forward(self, ws, noise=None, noise_mode="random", fused=False):
        noise = list(noise) if noise is not None else [None] * len(self.noise_resolutions)
        x = img = None
        w_index = 0
        for block in self.blocks:
            n = len(block.convs)
            x, img = block(x, img, ws[:, w_index:w_index + n + 1], noise[w_index:w_index + n], noise_mode, fused)
            w_index += n
        return img


class Generator(nn.Module):
    """z -> image, with style mixing and the truncation trick."""

    def __init__(self,
                 z_dim: int,                         # latent width
                 w_dim: int,                         # style width
                 resolution: int,                    # output resolution (power of two)
                 img_channels: int,                  # 1 grayscale, 3 RGB
                 mapping_layers: int = 8,            # depth of the mapping network
                 mapping_lr_multiplier: float = 0.01,
                 channel_base: int = 16384,          # feature maps at resolution r: channel_base / r ...
                 channel_max: int = 512,             # ... at most channel_max
                 conv_clamp: float | None = 256.0,   # activation clamp (keeps fp16 finite)
                 noise_max_resolution: int | None = None,  # noise inputs only up to this resolution; None: all
                 latent_input: bool = False,         # 4x4 input from the first style instead of a constant
                 c_dim: int = 0):                    # encoded label width; 0: unconditional
        super().__init__()
        self.z_dim, self.w_dim, self.resolution, self.img_channels = z_dim, w_dim, resolution, img_channels
        self.c_dim = c_dim
        self.synthesis = SynthesisNetwork(w_dim, resolution, img_channels, channel_base, channel_max, conv_clamp,
                                          noise_max_resolution, latent_input)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, w_dim, mapping_layers, mapping_lr_multiplier, c_dim=c_dim)

    def noise_from_flat(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """[B, sum(r*r)] standard normal numbers -> one [B, 1, r, r] noise map per synthesis layer."""
        sizes = [r * r for r in self.synthesis.noise_resolutions]
        return [part.reshape(-1, 1, r, r)
                for part, r in zip(flat.split(sizes, dim=1), self.synthesis.noise_resolutions)]

    @property
    def noise_numel(self) -> int:
        return sum(r * r for r in self.synthesis.noise_resolutions)

    def forward(self, z, z_mix=None, mix_cutoff=None, truncation=1.0, noise=None, noise_mode="random",
                fused=False, return_ws=False, c=None):
        """Images from latents.

        Args:
            z:          [B, z_dim] latents
            z_mix:      [B, z_dim] second latents for style mixing, or None
            mix_cutoff: [B] ints: layers >= cutoff take their style from z_mix (num_ws = no mixing)
            truncation: psi; w <- w_avg + psi (w - w_avg)
            noise:      list of [B, 1, r, r] maps (see noise_from_flat), or None to use noise_mode
            noise_mode: without `noise`: 'random' (torch.randn), 'const' (fixed buffers) or 'none'
            fused:      grouped modulated convolutions (see modulated_conv2d)
            return_ws:  also return the per-layer styles (for path-length regularization)
            c:          [B, c_dim] encoded labels of a conditional generator (both latents of a mix share them)
        """
        if z_mix is not None and c is not None:
            c = torch.cat([c, c])
        w = self.mapping(z if z_mix is None else torch.cat([z, z_mix]), c)
        if truncation != 1:
            w = self.mapping.w_avg.lerp(w, truncation)
        ws = w[:z.shape[0], None].expand(-1, self.num_ws, -1)
        if z_mix is not None:
            layer = torch.arange(self.num_ws, device=ws.device)
            mixed = layer[None, :, None] >= mix_cutoff.to(ws.device)[:, None, None]
            ws = torch.where(mixed, w[z.shape[0]:, None], ws)
        img = self.synthesis(ws, noise=noise, noise_mode=noise_mode, fused=fused)
        return (img, ws) if return_ws else img


# ---------------------------------------------------------------------------
# Discriminator


class DiscriminatorBlock(nn.Module):
    """Residual block: two 3x3 convolutions (the second halving the size) plus a 1x1 downsampling skip."""

    def __init__(self, in_channels: int, out_channels: int, conv_clamp: float | None):
        super().__init__()
        self.conv0 = Conv2dLayer(in_channels, in_channels, 3, activation="lrelu", conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(in_channels, out_channels, 3, activation="lrelu", down=2, conv_clamp=conv_clamp)
        self.skip = Conv2dLayer(in_channels, out_channels, 1, bias=False, down=2)
        self.dtype = torch.float32  # see reduce_precision

    def forward(self, x):
        x = x.to(self.dtype)
        # sqrt(1/2) on both branches keeps the variance of their sum.
        y = self.skip(x, gain=math.sqrt(0.5))
        x = self.conv1(self.conv0(x), gain=math.sqrt(0.5))
        return x + y


class Discriminator(nn.Module):
    """Image -> logit: fromRGB, residual blocks down to 4x4, minibatch std, conv, two dense layers.

    Conditional (c_dim > 0): a projection discriminator (Miyato & Koyama 2018, StyleGAN2-ADA's design): the
    last layer gives a cmap_dim-wide feature, the label is mapped to the same width, and the logit is
    their inner product / sqrt(cmap_dim)."""

    def __init__(self,
                 resolution: int,                    # input resolution (power of two)
                 img_channels: int,                  # 1 grayscale, 3 RGB
                 channel_base: int = 16384,          # feature maps at resolution r: channel_base / r ...
                 channel_max: int = 512,             # ... at most channel_max
                 mbstd_group_size: int = 4,          # samples per minibatch-std group
                 conv_clamp: float | None = 256.0,   # activation clamp (keeps fp16 finite)
                 c_dim: int = 0):                    # encoded label width; 0: unconditional
        super().__init__()
        log2 = int(np.log2(resolution))
        if resolution < 4 or 2 ** log2 != resolution:
            raise ValueError(f"resolution must be a power of two >= 4, got {resolution}")
        self.resolution, self.mbstd_group_size = resolution, mbstd_group_size
        ch = [channels_at(2 ** i, channel_base, channel_max) for i in range(log2 + 1)]  # ch[i]: at 2**i
        self.fromrgb = Conv2dLayer(img_channels, ch[log2], 1, activation="lrelu", conv_clamp=conv_clamp)
        self.blocks = nn.ModuleList([DiscriminatorBlock(ch[i], ch[i - 1], conv_clamp)
                                     for i in range(log2, 2, -1)])
        self.conv = Conv2dLayer(ch[2] + 1, ch[2], 3, activation="lrelu", conv_clamp=conv_clamp)
        self.fc = FullyConnected(ch[2] * 16, ch[2], activation="lrelu")
        self.c_dim, self.cmap_dim = c_dim, ch[2]
        self.out = FullyConnected(ch[2], self.cmap_dim if c_dim else 1)
        if c_dim:  # the label's side of the projection: embedded, normalised, two dense layers
            self.embed = FullyConnected(c_dim, self.cmap_dim)
            self.label_mapping = nn.Sequential(FullyConnected(self.cmap_dim, self.cmap_dim, activation="lrelu"),
                                               FullyConnected(self.cmap_dim, self.cmap_dim))

    def forward(self, img: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        x = self.fromrgb(img)
        for block in self.blocks:
            x = block(x)
        x = self.conv(minibatch_std(x.float(), self.mbstd_group_size))  # the 4x4 epilogue in fp32
        x = self.out(self.fc(x.flatten(1)))
        if not self.c_dim:
            return x[:, 0]
        cmap = self.label_mapping(normalize_2nd_moment(self.embed(c.float())))
        return (x * cmap).sum(dim=1) / math.sqrt(self.cmap_dim)


# ---------------------------------------------------------------------------
# Mixed precision


def reduced_precision_blocks(network: "Generator | Discriminator", num_res: int) -> list[nn.Module]:
    """The blocks of the `num_res` highest resolutions, none below MIN_REDUCED_RESOLUTION: G's synthesis
    blocks by output size, D's blocks by input size (StyleGAN2-ADA's num_fp16_res)."""
    if isinstance(network, Generator):
        sized = zip(network.synthesis.resolutions, network.synthesis.blocks)
    else:
        sized = ((network.resolution >> k, block) for k, block in enumerate(network.blocks))
    lowest = max(network.resolution >> max(num_res - 1, 0), MIN_REDUCED_RESOLUTION) if num_res > 0 else math.inf
    return [block for resolution, block in sized if resolution >= lowest]


def reduce_precision(network: "Generator | Discriminator", dtype: torch.dtype, num_res: int) -> list[nn.Module]:
    """Run the convolutions of `network`'s `num_res` highest-resolution blocks in `dtype` (bf16 or fp16);
    everything else stays fp32. The weights stay fp32 (they are cast per use). Returns the blocks."""
    blocks = reduced_precision_blocks(network, num_res)
    for block in blocks:
        block.dtype = dtype
    return blocks


@contextlib.contextmanager
def full_precision(*networks: nn.Module):
    """Every block of `networks` in fp32 inside (StyleGAN2's regularizers, whose double backward runs in fp32)."""
    blocks = [m for network in networks for m in network.modules() if isinstance(m, (SynthesisBlock,
                                                                                     DiscriminatorBlock))]
    dtypes = [block.dtype for block in blocks]
    for block in blocks:
        block.dtype = torch.float32
    try:
        yield
    finally:
        for block, dtype in zip(blocks, dtypes):
            block.dtype = dtype


# ---------------------------------------------------------------------------
# Construction from a run config, and the sampler used by eval tools


def build_generator(config: dict) -> Generator:
    """The generator a resolved run config (training.config.to_dict) describes."""
    m, data = config["model"], config["data"]
    return Generator(z_dim=m["z_dim"], w_dim=m["w_dim"], resolution=data["resolution"],
                     img_channels=data["channels"], mapping_layers=m["mapping_layers"],
                     mapping_lr_multiplier=m["mapping_lr_multiplier"], channel_base=m["g_channel_base"],
                     channel_max=m["g_channel_max"], conv_clamp=m["conv_clamp"],
                     noise_max_resolution=m.get("noise_max_resolution"),  # absent in older checkpoints: all
                     latent_input=m.get("latent_input", False), c_dim=LabelEncoding.from_config(data).c_dim)


def build_discriminator(config: dict) -> Discriminator:
    m, data = config["model"], config["data"]
    return Discriminator(resolution=data["resolution"], img_channels=data["channels"],
                         channel_base=m["d_channel_base"], channel_max=m["d_channel_max"],
                         mbstd_group_size=m["mbstd_group_size"], conv_clamp=m["conv_clamp"],
                         c_dim=LabelEncoding.from_config(data).c_dim)


def noise_for_indices(G: Generator, indices: torch.Tensor, seed: int) -> list[torch.Tensor]:
    """Noise maps for each sample index: sample i's noise depends only on (seed, i)."""
    flat = torch.stack([torch.randn(G.noise_numel, generator=generator(seed, "sample_noise", int(i)))
                        for i in indices.cpu()])
    return G.noise_from_flat(flat)


# Sampling on the CPU keeps each forward's largest feature map within this many bytes: beyond the
# caches every elementwise pass runs at memory speed (benchmarks/gen_speed.py, one thread: the cpu32
# generator makes about twice the frames/s in forwards of 16 frames as in one of 256).
CPU_FEATURE_MAP_BYTES = 4 * 2**20


def inference_path(G: Generator, device) -> tuple[bool, int | None]:
    """(fused, frames per forward) for sampling on `device`, as measured fastest (benchmarks/gen_speed.py).

    CPU: shared-weight modulated convolutions (at least as fast as grouped ones at every batch size, up
    to twice from 16 frames on) in forwards whose largest feature map fits CPU_FEATURE_MAP_BYTES.
    Elsewhere: grouped convolutions on the whole batch, as before (not measured here).
    """
    if torch.device(device).type != "cpu":
        return True, None
    largest = max(block.torgb.weight.shape[1] * block.convs[-1].resolution ** 2 for block in G.synthesis.blocks)
    return False, max(1, CPU_FEATURE_MAP_BYTES // (4 * largest))


class Sampler:
    """Sample indices -> images in [-1, 1]: sample i depends only on (seed, i) (latent, noise, label).

    Args:
        G:          the generator (the EMA copy, unwrapped)
        seed:       latents come from training.seeding.latents_for_indices(indices, z_dim, seed)
        truncation: psi of the truncation trick (1 = off)
        noise_mode: 'random' (per-index noise), 'const' (the generator's fixed maps) or 'none'
        labels:     a conditional G's encoded labels [K, c_dim]: the table drawn from (`draw_labels`, e.g. the
                    training set's labels) or, without drawing, sample i's label is row i % K
        fused, frames_per_forward: grouped modulated convolutions (True) or shared-weight ones (False), and
                    how many samples one forward of G takes (None: the whole call); by default the
                    fastest for G's device (inference_path). The images agree to float rounding.
    """

    def __init__(self, G: Generator, seed: int = 0, truncation: float = 1.0, noise_mode: str = "random",
                 labels: torch.Tensor | None = None, draw_labels: bool = True, fused: bool | None = None,
                 frames_per_forward: int | None = None):
        if noise_mode not in ("random", "const", "none"):
            raise ValueError(f"noise_mode must be 'random', 'const' or 'none', got {noise_mode!r}")
        if G.c_dim and (labels is None or labels.ndim != 2 or labels.shape[1] != G.c_dim):
            raise ValueError(f"a conditional generator needs labels [K, {G.c_dim}]")
        self.G, self.seed, self.truncation, self.noise_mode = G, seed, truncation, noise_mode
        self.labels, self.draw_labels = labels, draw_labels
        self.fused, self.frames_per_forward = fused, frames_per_forward
        self.channels, self.resolution = G.img_channels, G.resolution

    def labels_for(self, indices: torch.Tensor) -> torch.Tensor | None:
        """The encoded labels samples `indices` are generated with (None for an unconditional G)."""
        if not self.G.c_dim:
            return None
        if self.draw_labels:
            return labels_for_indices(self.labels, indices, self.seed)
        return self.labels[indices.to(self.labels.device) % len(self.labels)]

    @torch.no_grad()
    def __call__(self, indices: torch.Tensor) -> torch.Tensor:
        device = next(self.G.parameters()).device
        fused, frames_per_forward = inference_path(self.G, device)
        fused = fused if self.fused is None else self.fused
        frames_per_forward = self.frames_per_forward or frames_per_forward or max(len(indices), 1)
        return torch.cat([self._sample(part, device, fused) for part in indices.split(frames_per_forward)])

    def _sample(self, indices: torch.Tensor, device: torch.device, fused: bool) -> torch.Tensor:
        z = latents_for_indices(indices, self.G.z_dim, self.seed).to(device)
        noise = None
        if self.noise_mode == "random":
            noise = [n.to(device) for n in noise_for_indices(self.G, indices, self.seed)]
        c = self.labels_for(indices)
        img = self.G(z, truncation=self.truncation, noise=noise, noise_mode=self.noise_mode, fused=fused,
                     c=None if c is None else c.to(device))
        return img.float().clamp(-1, 1)


def sampler_from_checkpoint(checkpoint: dict, device, seed: int = 0, truncation: float = 1.0, use_ema: bool = True,
                            noise_mode: str = "random", labels: torch.Tensor | None = None) -> Sampler:
    """Rebuild the generator from checkpoint["config"] and load G_ema (or G). A conditional generator
    draws its labels from the training set's (checkpoint["labels"]) unless `labels` [K, c_dim] gives
    sample i's as row i % K."""
    G = build_generator(checkpoint["config"])
    G.load_state_dict(checkpoint["G_ema"] if use_ema and "G_ema" in checkpoint else checkpoint["G"])
    G = G.eval().requires_grad_(False).to(device)
    table = checkpoint.get("labels") if labels is None else labels
    return Sampler(G, seed=seed, truncation=truncation, noise_mode=noise_mode, labels=table,
                   draw_labels=labels is None)
