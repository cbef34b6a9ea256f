"""SAGAN: a DCGAN backbone with self-attention (Zhang et al. 2019), sized for small image sets.

G: z -> 4x4 transposed convolution -> (transposed convolution x2, BatchNorm, ReLU)* up to the
data resolution, self-attention after the blocks whose maps have the resolutions in
`g_attention`, tanh. D mirrors it with strided convolutions, LeakyReLU 0.2 and no
normalization layers; every convolution of D (self-attention's included) is spectrally normalized,
and with `model.g_spectral_norm` every convolution of G too (the SAGAN paper's setting).

    G = build_generator(SAGANModel(), resolution=64, channels=1)
    images = G(torch.randn(8, 128))            # [8, 1, 64, 64] in [-1, 1]

Conditional (a data set with labels, `training.labels`; c_dim > 0): G's BatchNorm layers take
their scale and shift from the label (conditional BatchNorm), and D adds to its logit the inner
product of its pooled last features with an embedding of the label (a projection discriminator):
the SAGAN and BigGAN design.

`sampler_from_checkpoint` rebuilds the generator of a training checkpoint for eval/generate.py
and eval/fid.py (through `nets.load_sampler`).
"""

from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from training.config import ConfigError, check, from_dict
from training.labels import LabelEncoding, labels_for_indices
from training.seeding import latents_for_indices


@dataclass
class SAGANModel:
    z_dim: int = 128                                               # latent size
    g_channels: int = 64                                           # G channels at resolution/2, doubled per halving
    d_channels: int = 64                                           # D channels at resolution/2, doubled per halving
    max_channels: int = 512                                        # cap on either network's width
    g_attention: list[int] = field(default_factory=lambda: [16])  # G feature-map resolutions with self-attention
    d_attention: list[int] = field(default_factory=lambda: [16])  # D feature-map resolutions with self-attention
    g_spectral_norm: bool = False                                  # spectral norm in G too (the SAGAN paper; D always has it)

    def validate(self):
        check(self.z_dim >= 1, "model.z_dim", "a positive integer")
        check(self.g_channels >= 1, "model.g_channels", "a positive integer")
        check(self.d_channels >= 1, "model.d_channels", "a positive integer")
        check(self.max_channels >= 1, "model.max_channels", "a positive integer")

    def check_resolution(self, resolution: int) -> None:
        """Cross-check with data.resolution: 4 * 2^k (k >= 1), attention only where feature maps exist."""
        check(resolution >= 8 and resolution & (resolution - 1) == 0, "data.resolution",
              "a power of two >= 8 for SAGAN (4x4 start, doubled per block)")
        maps = feature_resolutions(resolution)
        for key in ("g_attention", "d_attention"):
            for r in getattr(self, key):
                check(r in maps, f"model.{key}", f"feature-map resolutions among {maps} at data.resolution "
                                                 f"{resolution}, got {r}")


def feature_resolutions(resolution: int) -> list[int]:
    """The hidden feature-map sizes of both networks: 4, 8, ..., resolution/2."""
    sizes, r = [], 4
    while r < resolution:
        sizes.append(r)
        r *= 2
    return sizes


def channels_at(r: int, resolution: int, base: int, cap: int) -> int:
    return min(base * resolution // (2 * r), cap)


# ---------------------------------------------------------------------------
# Layers

class SelfAttention(nn.Module):
    """y = x + gamma * softmax attention over all positions (SAGAN section 3).

    Query and key are 1x1 projections to channels/8, value a 1x1 projection to
    the full width; position j attends to position i with weight
    softmax_i(q_j . k_i) (no 1/sqrt(d) scaling, as in the paper). gamma starts
    at 0, so the block begins as the identity and the network learns how much
    non-local evidence to mix in.

    Args:
        channels: width of the feature map
        wrap:     applied to every projection (spectral_norm in D, and in G with model.g_spectral_norm)
    """

    def __init__(self, channels: int, wrap=lambda module: module):
        super().__init__()
        inner = max(channels // 8, 1)
        self.query = wrap(nn.Conv2d(channels, inner, 1))
        self.key = wrap(nn.Conv2d(channels, inner, 1))
        self.value = wrap(nn.Conv2d(channels, channels, 1))
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q = self.query(x).flatten(2).transpose(1, 2)[:, None]  # [B, 1, HW, C/8]
        k = self.key(x).flatten(2).transpose(1, 2)[:, None]
        v = self.value(x).flatten(2).transpose(1, 2)[:, None]  # [B, 1, HW, C]
        out = F.scaled_dot_product_attention(q, k, v, scale=1.0)
        return x + self.gamma * out[:, 0].transpose(1, 2).reshape(b, c, h, w)


class _SumOverProcesses(torch.autograd.Function):
    """all_reduce(SUM) whose gradient is the all_reduce(SUM) of the incoming gradients."""

    @staticmethod
    def forward(ctx, x):
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad


class CPUSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d with statistics over the global batch of a CPU (gloo) process group.

    torch.nn.SyncBatchNorm only runs on GPUs; this is the same computation for
    several CPU processes (the tests' torchrun runs): per-channel sums are
    all-reduced (mean first, then the centred second moment), gradients flow
    through the reductions, running statistics use the global batch. Outside
    training, or without a process group, it is plain BatchNorm2d. The state
    dict is BatchNorm2d's, so checkpoints load into either.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        dtype, x = x.dtype, x.float()
        dims = (0, 2, 3)
        local_count = torch.tensor([x.numel() // x.shape[1]], dtype=x.dtype, device=x.device)
        totals = _SumOverProcesses.apply(torch.cat([x.sum(dims), local_count]))
        count = totals[-1]
        mean = totals[:-1] / count
        centred = x - mean[None, :, None, None]
        var = _SumOverProcesses.apply(centred.square().sum(dims)) / count
        y = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = self.momentum if self.momentum is not None else 1 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean, momentum)
                self.running_var.lerp_(var * count / (count - 1).clamp(min=1), momentum)
        return y.to(dtype)


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm without its own scale and shift; they come from the label: y = bn(x) * (1 + g(c)) + b(c),
    g and b linear maps that start at 0 (so training starts from plain BatchNorm)."""

    def __init__(self, channels: int, c_dim: int, batchnorm=nn.BatchNorm2d):
        super().__init__()
        self.norm = batchnorm(channels, affine=False)
        self.gain, self.shift = nn.Linear(c_dim, channels, bias=False), nn.Linear(c_dim, channels, bias=False)
        nn.init.zeros_(self.gain.weight)
        nn.init.zeros_(self.shift.weight)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.norm(x) * (1 + self.gain(c)[:, :, None, None]) + self.shift(c)[:, :, None, None]


def batchnorm_for(device: torch.device, num_processes: int) -> type[nn.BatchNorm2d]:
    """BatchNorm2d alone, SyncBatchNorm under several processes (our CPU version where torch's refuses)."""
    if num_processes == 1:
        return nn.BatchNorm2d
    return nn.SyncBatchNorm if device.type == "cuda" else CPUSyncBatchNorm


# ---------------------------------------------------------------------------
# Generator

class Generator(nn.Module):
    def __init__(self,
                 z_dim: int,                # latent size
                 resolution: int,           # output resolution, 4 * 2^k with k >= 1
                 channels: int,             # output image channels
                 base_channels: int = 64,   # width at resolution/2, doubled per halving
                 max_channels: int = 512,   # width cap
                 attention=(16,),           # feature-map resolutions followed by self-attention
                 batchnorm=nn.BatchNorm2d,  # normalization class (SyncBatchNorm under several processes)
                 spectral=False,            # spectrally normalize every convolution (the SAGAN paper's G)
                 c_dim: int = 0,            # encoded label width: conditional BatchNorm; 0: unconditional
                 ):
        super().__init__()
        self.z_dim, self.resolution, self.channels, self.c_dim = z_dim, resolution, channels, c_dim
        width = lambda r: channels_at(r, resolution, base_channels, max_channels)  # noqa: E731
        wrap = spectral_norm if spectral else (lambda module: module)
        norm = (lambda n: ConditionalBatchNorm2d(n, c_dim, batchnorm)) if c_dim else batchnorm
        layers = [wrap(nn.ConvTranspose2d(z_dim, width(4), 4, 1, 0, bias=False)), norm(width(4)), nn.ReLU()]
        for r in feature_resolutions(resolution):
            if r > 4:
                layers += [wrap(nn.ConvTranspose2d(width(r // 2), width(r), 4, 2, 1, bias=False)),
                           norm(width(r)), nn.ReLU()]
            if r in attention:
                layers.append(SelfAttention(width(r), wrap=wrap))
        layers += [wrap(nn.ConvTranspose2d(width(resolution // 2), channels, 4, 2, 1)), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        if not self.c_dim:
            return self.net(z[:, :, None, None])
        x = z[:, :, None, None]
        for layer in self.net:
            x = layer(x, c) if isinstance(layer, ConditionalBatchNorm2d) else layer(x)
        return x


def build_generator(model: SAGANModel, resolution: int, channels: int, batchnorm=nn.BatchNorm2d,
                    c_dim: int = 0) -> Generator:
    return Generator(model.z_dim, resolution, channels, base_channels=model.g_channels,
                     max_channels=model.max_channels, attention=tuple(model.g_attention), batchnorm=batchnorm,
                     spectral=model.g_spectral_norm, c_dim=c_dim)


# ---------------------------------------------------------------------------
# Discriminator

class Discriminator(nn.Module):
    def __init__(self,
                 resolution: int,          # input resolution, 4 * 2^k with k >= 1
                 channels: int,            # input image channels
                 base_channels: int = 64,  # width at resolution/2, doubled per halving
                 max_channels: int = 512,  # width cap
                 attention=(16,),          # feature-map resolutions followed by self-attention
                 c_dim: int = 0,           # encoded label width: a projection term; 0: unconditional
                 ):
        super().__init__()
        width = lambda r: channels_at(r, resolution, base_channels, max_channels)  # noqa: E731
        self.c_dim = c_dim
        layers, previous = [], channels
        for r in reversed(feature_resolutions(resolution)):
            layers += [spectral_norm(nn.Conv2d(previous, width(r), 4, 2, 1)), nn.LeakyReLU(0.2)]
            if r in attention:
                layers.append(SelfAttention(width(r), wrap=spectral_norm))
            previous = width(r)
        layers.append(spectral_norm(nn.Conv2d(previous, 1, 4, 1, 0)))
        self.net = nn.Sequential(*layers)
        if c_dim:
            self.embed = spectral_norm(nn.Linear(c_dim, previous, bias=False))

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """Images [B, C, H, W] (and encoded labels [B, c_dim]) -> one logit per image [B]."""
        if not self.c_dim:
            return self.net(x).flatten()
        features = self.net[:-1](x)
        projection = (features.sum(dim=(2, 3)) * self.embed(c.to(features.dtype))).sum(dim=1)
        return self.net[-1](features).flatten() + projection


def build_discriminator(model: SAGANModel, resolution: int, channels: int, c_dim: int = 0) -> Discriminator:
    return Discriminator(resolution, channels, base_channels=model.d_channels, max_channels=model.max_channels,
                         attention=tuple(model.d_attention), c_dim=c_dim)


# ---------------------------------------------------------------------------
# Sampling from a checkpoint

def sampler_from_checkpoint(checkpoint: dict, device, seed: int = 0, truncation: float = 1.0,
                            use_ema: bool = True, labels: torch.Tensor | None = None, **options):
    """Sample indices -> images in [-1, 1] from the checkpoint's G_ema (or G), in eval mode.

    BatchNorm uses its running statistics, so sample i depends only on (seed, i).
    `truncation` scales the latent towards its mean (0): psi < 1 trades variety for fidelity.
    A conditional G draws sample i's label from the training set's (checkpoint["labels"]) by
    (seed, i), or takes row i % K of `labels` [K, c_dim].
    """
    if options:
        raise ValueError(f"sagan samplers take no options, got {sorted(options)}")
    config = checkpoint["config"]
    try:
        model = from_dict(SAGANModel, config["model"], "model.")
    except ConfigError as e:
        raise ValueError(f"checkpoint config does not describe a SAGAN: {e}")
    c_dim = LabelEncoding.from_config(config["data"]).c_dim
    G = build_generator(model, config["data"]["resolution"], config["data"]["channels"], c_dim=c_dim)
    G.load_state_dict(checkpoint["G_ema"] if use_ema and "G_ema" in checkpoint else checkpoint["G"])
    G.eval().requires_grad_(False).to(device)
    table = checkpoint.get("labels") if labels is None else labels

    def labels_for(indices: torch.Tensor) -> torch.Tensor | None:
        if not c_dim:
            return None
        rows = labels_for_indices(table, indices, seed) if labels is None else table[indices % len(table)]
        return rows.to(device)

    @torch.no_grad()
    def sample(indices: torch.Tensor) -> torch.Tensor:
        z = latents_for_indices(indices, model.z_dim, seed).to(device)
        return G(z * truncation, labels_for(indices))

    sample.channels, sample.resolution, sample.labels_for, sample.G = G.channels, G.resolution, labels_for, G
    return sample
