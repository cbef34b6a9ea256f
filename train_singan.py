"""Train SinGAN: a generative model of one image, learned scale by scale.

    python train_singan.py --config configs/singan.yaml data.path=frame.png [key=value ...]
    python train_singan.py --config configs/singan.yaml --resume auto out_dir=runs/singan-1
    accelerate launch --multi_gpu --num_processes N train_singan.py --config configs/singan.yaml train.batch_size=N
    torchrun --nproc_per_node 2 train_singan.py --config configs/singan_tiny.yaml train.batch_size=2

The image (`data.path`: one file; a folder or .zip gives its first image;
`builtin:particles` one rendered frame) keeps its own channels (`data.channels:
auto`: 1 for a grayscale file, 3 otherwise; the log says which), is shrunk to
`data.max_size` on its long side and rescaled by about `data.scale_factor` per
scale down to `data.min_size` on its short side, in as many scales as the
reference implementation makes (11 for a 250 px image at the defaults). Each
scale, coarsest first, trains `train.steps_per_scale` iterations of
`train.d_steps` WGAN-GP critic steps and `train.g_steps` generator steps
(adversarial + `train.recon_weight` x the reconstruction of the real image from
a fixed noise map at the coarsest scale and none above it), then freezes.
Noise at scale n has the standard deviation `train.noise_weight` x the RMSE
between the real image and the up-sampled reconstruction from scale n-1 (1 at
the coarsest scale).

`train.batch_size` is the number of noise maps per step over all processes
(the reference uses 1); each process draws its own `batch_size / processes`
maps and the gradients are averaged, so several processes act as one larger
batch. D normalizes each map on its own, so several maps per process keep each
one's gradient penalty independent of the others. The reconstruction term is
the same on every process.

At the end of every scale: reconstruction PSNR/SSIM and SIFID over
`eval.num_samples` samples go to metrics.jsonl and TensorBoard, sample and
reconstruction grids to samples/, and the checkpoint to checkpoints/last.pt
(also every `train.checkpoint_every` steps within a scale). At the end,
samples/ also holds the real image, the reconstruction, an overview (real
image first, then samples) and sample grids at the sizes of
`eval.size_factors`. Generate any size later with
`python eval/generate.py --ckpt CKPT --size HxW [--start-scale n]`.
"""

import hashlib
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Literal

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch
import torch.nn.functional as F

from nets.singan import (PADDING_OF_KEYLESS_CONFIGS, build_scale, checkpoint_padding, draw_noise, image_pyramid,
                         init_weights, noise_border, pyramid_sizes, resize, scale_width, synthesize, output_sizes)
from training.checkpoint import CheckpointError, load_checkpoint
from training.config import BaseConfig, DataConfig, EvalConfig, TrainConfig, check, to_dict
from training.data import load_image_full
from training.images import make_grid, save_png, to_float, to_uint8
from training.loop import Context, ScalarAverager, finish, model_differences, start, user_errors
from training.optim import adam, load_optimizer_state
from training.progress import Progress, write
from training.seeding import generator, rng_state, set_rng_state

SAMPLE_GRID = 16  # random samples in each grid

# The seed log's names (the SinGAN training log this project started from) -> TensorBoard tags (printed every
# train.log_every steps).
SEED_LOG_NAMES = {"D": "Loss/D/total", "D_r": "Loss/D/real", "D_f": "Loss/D/fake", "D_gp": "Loss/D/gp",
                  "G": "Loss/G/total", "G_recon": "Loss/G/recon", "G_adv": "Loss/G/adv", "amp": "Train/noise_amp"}


# ---------------------------------------------------------------------------
# Config

@dataclass
class SinGANData(DataConfig):
    path: str = "builtin:particles"  # one image; a folder or .zip: its first image; builtin:particles[?seed=S]: one frame
    resolution: int = 0              # unused: SinGAN keeps the image's aspect ratio (see max_size); must stay 0
    channels: int | Literal["auto"] = "auto"  # auto: the image's own (1 for a grayscale file, 3 otherwise); 1 or 3
    hflip: bool = False              # unused: the image is learned as it is; must stay false
    vflip: bool = False              # unused; must stay false
    max_size: int = 250              # long side of the finest scale (larger images shrink; builtin frame size)
    min_size: int = 25               # short side of the coarsest scale
    scale_factor: float = 0.75       # size ratio between scales (adjusted so the coarsest is exactly min_size)

    def validate(self):
        check(self.resolution == 0, "data.resolution", "0 for SinGAN (the image keeps its shape; set data.max_size)")
        check(not self.hflip and not self.vflip, "data.hflip/vflip", "false for SinGAN (no augmentation)")
        check(self.channels in (1, 3, "auto"), "data.channels", "1, 3 or auto")
        check(self.normalize == "linear" and self.range is None, "data.normalize/range",
              "the defaults for SinGAN (it learns one 8-bit image)")
        check(self.min_size >= 4, "data.min_size", "an integer >= 4")
        check(self.max_size >= self.min_size, "data.max_size", f"an integer >= data.min_size ({self.min_size})")
        check(0.1 <= self.scale_factor < 1, "data.scale_factor", "a number in [0.1, 1)")


@dataclass
class SinGANModel:
    channels: int = 32       # feature channels of G and D at the coarsest scale
    max_channels: int = 128  # cap on the doubling
    double_every: int = 4    # the width doubles every this many scales
    layers: int = 5          # 3x3 conv layers per network (receptive field 2 * layers + 1 pixels)
    padding: Literal["noise", "zero", "same"] = "noise"  # noise: G's input padded once with noise (the image
                             # mirrored), D unpadded: no border to copy by. zero: the reference's (input padded
                             # once with zeros, unpadded convs). same: zeros in every conv of G and D (not the
                             # reference; what a checkpoint without the key was trained with)

    def validate(self):
        check(self.channels >= 1, "model.channels", "a positive integer")
        check(self.max_channels >= self.channels, "model.max_channels", "an integer >= model.channels")
        check(self.double_every >= 1, "model.double_every", "a positive integer")
        check(self.layers >= 2, "model.layers", "an integer >= 2")
        check(self.padding in ("noise", "zero", "same"), "model.padding", "noise, zero or same")


@dataclass
class SinGANTrain(TrainConfig):
    batch_size: int = 1                 # noise maps per step over all processes (a multiple of the process count)
    kimg: float = 0.0                   # unused: the length is steps_per_scale per scale; must stay 0
    log_every_kimg: float = 0.0         # unused (see log_every); must stay 0
    sample_every_kimg: float = 0.0      # unused (grids at every scale's end); must stay 0
    checkpoint_every_kimg: float = 0.0  # unused (see checkpoint_every); must stay 0
    steps_per_scale: int = 2000         # iterations per scale
    lr: float = 5e-4                    # Adam learning rate of G and D (the reference's; the seed log used 4e-4)
    beta1: float = 0.5
    beta2: float = 0.999
    lr_drop_at: float = 0.8             # after this fraction of a scale's steps ...
    lr_drop: float = 0.1                # ... the learning rates are multiplied by this
    d_steps: int = 3                    # critic steps per iteration
    g_steps: int = 3                    # generator steps per iteration
    gp_weight: float = 0.1              # WGAN-GP lambda (gradient norm per pixel over channels, as the reference)
    recon_weight: float = 10.0          # alpha: weight of the reconstruction MSE
    noise_weight: float = 0.1           # noise std at scale n = noise_weight x RMSE of the reconstruction from n-1
    log_every: int = 100                # steps between TensorBoard scalars / printed lines
    checkpoint_every: int = 500         # steps between checkpoints within a scale (always at a scale's end)
    max_steps: int = 0                  # > 0: stop with a checkpoint after this many steps over all scales (a job
                                        # time limit); --resume auto goes on. 0: train every scale

    def validate(self):
        check(self.batch_size >= 1, "train.batch_size", "a positive integer")
        for key, replacement in (("kimg", "train.steps_per_scale"), ("log_every_kimg", "train.log_every"),
                                 ("sample_every_kimg", "nothing: grids are saved at every scale's end"),
                                 ("checkpoint_every_kimg", "train.checkpoint_every")):
            check(getattr(self, key) == 0, f"train.{key}", f"0: SinGAN does not use it (set {replacement})")
        for key in ("steps_per_scale", "d_steps", "g_steps", "log_every", "checkpoint_every"):
            check(getattr(self, key) >= 1, f"train.{key}", "a positive integer")
        check(self.collective_timeout_s > 0, "train.collective_timeout_s", "a positive number")
        check(self.max_steps >= 0, "train.max_steps", "an integer >= 0 (0: no limit)")
        check(self.lr > 0, "train.lr", "a positive number")
        for key in ("beta1", "beta2"):
            check(0 <= getattr(self, key) < 1, f"train.{key}", "a number in [0, 1)")
        check(0 <= self.lr_drop_at <= 1, "train.lr_drop_at", "a fraction in [0, 1]")
        check(0 < self.lr_drop <= 1, "train.lr_drop", "a number in (0, 1]")
        for key in ("gp_weight", "recon_weight", "noise_weight"):
            check(getattr(self, key) >= 0, f"train.{key}", "a number >= 0")


@dataclass
class SinGANEval(EvalConfig):
    every_kimg: float = 0.0    # unused: SinGAN evaluates at the end of every scale; must stay 0
    num_samples: int = 50      # random samples scored by SIFID at every scale's end
    batch_size: int = 16       # samples per generator / Inception call
    sifid: bool = True         # SIFID (needs the Inception weights: python eval/inception_weights.py)
    sifid_features: Literal["block1", "authors"] = "block1"  # block1: pytorch-fid's block 1 (192-d); authors:
                               # the SinGAN authors' code (64-d, torchvision's ImageNet weights); see eval/sifid.py
    size_factors: list[str] = field(default_factory=lambda: ["1x2", "2x1"])  # final extra grids: HxW x training size

    def validate(self):
        check(self.every_kimg == 0, "eval.every_kimg", "0: SinGAN evaluates at the end of every scale")
        check(self.num_samples >= 1, "eval.num_samples", "a positive integer")
        check(self.batch_size >= 1, "eval.batch_size", "a positive integer")
        for text in self.size_factors:
            check(parse_factors(text) is not None, "eval.size_factors",
                  f"entries like 1x2 (height x width multiples of the training size), got {text!r}")


@dataclass
class SinGANConfig(BaseConfig):
    data: SinGANData = field(default_factory=SinGANData)
    model: SinGANModel = field(default_factory=SinGANModel)
    train: SinGANTrain = field(default_factory=SinGANTrain)
    eval: SinGANEval = field(default_factory=SinGANEval)

    def validate(self):
        if self.model.padding != "same":  # D's unpadded stack needs one whole patch at the coarsest scale
            patch = 2 * self.model.layers + 1
            check(self.data.min_size >= patch, "data.min_size",
                  f"an integer >= {patch} with model.padding={self.model.padding} (one {patch}x{patch} patch for D)")


def parse_factors(text: str) -> tuple[float, float] | None:
    """'1x2' -> (1.0, 2.0); None when malformed."""
    try:
        fy, fx = (float(part) for part in text.lower().split("x"))
    except ValueError:
        return None
    return (fy, fx) if fy > 0 and fx > 0 else None


# ---------------------------------------------------------------------------
# Distributed helpers (each scale builds new networks, so gradients are averaged here instead of by DDP)

def average_gradients(module: torch.nn.Module, world: int) -> None:
    """Mean of every parameter's gradient over the processes, in one all-reduce."""
    if world == 1:
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= world
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset:offset + grad.numel()].view_as(grad))
        offset += grad.numel()


def average_buffers(module: torch.nn.Module, world: int) -> None:
    """BatchNorm running statistics are per process; their mean makes the frozen scale identical everywhere."""
    if world == 1:
        return
    for buffer in module.buffers():
        if buffer.is_floating_point():
            torch.distributed.all_reduce(buffer)
            buffer /= world


def state_digest(*modules: torch.nn.Module) -> str:
    """SHA-256 of every parameter and buffer, to check that the processes hold the same networks."""
    digest = hashlib.sha256()
    for module in modules:
        for value in module.state_dict().values():
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------------
# Training

def gradient_penalty(D: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """WGAN-GP of each sample, [B]: (|grad D| - 1)^2 at alpha * real + (1 - alpha) * fake, the norm
    taken over channels at each pixel and averaged over pixels (the reference's form, which its
    lambda fits). D's per-sample BatchNorm keeps one sample's penalty independent of the others."""
    mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    grad, = torch.autograd.grad(D(mixed).sum(), mixed, create_graph=True)
    return (grad.norm(2, dim=1) - 1).pow(2).flatten(1).mean(1)


class SinGANTrainer:
    name = "singan"

    def __init__(self, config: SinGANConfig, accelerator, run, image_uint8: torch.Tensor):
        self.config, self.accelerator, self.run = config, accelerator, run
        self.device = accelerator.device
        self.rank, self.world = accelerator.process_index, accelerator.num_processes
        self.local_batch = config.train.batch_size // self.world
        d = config.data
        self.sizes = pyramid_sizes(image_uint8.shape[1], image_uint8.shape[2], d.max_size, d.min_size, d.scale_factor)
        self.reals = image_pyramid(to_float(image_uint8)[None].to(self.device), self.sizes)
        self.reals_uint8 = [to_uint8(real)[0].cpu() for real in self.reals]
        fixed = generator(config.seed, "fixed_noise")  # the same on every process: one reconstruction
        border = noise_border(config.model.layers, config.model.padding)
        noise_size = (self.sizes[0][0] + 2 * border, self.sizes[0][1] + 2 * border)
        self.fixed_noise = draw_noise(fixed, (1, d.channels, *noise_size), True, "cpu").to(self.device)
        self.generators, self.discriminators, self.noise_amps = [], [], []
        self.scale, self.step = 0, 0
        self.wallclock_before = 0.0  # seconds trained before a resume
        self.started = time.perf_counter()
        self.sifid_ready = config.eval.sifid and self._inception_available()
        self.sifid_network = None  # the feature extractor, built at the first evaluation

    def _inception_available(self) -> bool:
        from eval.inception_weights import WeightsError, weights_present
        if self.config.eval.sifid_features == "authors":
            from eval.sifid import AuthorsFeatures
            try:
                AuthorsFeatures.imagenet_weights()  # torchvision downloads them when it can
                return True
            except WeightsError as error:
                self.accelerator.print(f"warning: SIFID skipped: {error}")
                return False
        if weights_present():
            return True
        self.accelerator.print("warning: Inception weights missing, SIFID skipped "
                               "(run python eval/inception_weights.py, or set eval.sifid=false)")
        return False

    # -- helpers

    @property
    def G(self):
        return self.generators[self.scale]

    @property
    def D(self):
        return self.discriminators[self.scale]

    def global_step(self, scale: int, step: int) -> int:
        """Iterations over all scales: TensorBoard's x axis and checkpoint["step"]."""
        return scale * self.config.train.steps_per_scale + step

    def wallclock(self) -> float:
        return self.wallclock_before + time.perf_counter() - self.started

    def noise_source(self, g: torch.Generator):
        return lambda k, shape: draw_noise(g, shape, k == 0, self.device)

    def random_input(self, g: torch.Generator, batch: int) -> torch.Tensor:
        """The frozen coarser scales' random sample, up-sampled to this scale (zeros at scale 0)."""
        n = self.scale
        if n == 0:
            return torch.zeros(batch, self.config.data.channels, *self.sizes[0], device=self.device)
        with torch.no_grad(), self.accelerator.autocast():
            x = synthesize(self.generators[:n], self.noise_amps, self.sizes, self.noise_source(g), batch)
        return resize(x.float(), self.sizes[n])

    def reconstruction_input(self, scale: int) -> torch.Tensor:
        """The frozen coarser scales' reconstruction, up-sampled to `scale` (zeros at scale 0)."""
        if scale == 0:
            return torch.zeros(1, self.config.data.channels, *self.sizes[0], device=self.device)
        with torch.no_grad():
            x = synthesize(self.generators[:scale], self.noise_amps, self.sizes, None,
                           fixed_noise=self.fixed_noise, start_scale=scale)
        return resize(x, self.sizes[scale])

    # -- scales

    def build_scale(self, n: int):
        """Fresh G and D of scale n, initialized from scale n-1 when the widths match."""
        cfg, channels = self.config, self.config.data.channels
        g = generator(cfg.seed, "init", n)
        G, D = build_scale("G", to_dict(cfg), n, channels), build_scale("D", to_dict(cfg), n, channels)
        init_weights(G, g)
        init_weights(D, g)
        m = cfg.model
        if n > 0 and scale_width(n, m.channels, m.max_channels, m.double_every) == \
                scale_width(n - 1, m.channels, m.max_channels, m.double_every):
            G.load_state_dict(self.generators[n - 1].state_dict())
            D.load_state_dict(self.discriminators[n - 1].state_dict())
        return G.to(self.device).train(), D.to(self.device).train()

    def make_optimizers(self):
        t, fp16 = self.config.train, self.config.precision == "fp16"
        self.opt_G = adam(self.G.parameters(), lr=t.lr, betas=(t.beta1, t.beta2))
        self.opt_D = adam(self.D.parameters(), lr=t.lr, betas=(t.beta1, t.beta2))
        self.scaler_G = torch.amp.GradScaler(self.device.type, enabled=fp16)
        self.scaler_D = torch.amp.GradScaler(self.device.type, enabled=fp16)

    def begin_scale(self, n: int) -> None:
        self.scale, self.step = n, 0
        for G in self.generators:
            G.eval().requires_grad_(False)
        G, D = self.build_scale(n)
        self.generators.append(G)
        self.discriminators.append(D)
        self.recon_input = self.reconstruction_input(n)
        if n == 0:
            amp = 1.0
        else:
            rmse = torch.sqrt(F.mse_loss(self.recon_input, self.reals[n]))
            amp = self.config.train.noise_weight * float(rmse)
        self.noise_amps.append(amp)
        self.make_optimizers()

    # -- one iteration

    def optimize(self, network, optimizer, scaler, loss) -> None:
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        average_gradients(network, self.world)
        scaler.step(optimizer)
        scaler.update()

    def gradient_penalty(self, real: torch.Tensor, fake: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """gp_weight x the mean of this process's per-sample penalties, in fp32."""
        alpha = torch.rand((len(real), 1, 1, 1), generator=g, device=self.device)
        with torch.autocast(self.device.type, enabled=False):
            return self.config.train.gp_weight * gradient_penalty(self.D, real, fake, alpha).mean()

    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        t, n, acc = self.config.train, self.scale, self.accelerator
        lr = t.lr * (t.lr_drop if step >= round(t.lr_drop_at * t.steps_per_scale) else 1.0)
        for optimizer in (self.opt_G, self.opt_D):
            for group in optimizer.param_groups:
                group["lr"] = lr
        g = generator(self.config.seed, "noise", self.rank, n, step, device=self.device)  # each process its own
        batch, amp, G, D = self.local_batch, self.noise_amps[n], self.G, self.D
        shape = (batch, self.config.data.channels, *G.input_size(self.sizes[n]))
        real = self.reals[n].expand(batch, -1, -1, -1)
        stats = {}

        D.requires_grad_(True)
        for _ in range(t.d_steps):
            previous = self.random_input(g, batch)
            z = draw_noise(g, shape, n == 0, self.device)
            with torch.no_grad(), acc.autocast():
                fake = G(amp * z, previous).float()
            with acc.autocast():
                loss_real = -D(real).float().mean()
                loss_fake = D(fake).float().mean()
            gp = self.gradient_penalty(real, fake, g)
            loss = loss_real + loss_fake + gp
            self.optimize(D, self.opt_D, self.scaler_D, loss)
            for name, value in (("D/total", loss), ("D/real", loss_real), ("D/fake", loss_fake), ("D/gp", gp)):
                stats[name] = stats.get(name, 0) + value.detach() / t.d_steps

        D.requires_grad_(False)
        recon_noise = self.fixed_noise if n == 0 else torch.zeros(1, *shape[1:], device=self.device)
        for _ in range(t.g_steps):
            previous = self.random_input(g, batch)
            z = draw_noise(g, shape, n == 0, self.device)
            with acc.autocast():
                loss_adv = -D(G(amp * z, previous)).float().mean()
                reconstruction = G(amp * recon_noise, self.recon_input).float()
            loss_recon = F.mse_loss(reconstruction, self.reals[n])
            loss = loss_adv + t.recon_weight * loss_recon
            self.optimize(G, self.opt_G, self.scaler_G, loss)
            for name, value in (("G/total", loss), ("G/adv", loss_adv), ("G/recon", loss_recon)):
                stats[name] = stats.get(name, 0) + value.detach() / t.g_steps

        scalars = {f"Loss/{name}": value for name, value in stats.items()}
        scalars["Train/noise_amp"], scalars["Train/lr"], scalars["Train/scale"] = amp, lr, n
        return scalars

    # -- sampling and evaluation (main process, frozen networks, no communication)

    @torch.no_grad()
    def samples(self, scale: int, indices: torch.Tensor, size=None) -> torch.Tensor:
        """Random samples through scale `scale`; sample i depends on (seed, i) only."""
        generators = self.generators[:scale + 1]
        modes = [G.training for G in generators]
        for G in generators:
            G.eval()
        sizes = output_sizes(self.sizes[:scale + 1], size)
        images = []
        for start_index in range(0, len(indices), self.config.eval.batch_size):
            chunk = indices[start_index:start_index + self.config.eval.batch_size]
            per_sample = [generator(self.config.seed, "sample", int(i), device=self.device) for i in chunk]

            def noise(k, shape):
                return torch.cat([draw_noise(g, (1, *shape[1:]), k == 0, self.device) for g in per_sample])

            images.append(synthesize(generators, self.noise_amps, sizes, noise, batch=len(chunk)))
        for G, mode in zip(generators, modes):
            G.train(mode)
        return torch.cat(images)

    @torch.no_grad()
    def reconstruction(self, scale: int) -> torch.Tensor:
        generators = self.generators[:scale + 1]
        modes = [G.training for G in generators]
        for G in generators:
            G.eval()
        x = synthesize(generators, self.noise_amps, self.sizes, None, fixed_noise=self.fixed_noise,
                       start_scale=scale + 1)
        for G, mode in zip(generators, modes):
            G.train(mode)
        return x

    def evaluate_scale(self, n: int) -> None:
        """Reconstruction PSNR/SSIM, SIFID, grids: metrics.jsonl, TensorBoard, samples/."""
        from eval.psnr_ssim import reconstruction_quality
        run, t = self.run, self.config.train
        step = self.global_step(n, t.steps_per_scale)
        kimg = step / 1000  # Run's x axis is kimg * 1000: SinGAN's is the iteration count
        reconstruction = to_uint8(self.reconstruction(n))[0].cpu()
        record = {"scale": n, "size": list(self.sizes[n]), "step": step, "kimg": kimg,
                  "wallclock_s": round(self.wallclock(), 2), "noise_amp": self.noise_amps[n],
                  **reconstruction_quality(reconstruction, self.reals_uint8[n])}
        fakes = to_uint8(self.samples(n, torch.arange(max(self.config.eval.num_samples, SAMPLE_GRID)))).cpu()
        if self.sifid_ready:
            from eval.sifid import SIFID, ImageTooSmall
            try:
                metric = SIFID(self.reals_uint8[n], self.device, features=self.sifid_network,
                               batch_size=self.config.eval.batch_size, layer=self.config.eval.sifid_features)
                self.sifid_network = metric.features
                record |= metric.evaluate(fakes[:self.config.eval.num_samples])
            except ImageTooSmall:
                pass  # coarse scales (under 35 px for block1) have one position or none
        run.log_metrics(record, kimg)
        run.save_samples(fakes[:SAMPLE_GRID], kimg, name="random")
        run.save_samples(torch.stack([self.reals_uint8[n], reconstruction]), kimg, name="reconstruction")
        self.accelerator.print(f"scale {n} ({self.sizes[n][0]}x{self.sizes[n][1]}) done: "
                               + ", ".join(f"{k} {v:.4g}" for k, v in record.items()
                                           if isinstance(v, float) and k not in ("kimg", "wallclock_s")))

    def final_outputs(self) -> None:
        """The real image, the reconstruction, an overview and sample grids at other sizes."""
        run, last = self.run, len(self.sizes) - 1
        real = self.reals_uint8[last]
        save_png(make_grid(real[None]), run.path("samples", "real.png"))
        save_png(make_grid(to_uint8(self.reconstruction(last)).cpu()), run.path("samples", "reconstruction.png"))
        samples = to_uint8(self.samples(last, torch.arange(7))).cpu()
        save_png(make_grid(torch.cat([real[None], samples]), columns=4), run.path("samples", "overview.png"))
        height, width = self.sizes[last]
        for text in ["1x1", *self.config.eval.size_factors]:
            fy, fx = parse_factors(text)
            size = (max(1, round(height * fy)), max(1, round(width * fx)))
            images = to_uint8(self.samples(last, torch.arange(SAMPLE_GRID // 2), size)).cpu()
            save_png(make_grid(images, columns=4), run.path("samples", f"final_{size[0]}x{size[1]}.png"))

    # -- checkpoints

    def state_dict(self) -> dict:
        step = self.global_step(self.scale, self.step)
        return {
            "model": self.name, "config": to_dict(self.config), "step": step, "kimg": step / 1000,
            "scale": self.scale, "scale_step": self.step, "wallclock_s": self.wallclock(), "rng": rng_state(),
            "pyramid": [list(s) for s in self.sizes], "noise_amps": list(self.noise_amps),
            "fixed_noise": self.fixed_noise.cpu(), "real": self.reals_uint8[-1],
            "G": {str(k): G.state_dict() for k, G in enumerate(self.generators)},
            "D": {str(k): D.state_dict() for k, D in enumerate(self.discriminators)},
            "optimizers": {"G": self.opt_G.state_dict(), "D": self.opt_D.state_dict()},
            "scalers": {"G": self.scaler_G.state_dict(), "D": self.scaler_D.state_dict()},
        }

    def save(self) -> None:
        if self.run.is_main:
            self.run.save_checkpoint(self.state_dict(), "last.pt")

    def check_resumable(self, checkpoint: dict, path: str) -> None:
        if checkpoint["model"] != self.name:
            raise CheckpointError(f"--resume: {path} is a {checkpoint['model']} run, not singan")
        saved, current = checkpoint["config"], to_dict(self.config)
        if "padding" not in saved["model"] and self.config.model.padding != PADDING_OF_KEYLESS_CONFIGS:
            raise CheckpointError(f"--resume: {path} was written before model.padding existed and trained with "
                                  f"zero padding in every convolution; add model.padding={PADDING_OF_KEYLESS_CONFIGS}")
        saved = {**saved, "model": {**saved["model"], "padding": checkpoint_padding(saved["model"])}}
        keys = [("data", "max_size"), ("data", "min_size"), ("data", "scale_factor"), ("data", "channels"),
                ("train", "steps_per_scale")]
        compared = model_differences(saved, self.config) + \
            [(f"{section}.{key}", saved[section][key], current[section][key]) for section, key in keys]
        for where, a, b in compared:
            if a != b:
                raise CheckpointError(f"--resume: the checkpoint was trained with {where}={a}, the config says "
                                      f"{b}; use the run's own config.yaml")
        if [tuple(s) for s in checkpoint["pyramid"]] != self.sizes or \
                not torch.equal(checkpoint["real"], self.reals_uint8[-1]):
            raise CheckpointError(f"--resume: {path} was trained on another image than {self.config.data.path}")

    def load(self, path: str) -> bool:
        """Restore a checkpoint; True when its newest scale is finished (training goes on with the next)."""
        checkpoint = load_checkpoint(path)
        self.check_resumable(checkpoint, path)
        channels, config = self.config.data.channels, checkpoint["config"]
        for k in range(len(checkpoint["noise_amps"])):
            G, D = build_scale("G", config, k, channels), build_scale("D", config, k, channels)
            G.load_state_dict(checkpoint["G"][str(k)])
            D.load_state_dict(checkpoint["D"][str(k)])
            self.generators.append(G.to(self.device).eval().requires_grad_(False))
            self.discriminators.append(D.to(self.device))
        self.noise_amps = list(checkpoint["noise_amps"])
        self.fixed_noise = checkpoint["fixed_noise"].to(self.device)
        self.scale, self.step = checkpoint["scale"], checkpoint["scale_step"]
        self.wallclock_before = checkpoint["wallclock_s"]
        set_rng_state(checkpoint["rng"])
        finished = self.step == self.config.train.steps_per_scale
        if not finished:
            self.G.train().requires_grad_(True)
            self.recon_input = self.reconstruction_input(self.scale)
            self.make_optimizers()
            load_optimizer_state(self.opt_G, checkpoint["optimizers"]["G"])
            load_optimizer_state(self.opt_D, checkpoint["optimizers"]["D"])
            self.scaler_G.load_state_dict(checkpoint["scalers"]["G"])
            self.scaler_D.load_state_dict(checkpoint["scalers"]["D"])
        self.accelerator.print(f"resumed from {path} at scale {self.scale} step {self.step}")
        return finished

    # -- the whole run

    def end_scale(self) -> None:
        n = self.scale
        average_buffers(self.G, self.world)
        average_buffers(self.D, self.world)
        if self.world > 1:
            digests = [None] * self.world
            torch.distributed.all_gather_object(digests, state_digest(self.G, self.D))
            if len(set(digests)) != 1:
                raise RuntimeError(f"scale {n}: the processes' networks differ after training ({digests})")
            self.accelerator.print(f"scale {n}: networks identical on {self.world} processes "
                                   f"(sha256 {digests[0][:16]})")
        self.G.eval().requires_grad_(False)
        if self.run.is_main:
            self.evaluate_scale(n)
            self.save()

    def train(self, resume_path: str | None) -> None:
        t, acc = self.config.train, self.accelerator
        first_scale, resume_mid_scale = 0, False
        if resume_path:
            with user_errors():
                finished = self.load(resume_path)
            first_scale, resume_mid_scale = (self.scale + 1, False) if finished else (self.scale, True)
        acc.print(f"{len(self.sizes)} scales: " + " -> ".join(f"{h}x{w}" for h, w in self.sizes)
                  + f"; {self.world} process(es) on {self.device}, run folder {self.config.out_dir}")
        averager = ScalarAverager(acc)
        for n in range(first_scale, len(self.sizes)):
            if not (resume_mid_scale and n == first_scale):
                self.begin_scale(n)
            window_start, window_steps = time.perf_counter(), 0
            progress = Progress(f"scale {n}/{len(self.sizes) - 1} ({self.sizes[n][0]}x{self.sizes[n][1]})",
                                total=t.steps_per_scale, unit="step", done=self.step, enabled=self.run.is_main)
            while self.step < t.steps_per_scale:
                averager.add(self.train_step(self.step))
                self.step += 1
                window_steps += 1
                progress.set(self.step)
                done = self.step == t.steps_per_scale
                if self.step % t.log_every == 0 or done:
                    scalars = averager.pop()
                    scalars["Progress/sec_per_step"] = (time.perf_counter() - window_start) / window_steps
                    self.run.log_scalars(scalars, self.global_step(n, self.step) / 1000)
                    write(f"scale {n}/{len(self.sizes) - 1} step {self.step}/{t.steps_per_scale}: " + " ".join(
                        f"{label} {scalars[key]:.4g}" for label, key in SEED_LOG_NAMES.items())
                        + f" ({scalars['Progress/sec_per_step']:.3f} s/step)")
                    window_start, window_steps = time.perf_counter(), 0
                if done:
                    progress.close()
                    self.end_scale()
                elif self.step % t.checkpoint_every == 0:
                    self.save()
                last = done and n == len(self.sizes) - 1
                if self.global_step(n, self.step) == t.max_steps and not last:
                    progress.close(finished=done)
                    if not done:
                        self.save()
                    write(f"stopped at train.max_steps={t.max_steps} (scale {n} step {self.step}); "
                          f"continue with --resume auto")
                    return
            progress.close()
        if self.run.is_main:
            self.final_outputs()


def load_training_image(config: SinGANConfig) -> tuple[torch.Tensor, str]:
    """The image as uint8 [C, H, W] with `config.data.channels` resolved to C; a line saying which was used."""
    d = config.data
    image = load_image_full(d.path, None if d.channels == "auto" else d.channels, d.max_size)
    how = "set by data.channels" if d.channels != "auto" else \
        "data.channels=auto: " + ("a grayscale image" if len(image) == 1 else "a colour image")
    d.channels = len(image)
    return image, f"image {d.path}: {image.shape[1]}x{image.shape[2]}, {d.channels} channel(s) ({how})"


def main() -> None:
    config, accelerator, run, resume_path = start(SinGANConfig, __doc__)
    with user_errors():
        image, description = load_training_image(config)
    accelerator.print(description)
    trainer = SinGANTrainer(config, accelerator, run, image)
    trainer.train(resume_path)
    finish(Context(config, accelerator, run, None, resume_path))


if __name__ == "__main__":
    main()
