"""A stand-in GAN for plumbing tests: tiny conv nets on the shared training loop.

Runs like the real scripts: `python tests/toy_gan.py [--config X] [--resume auto] key=value ...`.
"""

import copy
import os
import sys
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch
import torch.nn.functional as F

from training.config import BaseConfig, check
from training.data import shard
from training.ema import update_ema
from training.loop import setup, train
from training.seeding import latents_for_indices, randn


@dataclass
class ToyModel:
    z_dim: int = 8
    width: int = 8

    def validate(self):
        check(self.z_dim >= 1, "model.z_dim", "a positive integer")


@dataclass
class ToyConfig(BaseConfig):
    model: ToyModel = field(default_factory=ToyModel)
    lr: float = 0.01
    crash_at_step: int = -1  # test hook: process `crash_rank` raises at this step
    crash_rank: int = 1


class Generator(torch.nn.Module):
    def __init__(self, z_dim, width, channels, resolution):
        super().__init__()
        self.z_dim, self.width, self.resolution = z_dim, width, resolution
        self.fc = torch.nn.Linear(z_dim, width * 4 * 4)
        self.conv = torch.nn.Conv2d(width, channels, 3, padding=1)

    def forward(self, z):
        x = F.leaky_relu(self.fc(z).view(-1, self.width, 4, 4), 0.2)
        return torch.tanh(self.conv(F.interpolate(x, size=self.resolution)))


class Discriminator(torch.nn.Module):
    def __init__(self, width, channels):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, width, 3, stride=2, padding=1)
        self.fc = torch.nn.Linear(width, 1)

    def forward(self, x):
        return self.fc(F.leaky_relu(self.conv(x), 0.2).mean((2, 3)))


class ToyTask:
    name = "toy"

    def __init__(self, ctx):
        config, acc = ctx.config, ctx.accelerator
        self.config, self.accelerator = config, acc
        torch.manual_seed(config.seed)
        G = Generator(config.model.z_dim, config.model.width, config.data.channels, config.data.resolution)
        D = Discriminator(config.model.width, config.data.channels)
        self.G_ema = copy.deepcopy(G).eval().requires_grad_(False).to(acc.device)
        opt_G = torch.optim.Adam(G.parameters(), lr=config.lr, betas=(0.0, 0.99))
        opt_D = torch.optim.Adam(D.parameters(), lr=config.lr, betas=(0.0, 0.99))
        self.G, self.D, self.opt_G, self.opt_D = acc.prepare(G, D, opt_G, opt_D)

    def train_step(self, real, step):
        acc, cfg = self.accelerator, self.config
        rank, world, batch = acc.process_index, acc.num_processes, cfg.train.batch_size
        if step == cfg.crash_at_step and rank == cfg.crash_rank:
            raise RuntimeError(f"deliberate crash on rank {rank} at step {step}")
        z = shard(randn((batch, cfg.model.z_dim), cfg.seed, "z", step), rank, world).to(acc.device)
        loss_D = F.softplus(self.D(self.G(z).detach())).mean() + F.softplus(-self.D(real)).mean()
        self.opt_D.zero_grad(set_to_none=True)
        acc.backward(loss_D)
        self.opt_D.step()
        loss_G = F.softplus(-self.D(self.G(z))).mean()
        self.opt_G.zero_grad(set_to_none=True)
        acc.backward(loss_G)
        self.opt_G.step()
        update_ema(self.G_ema, acc.unwrap_model(self.G), 0.9)
        return {"Loss/D/total": loss_D, "Loss/G/total": loss_G}

    def sampler(self):
        def sample(indices):
            z = latents_for_indices(indices, self.config.model.z_dim, self.config.seed).to(self.accelerator.device)
            return self.G_ema(z)
        return sample

    def state_dict(self):
        unwrap = self.accelerator.unwrap_model
        return {"G": unwrap(self.G).state_dict(), "G_ema": self.G_ema.state_dict(), "D": unwrap(self.D).state_dict(),
                "optimizers": {"G": self.opt_G.state_dict(), "D": self.opt_D.state_dict()}}

    def load_state_dict(self, state):
        unwrap = self.accelerator.unwrap_model
        unwrap(self.G).load_state_dict(state["G"])
        self.G_ema.load_state_dict(state["G_ema"])
        unwrap(self.D).load_state_dict(state["D"])
        self.opt_G.load_state_dict(state["optimizers"]["G"])
        self.opt_D.load_state_dict(state["optimizers"]["D"])


if __name__ == "__main__":
    ctx = setup(ToyConfig, __doc__)
    train(ctx, ToyTask(ctx))
