"""Train SAGAN (self-attention DCGAN, spectral-norm D) on a small image set.

    python train_sagan.py --config configs/sagan.yaml [key=value ...]
    accelerate launch --multi_gpu --num_processes N train_sagan.py --config configs/sagan.yaml
    torchrun --nproc_per_node 2 train_sagan.py --config configs/sagan_tiny.yaml     # CPU processes
    python train_sagan.py --config configs/sagan.yaml --resume auto out_dir=runs/sagan-1

Training follows the reference setup: BCE with one-sided label smoothing (or
hinge), Adam 2e-4 with betas (0, 0.9), the learning rate halved every 500
epochs, gradient norms clipped at 1, flips as the only augmentation (DiffAugment
optional), FID/KID on a schedule in epochs. Under several processes G's
BatchNorm layers are SyncBatchNorm, so the batch statistics are those of the
global batch.
"""

import math
import os
import sys
from dataclasses import dataclass, field
from typing import Literal

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch
import torch.nn.functional as F

from nets.sagan import SAGANModel, batchnorm_for, build_discriminator, build_generator
from training.augment import AugmentConfig, diff_augment
from training.config import BaseConfig, EvalConfig, TrainConfig, check
from training.data import shard
from training.ema import ema_beta, recompute_batchnorm_statistics, update_ema
from training.labels import labels_for_indices
from training.loop import crossed, setup, train
from training.optim import adam, load_optimizer_state
from training.seeding import generator, latents_for_indices, randn

BATCHNORM_SAMPLES = 1024  # latents G_ema's BatchNorm statistics are recomputed over before it samples or is saved


@dataclass
class SAGANTrain(TrainConfig):
    batch_size: int = 16
    kimg: float = 600.0                        # 2000 epochs of 300 images
    loss: Literal["bce", "hinge"] = "bce"      # bce: non-saturating with label smoothing; hinge: SAGAN paper
    real_label: float = 0.9                    # bce target for reals (one-sided label smoothing)
    fake_label: float = 0.0                    # bce target for fakes
    g_lr: float = 2e-4
    d_lr: float = 2e-4
    beta1: float = 0.0                         # Adam betas, both networks
    beta2: float = 0.9
    lr_step_epochs: int = 500                  # halve (x lr_gamma) the learning rates every this many epochs; 0: constant
    lr_gamma: float = 0.5
    grad_clip: float = 1.0                     # max global gradient norm per network; 0: no clipping
    d_steps: int = 1                           # d_steps D updates (one real batch each) ...
    g_steps: int = 1                           # ... then g_steps G updates
    ema_halflife_kimg: float = 10.0            # EMA of G (samples, FID, generate.py); 0: no EMA, G in eval mode
    ema_rampup: float = 0.05                   # early on the half-life is at most ema_rampup x images seen; 0: none

    def validate(self):
        super().validate()
        for key in ("g_lr", "d_lr"):
            check(getattr(self, key) > 0, f"train.{key}", "a positive number")
        for key in ("beta1", "beta2"):
            check(0 <= getattr(self, key) < 1, f"train.{key}", "a number in [0, 1)")
        for key in ("real_label", "fake_label"):
            check(0 <= getattr(self, key) <= 1, f"train.{key}", "a number in [0, 1]")
        check(self.lr_step_epochs >= 0, "train.lr_step_epochs", "an integer >= 0 (0 keeps the rate constant)")
        check(0 < self.lr_gamma <= 1, "train.lr_gamma", "a number in (0, 1]")
        check(self.grad_clip >= 0, "train.grad_clip", "a number >= 0 (0 disables clipping)")
        check(self.d_steps >= 1, "train.d_steps", "a positive integer")
        check(self.g_steps >= 1, "train.g_steps", "a positive integer")
        check(self.ema_halflife_kimg >= 0, "train.ema_halflife_kimg", "a number >= 0 (0 disables the EMA)")
        check(self.ema_rampup >= 0, "train.ema_rampup", "a number >= 0 (0: no ramp-up)")


@dataclass
class SAGANEval(EvalConfig):
    every_kimg: float = 0.0                                                # > 0: every this many kimg instead of epochs
    every_epochs: list[int] = field(default_factory=lambda: [10, 20, 50])  # interval in each phase; [] disables
    until_epochs: list[int] = field(default_factory=lambda: [200, 800])    # the epochs where phases end

    def validate(self):
        super().validate()
        check(all(e >= 1 for e in self.every_epochs), "eval.every_epochs", "positive integers ([] disables)")
        check(not self.every_epochs or len(self.until_epochs) == len(self.every_epochs) - 1, "eval.until_epochs",
              f"one phase boundary fewer than eval.every_epochs ({len(self.every_epochs)} intervals)")
        check(all(a < b for a, b in zip(self.until_epochs, self.until_epochs[1:])) and
              all(e >= 1 for e in self.until_epochs), "eval.until_epochs", "increasing positive integers")


@dataclass
class SAGANConfig(BaseConfig):
    train: SAGANTrain = field(default_factory=SAGANTrain)
    eval: SAGANEval = field(default_factory=SAGANEval)
    model: SAGANModel = field(default_factory=SAGANModel)
    # flips (data.*flip) only by default: DiffAugment is an option here, e.g. augment.policy=color,translation,cutout
    augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(policy=""))

    def validate(self):
        self.model.check_resolution(self.data.resolution)


# ---------------------------------------------------------------------------
# Schedules and losses

def epoch_is_evaluated(epoch: int, every_epochs: list[int], until_epochs: list[int]) -> bool:
    """Whether the end of (1-based) `epoch` is an evaluation point.

    The interval is every_epochs[i] in phase i, where phase i starts at
    until_epochs[i - 1]: [10, 20, 50] / [200, 800] evaluates at 10, 20, ..., 190,
    then 200, 220, ..., 780, then 800, 850, ...
    """
    if epoch < 1 or not every_epochs:
        return False
    phase = sum(1 for boundary in until_epochs if epoch >= boundary)
    return epoch % every_epochs[phase] == 0


def d_loss(real_logits, fake_logits, kind: str, real_label: float = 0.9, fake_label: float = 0.0):
    """(loss on reals, loss on fakes), each a batch mean."""
    if kind == "hinge":
        return F.relu(1 - real_logits).mean(), F.relu(1 + fake_logits).mean()
    return (F.binary_cross_entropy_with_logits(real_logits, torch.full_like(real_logits, real_label)),
            F.binary_cross_entropy_with_logits(fake_logits, torch.full_like(fake_logits, fake_label)))


def g_loss(fake_logits, kind: str):
    """Non-saturating BCE (target 1, no smoothing) or the hinge generator loss -D(G(z))."""
    if kind == "hinge":
        return -fake_logits.mean()
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


# ---------------------------------------------------------------------------
# The task on the shared loop

class SAGANTask:
    name = "sagan"

    def __init__(self, ctx):
        config, acc = ctx.config, ctx.accelerator
        self.config, self.accelerator = config, acc
        self.num_images = len(ctx.data)
        self.data = ctx.data  # a conditional set's encoded labels: data.labels [N, c_dim], else None
        c_dim = 0 if ctx.data.labels is None else ctx.data.labels.shape[1]
        res, channels = config.data.resolution, config.data.channels
        torch.manual_seed(config.seed)
        # Built with SyncBatchNorm directly (instead of converting) under several processes, before DDP wraps it.
        G = build_generator(config.model, res, channels, batchnorm_for(acc.device, acc.num_processes), c_dim)
        D = build_discriminator(config.model, res, channels, c_dim)
        self.G_ema = None
        if config.train.ema_halflife_kimg > 0:
            self.G_ema = build_generator(config.model, res, channels, c_dim=c_dim)  # plain BatchNorm: one process
            self.G_ema.load_state_dict(G.state_dict())
            self.G_ema.eval().requires_grad_(False).to(acc.device)
        self.ema_statistics_stale = True
        t = config.train
        # Optimizers stay outside accelerate.prepare: with fp16 each gets its own GradScaler below.
        # They are made for parameters already on the device (fused Adam checks that).
        G, D = G.to(acc.device), D.to(acc.device)
        self.opt_G = adam(G.parameters(), lr=t.g_lr, betas=(t.beta1, t.beta2))
        self.opt_D = adam(D.parameters(), lr=t.d_lr, betas=(t.beta1, t.beta2))
        self.G, self.D = acc.prepare(G, D)
        fp16 = config.precision == "fp16"
        self.scaler_G = torch.amp.GradScaler(acc.device.type, enabled=fp16)
        self.scaler_D = torch.amp.GradScaler(acc.device.type, enabled=fp16)

    # -- schedules, all functions of the step so that a resume continues exactly

    def epoch_of(self, step: int) -> int:
        """The epoch (0-based) the first image of `step`'s batch belongs to."""
        return step * self.config.train.batch_size // self.num_images

    def lr_factor(self, step: int) -> float:
        t = self.config.train
        return t.lr_gamma ** (self.epoch_of(step) // t.lr_step_epochs) if t.lr_step_epochs else 1.0

    def eval_due(self, step: int, done: bool) -> bool:
        """The loop's evaluation hook: the epoch schedule, or every eval.every_kimg when that is set."""
        e, batch = self.config.eval, self.config.train.batch_size
        if e.every_kimg > 0:
            return done or crossed((step - 1) * batch / 1000, step * batch / 1000, e.every_kimg)
        if not e.every_epochs:
            return False
        completed_before, completed = (step - 1) * batch // self.num_images, step * batch // self.num_images
        return done or any(epoch_is_evaluated(epoch, e.every_epochs, e.until_epochs)
                           for epoch in range(completed_before + 1, completed + 1))

    # -- one step

    def latents(self, step: int, *purpose) -> torch.Tensor:
        acc, cfg = self.accelerator, self.config
        z = randn((cfg.train.batch_size, cfg.model.z_dim), cfg.seed, *purpose, step, device=acc.device)
        return shard(z, acc.process_index, acc.num_processes)

    def fake_labels(self, step: int, *purpose) -> torch.Tensor | None:
        """Labels for a batch of fakes, drawn from the training set's (None when unconditional)."""
        if self.data.labels is None:
            return None
        acc, cfg = self.accelerator, self.config
        rows = torch.randint(len(self.data.labels), (cfg.train.batch_size,), device=acc.device,
                             generator=generator(cfg.seed, "c", *purpose, step, device=acc.device))
        return self.data.labels[shard(rows, acc.process_index, acc.num_processes)]

    def augment(self, images: torch.Tensor, step: int, purpose: str) -> torch.Tensor:
        acc = self.accelerator
        return diff_augment(images, self.config.augment.policy, self.config.seed, step, acc.process_index,
                            acc.num_processes, purpose=purpose)

    def optimize(self, network, optimizer, scaler, loss) -> torch.Tensor:
        """Backward, clip, step; returns the gradient norm before clipping (DDP has averaged the gradients)."""
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        clip = self.config.train.grad_clip
        norm = torch.nn.utils.clip_grad_norm_(network.parameters(), clip if clip > 0 else math.inf)
        scaler.step(optimizer)
        scaler.update()
        return norm

    def d_step(self, real: torch.Tensor, step: int) -> dict:
        acc, t = self.accelerator, self.config.train
        fake_labels = self.fake_labels(step, "z/D")
        with torch.no_grad(), acc.autocast():
            fake = self.G(self.latents(step, "z/D"), fake_labels)
        images = torch.cat([self.augment(real, step, "D/real"), self.augment(fake.float(), step, "D/fake")])
        labels = None
        if fake_labels is not None:
            labels = torch.cat([self.data.batch_labels(step, acc.process_index, acc.num_processes), fake_labels])
        with acc.autocast():
            logits = self.D(images, labels).float()  # one pass over reals and fakes: D has no batch statistics
        real_logits, fake_logits = logits.split(len(real))
        loss_real, loss_fake = d_loss(real_logits, fake_logits, t.loss, t.real_label, t.fake_label)
        norm = self.optimize(self.D, self.opt_D, self.scaler_D, loss_real + loss_fake)
        stats = {"Loss/D/real": loss_real.detach(), "Loss/D/fake": loss_fake.detach(),
                 "Loss/D/total": (loss_real + loss_fake).detach(), "Grad/D/norm": norm,
                 "Loss/scores/real": real_logits.detach().mean(), "Loss/scores/fake": fake_logits.detach().mean()}
        if t.loss == "bce":
            stats["Loss/scores/real_prob"] = torch.sigmoid(real_logits.detach()).mean()  # D(x)
            stats["Loss/scores/fake_prob"] = torch.sigmoid(fake_logits.detach()).mean()  # D(G(z))
        return stats

    def g_step(self, step: int, index: int) -> dict:
        # D runs unwrapped and frozen: its DDP wrapper would otherwise wait for gradients this step never makes.
        acc, D = self.accelerator, self.accelerator.unwrap_model(self.D)
        D.requires_grad_(False)
        labels = self.fake_labels(step, "z/G", index)
        with acc.autocast():
            fake = self.G(self.latents(step, "z/G", index), labels)
            logits = D(self.augment(fake, step, f"G/fake/{index}"), labels).float()
        loss = g_loss(logits, self.config.train.loss)
        norm = self.optimize(self.G, self.opt_G, self.scaler_G, loss)
        D.requires_grad_(True)
        return {"Loss/G/adv": loss.detach(), "Grad/G/norm": norm}

    def train_step(self, real: torch.Tensor, step: int) -> dict:
        t = self.config.train
        factor = self.lr_factor(step)
        for optimizer, lr in ((self.opt_G, t.g_lr), (self.opt_D, t.d_lr)):
            for group in optimizer.param_groups:
                group["lr"] = lr * factor
        stats = self.d_step(real, step)
        if (step + 1) % t.d_steps == 0:
            g_stats = [self.g_step(step, i) for i in range(t.g_steps)]
            stats |= {k: torch.stack([s[k] for s in g_stats]).mean() for k in g_stats[0]}
        if self.G_ema is not None:
            images_seen = (step + 1) * t.batch_size
            beta = ema_beta(t.batch_size, t.ema_halflife_kimg, images_seen, t.ema_rampup or None)
            update_ema(self.G_ema, self.accelerator.unwrap_model(self.G), beta)
            self.ema_statistics_stale = True
        stats["Train/lr_G"], stats["Train/lr_D"] = t.g_lr * factor, t.d_lr * factor
        return stats

    # -- sampling and checkpoints

    def ema_generator(self):
        """G_ema with BatchNorm statistics of its own weights. update_ema copies the live G's
        running statistics, which would normalize the averaged weights' activations with another
        network's moments; they are recomputed from G_ema itself whenever its weights have moved,
        over fixed latents, so the same weights always get the same statistics (exact resume,
        identical on every process)."""
        if self.ema_statistics_stale:
            cfg, batch, device = self.config, self.config.train.batch_size, self.accelerator.device
            table = self.data.labels

            def inputs(i: int) -> tuple:
                z = randn((batch, cfg.model.z_dim), cfg.seed, "G_ema/batchnorm", i, device=device)
                if table is None:
                    return (z,)
                rows = torch.randint(len(table), (batch,), generator=generator(cfg.seed, "G_ema/batchnorm/c", i))
                return z, table[rows.to(table.device)]

            recompute_batchnorm_statistics(self.G_ema, (inputs(i) for i in range(BATCHNORM_SAMPLES // batch)))
            self.ema_statistics_stale = False
        return self.G_ema

    def sampler(self):
        """G_ema, or without EMA the training G, in eval mode: BatchNorm uses running statistics,
        so sample i depends only on (seed, i), never on the rest of the batch."""
        G = self.ema_generator() if self.G_ema is not None else self.accelerator.unwrap_model(self.G)
        z_dim, seed, device, table = self.config.model.z_dim, self.config.seed, self.accelerator.device, self.data.labels

        def labels_for(indices: torch.Tensor) -> torch.Tensor | None:
            return None if table is None else labels_for_indices(table, indices, seed).to(device)

        @torch.no_grad()
        def sample(indices: torch.Tensor) -> torch.Tensor:
            was_training = G.training
            G.eval()
            images = G(latents_for_indices(indices, z_dim, seed).to(device), labels_for(indices))
            G.train(was_training)
            return images

        sample.labels_for = labels_for  # the labels sample i is generated with (training's conditional evaluation)
        return sample

    def state_dict(self) -> dict:
        unwrap = self.accelerator.unwrap_model
        state = {"G": unwrap(self.G).state_dict(), "D": unwrap(self.D).state_dict(),
                 "optimizers": {"G": self.opt_G.state_dict(), "D": self.opt_D.state_dict()},
                 "scalers": {"G": self.scaler_G.state_dict(), "D": self.scaler_D.state_dict()}}
        if self.G_ema is not None:
            state["G_ema"] = self.ema_generator().state_dict()
        if self.data.labels is not None:  # the label distribution samplers draw from (eval/generate.py, eval/fid.py)
            state["labels"] = self.data.labels.cpu()
        return state

    def load_state_dict(self, state: dict) -> None:
        unwrap = self.accelerator.unwrap_model
        unwrap(self.G).load_state_dict(state["G"])
        unwrap(self.D).load_state_dict(state["D"])
        if self.G_ema is not None:  # a run that had no EMA starts one from its G
            self.G_ema.load_state_dict(state.get("G_ema", state["G"]))
            self.ema_statistics_stale = True
        load_optimizer_state(self.opt_G, state["optimizers"]["G"])
        load_optimizer_state(self.opt_D, state["optimizers"]["D"])
        for scaler, saved in ((self.scaler_G, state["scalers"]["G"]), (self.scaler_D, state["scalers"]["D"])):
            if saved:  # empty when the run was not fp16: an fp16 resume starts a fresh loss scale
                scaler.load_state_dict(saved)


if __name__ == "__main__":
    ctx = setup(SAGANConfig, __doc__)
    train(ctx, SAGANTask(ctx))
