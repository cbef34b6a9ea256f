"""SinGAN: a pyramid of small fully convolutional GANs learned from one image.

Scale 0 is the coarsest. The generator of scale k turns noise plus the
up-sampled output of scale k-1 into an image at scale k's size and adds that
up-sampled input back (a residual refinement); scale 0 starts from zeros. The
discriminator of each scale scores overlapping patches (its receptive field
is 11x11 pixels with 5 layers), so the pyramid learns the image's internal
patch statistics at every scale and can synthesize any size or aspect ratio.

    sizes = pyramid_sizes(250, 188, max_size=250, min_size=25, scale_factor=0.75)
    x = synthesize(generators, noise_amps, sizes, noise)             # random samples
    sampler = sampler_from_checkpoint(ckpt, "cuda", size=(250, 500))  # any size, from a checkpoint

Reference: Shaham, Dekel, Michaeli, "SinGAN: Learning a Generative Model
from a Single Natural Image", ICCV 2019.
"""

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from training.seeding import generator

Size = tuple[int, int]
NoiseSource = Callable[[int, tuple[int, int, int, int]], torch.Tensor]  # (scale, shape) -> noise


# ---------------------------------------------------------------------------
# Pyramid geometry

def fit_to_max_size(height: int, width: int, max_size: int) -> Size:
    """The image's size with its long side shrunk to `max_size` (never enlarged)."""
    factor = min(1.0, max_size / max(height, width))
    return max(1, round(height * factor)), max(1, round(width * factor))


def pyramid_sizes(height: int, width: int, max_size: int, min_size: int, scale_factor: float) -> list[Size]:
    """(H, W) of every scale, coarsest first, by the reference implementation's rule.

    The finest scale is the image fitted to `max_size`. The reference counts
    ceil(log(min_size / short side) / log(scale_factor)) + 1 factor steps from
    the image as given, less the ceil(log(fitted long side / long side) /
    log(scale_factor)) steps that fitting it to `max_size` takes, so a 250 px
    image gets 10 steps (11 scales) at the defaults. The factor is then adjusted
    so the coarsest short side is exactly `min_size`. Sizes are rounded (the
    reference rounds up, which float error can push to min_size + 1).
    """
    fitted_height, fitted_width = fit_to_max_size(height, width, max_size)
    short = min(fitted_height, fitted_width)
    if short <= min_size:
        return [(fitted_height, fitted_width)]

    def factor_steps(ratio):  # ceil(log_r(ratio)); the tolerance keeps exact powers of r from rounding up
        return math.ceil(math.log(ratio) / math.log(scale_factor) - 1e-9)

    long = max(height, width)
    steps = factor_steps(min_size / min(height, width)) + 1 - factor_steps(min(max_size, long) / long)
    steps = max(1, steps)
    factor = (min_size / short) ** (1 / steps)
    return [(max(1, round(fitted_height * factor ** (steps - k))), max(1, round(fitted_width * factor ** (steps - k))))
            for k in range(steps + 1)]


def scale_width(scale: int, channels: int, max_channels: int, double_every: int) -> int:
    """Feature channels of scale `scale`: `channels`, doubled every `double_every` scales, capped."""
    return min(channels * 2 ** (scale // double_every), max_channels)


def resize(x: torch.Tensor, size: Size) -> torch.Tensor:
    """Bicubic resize (antialiased when shrinking) of float images; identity at the same size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)


def image_pyramid(image: torch.Tensor, sizes: list[Size]) -> list[torch.Tensor]:
    """Float image [1, C, H, W] in [-1, 1] resized to every scale's size (from the full image)."""
    return [resize(image, size).clamp(-1, 1) for size in sizes]


def output_sizes(train_sizes: list[Size], size: Size | None) -> list[Size]:
    """Per-scale sizes for a finest output of `size`: every scale stretched by the same factors."""
    if size is None:
        return list(train_sizes)
    fy, fx = size[0] / train_sizes[-1][0], size[1] / train_sizes[-1][1]
    sizes = [(max(1, round(h * fy)), max(1, round(w * fx))) for h, w in train_sizes]
    sizes[-1] = tuple(size)
    return sizes


def parse_size(text: str) -> Size:
    """'HxW' (e.g. '128x256') -> (128, 256); ValueError otherwise."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"size {text!r}: expected HxW with positive integers, e.g. 128x256")
    return int(parts[0]), int(parts[1])


# ---------------------------------------------------------------------------
# Layers and networks

class PerSampleBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are each sample's own (per channel, over its pixels).

    The reference trains on one image at a time, where BatchNorm's statistics are
    that image's. With several images per process, plain BatchNorm would pool
    them, so D's score of one image (and its gradient penalty) would depend on
    the others; here every image gets what it would get alone. One image takes
    BatchNorm2d's own path; eval mode uses the running statistics as usual.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or len(x) == 1:
            return super().forward(x)
        self.num_batches_tracked.add_(1)
        return F.instance_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                               use_input_stats=True, momentum=self.momentum, eps=self.eps)


class ConvBlock(nn.Sequential):
    """3x3 convolution (`padding` 1: 'same' with zeros, 0: none), BatchNorm (`norm`), LeakyReLU(0.2)."""

    def __init__(self, in_channels: int, out_channels: int, norm: type[nn.BatchNorm2d] = nn.BatchNorm2d,
                 padding: int = 1):
        super().__init__(nn.Conv2d(in_channels, out_channels, 3, padding=padding),
                         norm(out_channels),
                         nn.LeakyReLU(0.2))


def init_weights(module: nn.Module, g: torch.Generator) -> None:
    """The reference's DCGAN-style init (conv N(0, 0.02), BN scale N(1, 0.02)), drawn from `g`."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            m.weight.data.normal_(0.0, 0.02, generator=g)
            m.bias.data.zero_()
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.data.normal_(1.0, 0.02, generator=g)
            m.bias.data.zero_()


def conv_blocks(channels: int, width: int, count: int, norm: type[nn.BatchNorm2d] = nn.BatchNorm2d,
                padding: int = 1) -> nn.Sequential:
    """The hidden stack G and D share: `count` ConvBlocks, channels -> width -> ... -> width."""
    return nn.Sequential(ConvBlock(channels, width, norm, padding),
                         *[ConvBlock(width, width, norm, padding) for _ in range(count - 1)])


PADDING_OF_KEYLESS_CONFIGS = "same"  # checkpoints written before model.padding existed were trained so


def checkpoint_padding(model: dict) -> str:
    """The padding a saved config's networks were trained with: its `model.padding`, or "same" without the key."""
    return model.get("padding", PADDING_OF_KEYLESS_CONFIGS)


def noise_border(layers: int, padding: str) -> int:
    """Pixels by which G's noise input exceeds its output on each side: `layers` with padding "noise", else 0."""
    return layers if padding == "noise" else 0


class ScaleGenerator(nn.Module):
    """One scale's generator: G(σz + x_prev) + x_prev, with a tanh on G's own output.

    `padding` says how G's 3x3 convolutions get their border (the receptive field,
    2 * layers + 1 pixels, is the same in all three):
      same:  every convolution pads with zeros; the noise σz has the image's size.
             Not the reference: per-layer zero padding (in D too).
      zero:  the reference implementation's scheme. The noise σz has the image's
             size; σz + x_prev is padded once by `layers` pixels with zeros and the
             convolutions are unpadded. Only G's input border is zero, so G can
             still tell where the image's edge is.
      noise: the input is padded once by `layers` pixels, but the noise σz is drawn
             that much larger (`input_size`) and x_prev is mirrored into the border,
             so no convolution sees a zero border: G cannot tell where in the image it
             is and must take the layout from x_prev (at the coarsest scale, from the
             noise alone).

    Args:
        channels: image channels (1 grayscale, 3 colour)
        width:    feature channels of every hidden layer
        layers:   3x3 conv layers in all (layers - 1 ConvBlocks, then the output conv)
        padding:  "noise", "zero" or "same"
    """

    def __init__(self, channels: int, width: int, layers: int = 5, padding: str = "noise"):
        super().__init__()
        conv_padding = 1 if padding == "same" else 0
        self.features = conv_blocks(channels, width, layers - 1, padding=conv_padding)
        self.to_image = nn.Conv2d(width, channels, 3, padding=conv_padding)
        self.padding, self.layers = padding, layers
        self.border = noise_border(layers, padding)

    def input_size(self, size: Size) -> Size:
        """The noise map's (H, W) for an output of `size`."""
        return size[0] + 2 * self.border, size[1] + 2 * self.border

    def forward(self, noise: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        """noise: σz at `input_size(previous's size)`; previous: the up-sampled coarser output (zeros at scale 0)."""
        if self.padding == "noise":
            x = noise + F.pad(previous, [self.layers] * 4, mode="reflect")
        elif self.padding == "zero":
            x = F.pad(noise + previous, [self.layers] * 4)
        else:
            x = noise + previous
        return torch.tanh(self.to_image(self.features(x))) + previous


class PatchDiscriminator(nn.Module):
    """One scale's critic: a score map, one WGAN score per 11x11 patch (with 5 layers).

    Its BatchNorm keeps every image's statistics apart (PerSampleBatchNorm2d), so
    with several images per process each score, and each image's gradient
    penalty, is what that image alone would give, as in the reference's batch of 1.
    With padding "same" every convolution pads with zeros and the score map has the
    image's size (border patches, part zeros, are scored too). With "zero" and
    "noise" the convolutions are unpadded, as the reference's D: only whole patches
    inside the image are scored, so D cannot locate them by the border.

    Args:
        channels: image channels
        width:    feature channels of every hidden layer
        layers:   3x3 conv layers in all (layers - 1 ConvBlocks, then the score conv)
        padding:  "noise", "zero" or "same" (the first two: the same unpadded D)
    """

    def __init__(self, channels: int, width: int, layers: int = 5, padding: str = "noise"):
        super().__init__()
        conv_padding = 1 if padding == "same" else 0
        self.features = conv_blocks(channels, width, layers - 1, norm=PerSampleBatchNorm2d, padding=conv_padding)
        self.to_score = nn.Conv2d(width, 1, 3, padding=conv_padding)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.to_score(self.features(images))


def build_scale(kind: str, config: dict, scale: int, channels: int) -> nn.Module:
    """G or D of `scale` from the resolved config's `model` section (a dict)."""
    model = config["model"]
    width = scale_width(scale, model["channels"], model["max_channels"], model["double_every"])
    network = ScaleGenerator if kind == "G" else PatchDiscriminator
    return network(channels, width, model["layers"], checkpoint_padding(model))


# ---------------------------------------------------------------------------
# Synthesis through the pyramid

def draw_noise(g: torch.Generator, shape: tuple[int, int, int, int], coarsest: bool,
               device: torch.device | str) -> torch.Tensor:
    """Standard normal noise maps. At the coarsest scale one map is shared by all channels
    (as in the reference), so colour images start from colour-coherent structure."""
    b, c, h, w = shape
    if coarsest:
        return torch.randn((b, 1, h, w), generator=g, device=device).expand(b, c, h, w)
    return torch.randn(shape, generator=g, device=device)


def synthesize(generators, noise_amps: list[float], sizes: list[Size], noise: NoiseSource | None,
               batch: int = 1, fixed_noise: torch.Tensor | None = None, start_scale: int = 0,
               train_sizes: list[Size] | None = None) -> torch.Tensor:
    """Run the pyramid from zeros at the coarsest scale to `sizes[len(generators) - 1]`.

    Args:
        generators:  ScaleGenerators, coarsest first (len(generators) <= len(sizes))
        noise_amps:  noise standard deviation per scale
        sizes:       (H, W) per scale for the random scales
        noise:       `noise(scale, shape)` -> noise map, for scales >= start_scale
        fixed_noise: the coarsest reconstruction noise [1, C, *G.input_size((H0, W0))]
        start_scale: scales below it reproduce the reconstruction of the real image
                     (fixed noise at scale 0, none above) at `train_sizes`; the result
                     is then stretched to `sizes[start_scale]` and refined with noise.
                     start_scale = len(generators) gives the reconstruction itself.
        train_sizes: the training pyramid (defaults to `sizes`)
    Returns:
        images [batch, C, H, W], roughly in [-1, 1]
    """
    train_sizes = train_sizes or sizes
    x = None
    for k, G in enumerate(generators):
        reconstruct = k < start_scale
        size = tuple(train_sizes[k] if reconstruct else sizes[k])
        channels = G.to_image.out_channels
        device = G.to_image.weight.device
        x = torch.zeros(batch, channels, *size, device=device) if x is None else resize(x, size)
        if reconstruct:
            z = fixed_noise.expand(batch, -1, -1, -1) if k == 0 else \
                torch.zeros(batch, channels, *G.input_size(size), device=device)
        else:
            z = noise(k, (batch, channels, *G.input_size(size)))
        x = G(noise_amps[k] * z, x)
    return x


# ---------------------------------------------------------------------------
# Checkpoint -> sampler

def generators_from_checkpoint(checkpoint: dict, device) -> list[ScaleGenerator]:
    """Every trained scale's G (eval mode, frozen) from a SinGAN checkpoint."""
    config = checkpoint["config"]
    channels = config["data"]["channels"]
    generators = []
    for k in range(len(checkpoint["noise_amps"])):
        G = build_scale("G", config, k, channels)
        G.load_state_dict(checkpoint["G"][str(k)])
        generators.append(G.to(device).eval().requires_grad_(False))
    return generators


def sampler_from_checkpoint(checkpoint: dict, device, seed: int = 0, truncation: float = 1.0, use_ema: bool = True,
                            size: Size | str | None = None, start_scale: int = 0):
    """Sample indices -> images in [-1, 1] from a SinGAN checkpoint.

    Sample i depends only on (seed, i). `size` (H, W) or 'HxW' sets the output
    size (default: the training size; any aspect ratio works). `start_scale` n
    > 0 keeps the real image's structure from the n coarsest scales (their
    reconstruction) and samples only the finer ones. SinGAN has no EMA
    generator and no truncation: `use_ema` is ignored and `truncation` must be 1.
    """
    if truncation != 1.0:
        raise ValueError("SinGAN has no latent space to truncate; use truncation 1")
    trained = checkpoint["pyramid"][:len(checkpoint["noise_amps"])]  # fewer than all while training runs
    if not 0 <= start_scale < len(trained):
        raise ValueError(f"start_scale {start_scale}: expected 0..{len(trained) - 1} for this checkpoint")
    if isinstance(size, str):
        size = parse_size(size)
    generators = generators_from_checkpoint(checkpoint, device)[:len(trained)]
    amps = checkpoint["noise_amps"][:len(trained)]
    fixed = checkpoint["fixed_noise"].to(device)
    train_sizes = [tuple(s) for s in trained]
    sizes = output_sizes(train_sizes, tuple(size) if size else None)

    @torch.no_grad()
    def sample(indices: torch.Tensor) -> torch.Tensor:
        per_sample = [generator(seed, "sample", int(i), device=device) for i in indices.cpu()]

        def noise(k, shape):
            return torch.cat([draw_noise(g, (1, *shape[1:]), k == 0, device) for g in per_sample])

        return synthesize(generators, amps, sizes, noise, batch=len(per_sample), fixed_noise=fixed,
                          start_scale=start_scale, train_sizes=train_sizes)

    sample.channels = checkpoint["config"]["data"]["channels"]
    sample.resolution = sizes[-1]  # (H, W): SinGAN's output need not be square
    sample.size = sizes[-1]
    return sample
