"""Train StyleGAN2 on a small image set (a few hundred images), with DiffAugment.

    python train_stylegan2.py --config configs/small300.yaml
    accelerate launch --multi_gpu --num_processes 4 train_stylegan2.py --config configs/small300.yaml
    torchrun --nproc_per_node 2 train_stylegan2.py --config configs/stylegan2_tiny.yaml   # CPU processes
    python train_stylegan2.py --config configs/small300.yaml --resume auto out_dir=runs/a train.kimg=2000

One step: a D update on real and generated images (both augmented), every
train.r1_interval steps an extra D update on the R1 penalty, a G update, every
train.pl_interval steps an extra G update on the path-length penalty, then the
EMA of G. The lazy updates are weighted by their interval and the optimizers'
learning rate and betas are corrected for them (StyleGAN2 appendix B).

Every random number (latents, style-mixing cutoffs, noise maps, augmentation,
path-length directions) is drawn for the whole global batch from
training.seeding and sliced per process, so K processes train exactly like one
and a resumed run exactly like an uninterrupted one. With precision bf16 or
fp16, G's and D's blocks at the model.num_fp16_res highest resolutions run in
it and everything else in fp32 (nets.stylegan2.reduce_precision); the
regularizers run in fp32; with fp16 each optimizer has its own loss scaler.
"""

import copy
import inspect
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Literal, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch
import torch.nn.functional as F

from nets.stylegan2 import Sampler, build_discriminator, build_generator, full_precision, reduce_precision
from training.augment import AdaptiveAugment, AugmentConfig, diff_augment, parse_policy
from training.config import BaseConfig, ConfigError, TrainConfig, check, to_dict
from training.data import shard
from training.ema import ema_beta, update_ema
from training.loop import setup, train, user_errors
from training.labels import LabelEncoding
from training.optim import FlatGradients, adam, load_optimizer_state
from training.seeding import generator, randn
from training.vicinity import build_vicinity, draw_targets, fake_labels, real_rows


@dataclass
class StyleGAN2Model:
    z_dim: int = 512                      # latent width
    w_dim: int = 512                      # style width (and mapping hidden width)
    mapping_layers: int = 8               # depth of the mapping network
    mapping_lr_multiplier: float = 0.01   # mapping learns this much slower
    g_channel_base: int = 16384           # G feature maps at resolution r: g_channel_base / r ...
    g_channel_max: int = 512              # ... at most this
    d_channel_base: int = 16384           # the same for D
    d_channel_max: int = 512
    mbstd_group_size: int = 4             # samples per minibatch-std group (per process)
    conv_clamp: Optional[float] = 256.0   # clamp activations to +-conv_clamp (fp16 safety); null = off
    noise_max_resolution: Optional[int] = None  # G's per-pixel noise only in layers up to this size; 0 = none; null = all
    latent_input: bool = False            # G's 4x4 input mapped from the first style, not a learned constant
    num_fp16_res: int = 4                 # with precision bf16/fp16: G's and D's blocks at this many highest
                                          # resolutions (>= 8 px) run in it, the rest in fp32; 0 = all fp32

    def validate(self):
        for key in ("z_dim", "w_dim", "mapping_layers", "g_channel_base", "g_channel_max",
                    "d_channel_base", "d_channel_max", "mbstd_group_size"):
            check(getattr(self, key) >= 1, f"model.{key}", "a positive integer")
        check(self.mapping_lr_multiplier > 0, "model.mapping_lr_multiplier", "a positive number")
        check(self.conv_clamp is None or self.conv_clamp > 0, "model.conv_clamp", "a positive number or null")
        check(self.num_fp16_res >= 0, "model.num_fp16_res", "an integer >= 0")
        check(self.noise_max_resolution is None or self.noise_max_resolution >= 0, "model.noise_max_resolution",
              "a resolution >= 0 (0: no noise inputs) or null (every layer)")


@dataclass
class StyleGAN2Train(TrainConfig):
    lr: float = 0.002                     # Adam learning rate of G (and of D unless d_lr is set)
    d_lr: Optional[float] = None          # D's own learning rate (above lr: the two time-scale rule); null = lr
    beta1: float = 0.0
    beta2: float = 0.99
    lr_decay: Literal["none", "cosine"] = "none"  # cosine: from lr down to lr * lr_final_fraction at train.kimg
    lr_final_fraction: float = 0.1
    r1_gamma: float = 10.0                # R1 weight (gamma / 2 * |grad D(real)|^2); 0 = off
    r1_interval: int = 16                 # lazy R1: every this many steps
    pl_weight: float = 2.0                # path-length regularization weight; 0 = off
    pl_interval: int = 4                  # lazy PL: every this many steps
    pl_batch_shrink: int = 2              # PL uses batch_size / pl_batch_shrink images
    pl_decay: float = 0.01                # decay of the running mean path length
    style_mixing: float = 0.9             # probability that a sample mixes two latents
    ema_halflife_kimg: float = 10.0       # half-life of the G EMA in thousands of images
    ema_rampup: Optional[float] = 0.05    # half-life at most ema_rampup * images seen; null = no ramp-up
    compile: bool = False                 # torch.compile the forward passes without double backward
    label_vicinity: Literal["none", "hard", "soft"] = "none"  # CcGAN's vicinal losses for continuous labels
    label_kappa_factor: float = 1.0       # vicinity half-width kappa = this x the largest gap between label values

    def validate(self):
        super().validate()
        check(self.lr > 0, "train.lr", "a positive number")
        check(self.d_lr is None or self.d_lr > 0, "train.d_lr", "a positive number or null")
        check(0 <= self.beta1 < 1, "train.beta1", "a number in [0, 1)")
        check(0 <= self.beta2 < 1, "train.beta2", "a number in [0, 1)")
        check(0 <= self.lr_final_fraction <= 1, "train.lr_final_fraction", "a number in [0, 1]")
        check(self.r1_gamma >= 0, "train.r1_gamma", "a number >= 0")
        check(self.pl_weight >= 0, "train.pl_weight", "a number >= 0")
        for key in ("r1_interval", "pl_interval", "pl_batch_shrink"):
            check(getattr(self, key) >= 1, f"train.{key}", "a positive integer")
        check(0 <= self.pl_decay <= 1, "train.pl_decay", "a number in [0, 1]")
        check(0 <= self.style_mixing <= 1, "train.style_mixing", "a probability in [0, 1]")
        check(self.ema_halflife_kimg >= 0, "train.ema_halflife_kimg", "a number >= 0")
        check(self.ema_rampup is None or self.ema_rampup > 0, "train.ema_rampup", "a positive number or null")
        check(self.label_kappa_factor > 0, "train.label_kappa_factor", "a positive number")


@dataclass
class AdaptiveAugmentConfig(AugmentConfig):
    p: float = 1.0             # probability of each transform per image (with ada: the starting p)
    ada: bool = False          # adapt p to keep E[sign(D(real))] at ada_target
    ada_target: float = 0.6
    ada_interval: int = 4      # steps between adjustments of p
    ada_kimg: float = 100.0    # p can move by 1 in this many thousand images
    ada_p_max: float = 0.95    # p stays in [0, ada_p_max], ada_p_max < 1

    def validate(self):
        super().validate()
        check(0 <= self.p <= 1, "augment.p", "a probability in [0, 1]")
        check(0 <= self.ada_target <= 1, "augment.ada_target", "a number in [0, 1]")
        check(self.ada_interval >= 1, "augment.ada_interval", "a positive integer")
        check(self.ada_kimg > 0, "augment.ada_kimg", "a positive number")
        check(0 <= self.ada_p_max < 1, "augment.ada_p_max", "a number in [0, 1)")


@dataclass
class StyleGAN2Config(BaseConfig):
    model: StyleGAN2Model = field(default_factory=StyleGAN2Model)
    train: StyleGAN2Train = field(default_factory=StyleGAN2Train)
    augment: AdaptiveAugmentConfig = field(default_factory=AdaptiveAugmentConfig)

    def validate(self):
        r = self.data.resolution
        check(r >= 4 and r & (r - 1) == 0, "data.resolution", "a power of two >= 4 for StyleGAN2")


def r1_penalty(D, real: torch.Tensor, augment=lambda x: x, c=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample |d D(augment(real), c) / d real|^2 (with the graph kept for its own gradient), and D's logits."""
    real = real.detach().requires_grad_(True)
    logits = D(augment(real)) if c is None else D(augment(real), c)
    grad, = torch.autograd.grad(logits.sum(), real, create_graph=True)
    return grad.square().sum(dim=[1, 2, 3]), logits


def path_lengths(images: torch.Tensor, ws: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Per-sample |J_w^T y| for random image-space directions y, averaged over the style layers
    (StyleGAN2 eq. 4): sqrt(mean_layers |d <images, y> / d ws|^2), graph kept."""
    grad, = torch.autograd.grad((images * directions).sum(), ws, create_graph=True)
    return grad.square().sum(dim=2).mean(dim=1).sqrt()


def lazy_factor(interval: int, enabled: bool) -> float:
    """Adam hyperparameters for a network with a lazy regularizer every `interval` steps:
    lr * c and betas ** c with c = interval / (interval + 1) keep the per-image dynamics."""
    return interval / (interval + 1) if enabled else 1.0


class StyleGAN2Task:
    """StyleGAN2 on the shared loop (see training.loop.GANTask)."""

    name = "stylegan2"

    def __init__(self, ctx):
        cfg, acc = ctx.config, ctx.accelerator
        t = cfg.train
        self.config, self.accelerator, self.device = cfg, acc, acc.device
        self.rank, self.world = acc.process_index, acc.num_processes
        self.batch, self.local_batch = t.batch_size, t.batch_size // self.world
        self.total_steps = math.ceil(t.kimg * 1000 / t.batch_size)
        self.r1_enabled, self.pl_enabled = t.r1_gamma > 0, t.pl_weight > 0
        self.pl_batch = t.batch_size // t.pl_batch_shrink
        self._check_batch_sizes()
        self.data = ctx.data  # a conditional set's encoded labels: data.labels [N, c_dim], else None
        self.vicinity = None
        if t.label_vicinity != "none":
            if ctx.data.labels is None:
                raise ConfigError("train.label_vicinity: needs labels (data.labels); use none for unlabelled data")
            encoding = LabelEncoding.from_config(to_dict(cfg)["data"])
            try:
                self.vicinity = build_vicinity(t.label_vicinity, encoding, ctx.data.labels, t.label_kappa_factor)
            except ValueError as error:
                raise ConfigError(str(error)) from None

        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest kernels
        torch.manual_seed(cfg.seed)  # identical initial weights on every process
        config_dict = to_dict(cfg)
        G = build_generator(config_dict).to(self.device)
        D = build_discriminator(config_dict).to(self.device)
        self.G_ema = copy.deepcopy(G).eval().requires_grad_(False)  # fp32 throughout, like every sampler
        if cfg.precision != "fp32":  # StyleGAN2-ADA's mixed precision: the high-resolution blocks alone
            reduced = {"bf16": torch.bfloat16, "fp16": torch.float16}[cfg.precision]
            reduce_precision(G, reduced, cfg.model.num_fp16_res)
            reduce_precision(D, reduced, cfg.model.num_fp16_res)
        self.G_plain, self.D_plain = G, D
        self.G, self.D = self._distribute(G), self._distribute(D)

        self.lazy_G = lazy_factor(t.pl_interval, self.pl_enabled)
        self.lazy_D = lazy_factor(t.r1_interval, self.r1_enabled)
        self.opt_G = adam(G.parameters(), lr=t.lr * self.lazy_G,
                          betas=(t.beta1 ** self.lazy_G, t.beta2 ** self.lazy_G), eps=1e-8)
        self.d_lr_scale = (t.d_lr or t.lr) / t.lr  # D follows lr's schedule at its own level
        self.opt_D = adam(D.parameters(), lr=t.lr * self.d_lr_scale * self.lazy_D,
                          betas=(t.beta1 ** self.lazy_D, t.beta2 ** self.lazy_D), eps=1e-8)
        self.gradients = {"G": FlatGradients(G.parameters()), "D": FlatGradients(D.parameters())}
        # fp16 needs loss scaling; one scaler per optimizer so that an overflow in D's
        # backward does not skip G's step (Accelerate's single scaler is shared).
        self.scalers = {}
        if cfg.precision == "fp16":
            self.scalers = {"G": torch.amp.GradScaler(self.device.type), "D": torch.amp.GradScaler(self.device.type)}
        self.pl_mean = torch.zeros([], device=self.device)

        a = cfg.augment
        self.policy = parse_policy(a.policy)
        self.ada = AdaptiveAugment(t.batch_size, p=a.p, target=a.ada_target, interval=a.ada_interval,
                                   speed_kimg=a.ada_kimg, p_max=a.ada_p_max, device=self.device) if a.ada else None

        # Compiled versions of the passes that need no double backward (R1 and PL do, and run eagerly).
        compile_ = torch.compile if t.compile else (lambda module: module)
        self.G_fake = compile_(self.G_plain)  # G under no_grad for the D update
        self.D_main = compile_(self.D)        # D update
        self.G_main = compile_(self.G)        # G update
        self.D_frozen = compile_(self.D_plain)  # D with frozen weights in the G update

    # -- setup helpers -------------------------------------------------------

    def _check_batch_sizes(self) -> None:
        t, m = self.config.train, self.config.model
        group = min(m.mbstd_group_size, self.local_batch)
        if self.local_batch % group:
            raise ConfigError(f"model.mbstd_group_size: {m.mbstd_group_size} does not divide the per-process "
                              f"batch of {self.local_batch}")
        if self.pl_enabled and (t.batch_size % t.pl_batch_shrink or self.pl_batch % self.world):
            raise ConfigError(f"train.pl_batch_shrink: batch {t.batch_size} / {t.pl_batch_shrink} must be an "
                              f"integer that splits over {self.world} process(es)")

    def _distribute(self, module: torch.nn.Module) -> torch.nn.Module:
        """DDP-wrap for several processes. Not accelerator.prepare: that would autocast every forward,
        and the regularizers must run in fp32. Buffers are kept equal by construction (w_avg is
        updated from all-reduced means), so they are not re-broadcast at every forward."""
        if self.world == 1:
            return module
        ddp = torch.nn.parallel.DistributedDataParallel
        # Newer torch renames broadcast_buffers to forward_sync_buffers (both still sync at construction).
        no_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(ddp).parameters
                   else {"broadcast_buffers": False})
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return ddp(module, device_ids=device_ids, **no_sync)

    # -- randomness (global batch, then this process's slice) ----------------

    def _local(self, x: torch.Tensor) -> torch.Tensor:
        return shard(x, self.rank, self.world)

    def _randn(self, shape, *keys) -> torch.Tensor:
        """Standard normal numbers for the global batch, drawn on the training device; this process's slice."""
        return self._local(randn(shape, self.config.seed, *keys, device=self.device))

    def _latents(self, purpose: str, step: int, n: int) -> dict:
        """Generator inputs for `n` global samples: latents, style-mixing cutoffs and noise maps,
        all drawn on the device (no host-to-device copy)."""
        cfg, G, device = self.config, self.G_plain, self.device
        z = self._randn((n, G.z_dim), "z", purpose, step)
        noise = G.noise_from_flat(self._randn((n, G.noise_numel), "noise", purpose, step))
        inputs = {"z": z, "noise": noise}
        if self.data.labels is not None:  # fakes get labels drawn from the training set's label distribution
            rows = torch.randint(len(self.data.labels), (n,), generator=generator(cfg.seed, "c", purpose, step,
                                                                                 device=device), device=device)
            inputs["c"] = self.data.labels[self._local(rows)]
        if cfg.train.style_mixing > 0:
            g = generator(cfg.seed, "mixing", purpose, step, device=device)
            cutoff = torch.randint(1, G.num_ws, (n,), generator=g, device=device)
            mixes = torch.rand(n, generator=g, device=device) < cfg.train.style_mixing
            inputs["z_mix"] = self._randn((n, G.z_dim), "z_mix", purpose, step)
            inputs["mix_cutoff"] = self._local(torch.where(mixes, cutoff, G.num_ws))
        return inputs

    def _vicinal_batch(self, step: int) -> dict:
        """D's batch under train.label_vicinity (training/vicinity.py): noisy target labels, a real frame
        from each target's vicinity, fakes generated near it; every sample scored at its target, with
        loss weights normalized over the global batch."""
        v, table, seed = self.vicinity, self.data.labels, self.config.seed
        targets, rows = draw_targets(v, table, self.batch, seed, "D", step)
        reals = real_rows(v, table, targets, rows, seed, "D", step)
        near = fake_labels(v, targets, seed, "D", step)
        fake_inputs = self._latents("D", step, self.batch)
        local = lambda x: self._local(x).to(self.device)  # noqa: E731  (the vicinity draws on the host)
        fake_inputs["c"] = local(near)

        def normalized(weights: torch.Tensor) -> torch.Tensor:  # local losses x these, summed = the global mean
            return local(weights / weights.sum() * self.world)

        return {"real": self.data.take(reals, self.rank, self.world, "vicinity/flips", step),
                "real_labels": local(targets), "fake_inputs": fake_inputs, "fake_scored_at": local(targets),
                "real_weights": normalized(v.weights(table.cpu()[reals], targets)),
                "fake_weights": normalized(v.weights(near, targets))}

    def _augment(self, x: torch.Tensor, purpose: str, step: int) -> torch.Tensor:
        p = self.ada.p if self.ada is not None else self.config.augment.p
        return diff_augment(x, self.policy, self.config.seed, step, self.rank, self.world, purpose=purpose, p=p)

    def _mean_over_processes(self, x: torch.Tensor) -> torch.Tensor:
        return self.accelerator.reduce(x, reduction="mean") if self.world > 1 else x

    # -- optimization --------------------------------------------------------

    def lr_at(self, step: int) -> float:
        t = self.config.train
        if t.lr_decay == "none":
            return t.lr
        progress = min(step / max(self.total_steps - 1, 1), 1.0)
        return t.lr * (t.lr_final_fraction + (1 - t.lr_final_fraction) * 0.5 * (1 + math.cos(math.pi * progress)))

    def _update(self, name: str, loss: torch.Tensor) -> None:
        opt = self.opt_G if name == "G" else self.opt_D
        gradients = self.gradients[name]
        gradients.zero()
        scaler = self.scalers.get(name)
        if scaler is None:
            loss.backward()
            gradients.replace_non_finite()
            opt.step()
        else:  # the scaler skips a step with a non-finite gradient: replacing them would hide it
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

    def d_step(self, real: torch.Tensor, step: int) -> dict:
        """D's update of one step (and its lazy R1 when due); returns its logs."""
        t, logs = self.config.train, {}
        # D: non-saturating logistic loss on augmented reals and fakes.
        self.D_plain.requires_grad_(True)
        if self.vicinity is None:
            fake_inputs = self._latents("D", step, self.batch)
            real_labels = self.data.batch_labels(step, self.rank, self.world) if self.data.labels is not None else None
            fake_scored_at = fake_inputs.get("c")
        else:
            batch = self._vicinal_batch(step)
            real, real_labels, fake_inputs, fake_scored_at = (batch[k] for k in ("real", "real_labels", "fake_inputs",
                                                                                 "fake_scored_at"))
        with torch.no_grad():
            fake = self.G_fake(**fake_inputs)
        fake_logits = self.D_main(self._augment(fake, "D/fake", step), fake_scored_at)
        real_logits = self.D_main(self._augment(real, "D/real", step), real_labels)
        if self.vicinity is None:
            loss_D = F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()
        else:
            loss_D = ((F.softplus(fake_logits) * batch["fake_weights"]).sum()
                      + (F.softplus(-real_logits) * batch["real_weights"]).sum())
        self._update("D", loss_D)
        logs.update({"Loss/D/adv": loss_D.detach(), "Loss/scores/fake": fake_logits.detach().mean(),
                     "Loss/scores/real": real_logits.detach().mean()})
        if self.ada is not None:
            self.ada.observe(real_logits)

        # D: lazy R1 on (augmented) reals, fp32, weighted by its interval.
        if self.r1_enabled and step % t.r1_interval == 0:
            with full_precision(self.D_plain):
                r1, logits = r1_penalty(self.D, real, lambda x: self._augment(x, "D/r1", step), real_labels)
            # logits * 0 keeps every D parameter in the graph, as DDP requires.
            loss = (r1.mean() * (t.r1_gamma / 2) + logits.mean() * 0) * t.r1_interval
            self._update("D", loss)
            logs["Loss/D/r1"] = r1.detach().mean()
        return logs

    def train_step(self, real: torch.Tensor, step: int) -> dict:
        t = self.config.train
        lr = self.lr_at(step)
        for opt, c in ((self.opt_G, self.lazy_G), (self.opt_D, self.lazy_D * self.d_lr_scale)):
            for group in opt.param_groups:
                group["lr"] = lr * c
        logs = {"Train/lr": lr}
        logs |= self.d_step(real, step)

        # G: non-saturating loss through the frozen (unwrapped) D, so D's DDP is not involved.
        self.D_plain.requires_grad_(False)
        inputs = self._latents("G", step, self.batch)
        if self.vicinity is not None:  # G learns at noisy labels: between the training frames' values
            targets = draw_targets(self.vicinity, self.data.labels, self.batch, self.config.seed, "G", step)[0]
            inputs["c"] = self._local(targets).to(self.device)
        fake, ws = self.G_main(**inputs, return_ws=True)
        logits = self.D_frozen(self._augment(fake, "G/fake", step), inputs.get("c"))
        loss_G = F.softplus(-logits).mean()
        self._update("G", loss_G)
        self.G_plain.mapping.track_w_avg(self._mean_over_processes(ws[:, 0].detach().float().mean(0)))
        logs["Loss/G/adv"] = loss_G.detach()

        # G: lazy path-length regularization on a smaller batch, fp32, weighted by its interval.
        if self.pl_enabled and step % t.pl_interval == 0:
            with full_precision(self.G_plain):
                fake, ws = self.G(**self._latents("PL", step, self.pl_batch), return_ws=True)
                c, h, w = fake.shape[1:]
                directions = self._randn((self.pl_batch, c, h, w), "pl", step) / math.sqrt(h * w)
                lengths = path_lengths(fake, ws, directions)
            self.pl_mean = self.pl_mean.lerp(self._mean_over_processes(lengths.detach().mean()), t.pl_decay)
            penalty = (lengths - self.pl_mean).square()
            # fake * 0 keeps every G parameter in the graph, as DDP requires.
            loss = (penalty.mean() * t.pl_weight + fake[:, 0, 0, 0].mean() * 0) * t.pl_interval
            self._update("G", loss)
            logs["Loss/G/pl"] = penalty.detach().mean()
            logs["Loss/G/pl_mean"] = self.pl_mean.detach().clone()
        self.D_plain.requires_grad_(True)

        beta = ema_beta(self.batch, t.ema_halflife_kimg, images_seen=(step + 1) * self.batch, rampup=t.ema_rampup)
        update_ema(self.G_ema, self.G_plain, beta)

        if self.ada is not None:
            self.ada.update(step, lambda x: self.accelerator.reduce(x, reduction="sum") if self.world > 1 else x)
            logs["Augment/rt"] = self.ada.rt
        logs["Augment/p"] = self.ada.p if self.ada is not None else self.config.augment.p
        return logs

    # -- sampling and state --------------------------------------------------

    def sampler(self) -> Sampler:
        return Sampler(self.G_ema, seed=self.config.seed, truncation=1.0, noise_mode="random", labels=self.data.labels)

    def state_dict(self) -> dict:
        state = {"G": self.G_plain.state_dict(), "G_ema": self.G_ema.state_dict(), "D": self.D_plain.state_dict(),
                 "optimizers": {"G": self.opt_G.state_dict(), "D": self.opt_D.state_dict()},
                 "pl_mean": self.pl_mean.detach().cpu(),
                 "augment": self.ada.state_dict() if self.ada is not None else {"p": self.config.augment.p}}
        if self.scalers:
            state["scalers"] = {name: scaler.state_dict() for name, scaler in self.scalers.items()}
        if self.data.labels is not None:  # the label distribution samplers draw from (eval/generate.py, eval/fid.py)
            state["labels"] = self.data.labels.cpu()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.G_plain.load_state_dict(state["G"])
        self.G_ema.load_state_dict(state["G_ema"])
        self.D_plain.load_state_dict(state["D"])
        load_optimizer_state(self.opt_G, state["optimizers"]["G"])
        load_optimizer_state(self.opt_D, state["optimizers"]["D"])
        self.pl_mean = state["pl_mean"].to(self.device)
        if self.ada is not None and "sign_sum" in state["augment"]:
            self.ada.load_state_dict(state["augment"])
        for name, scaler in self.scalers.items():
            if name in state.get("scalers", {}):
                scaler.load_state_dict(state["scalers"][name])


def main(argv: list[str] | None = None) -> None:
    ctx = setup(StyleGAN2Config, __doc__, argv)
    with user_errors():
        task = StyleGAN2Task(ctx)
    train(ctx, task)


if __name__ == "__main__":
    main()
