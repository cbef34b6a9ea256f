"""Augmentation for small data sets: DiffAugment and an ADA-style probability controller.

DiffAugment (Zhao et al., 2020) passes every image the discriminator sees, real
or generated, through the same random differentiable transforms, so D cannot
memorize a few hundred training images and G still gets gradients through
them. The policy is a comma-separated list of groups:

    color        brightness, saturation and contrast jitter (per image)
    translation  integer shift by up to 1/8 of the size, zero fill
    cutout       one zeroed square of half the size at a random place

Each elementary transform is applied to each image with probability `p`
(p = 1 is plain DiffAugment). `AdaptiveAugment` steers p the way ADA (Karras
et al., 2020) does: up when D is too sure about the reals, down otherwise.

Randomness follows training.seeding: every draw is made for the whole global
batch (local batch x processes) on the images' device, from a generator keyed
by (seed, "augment", purpose, step, transform), and each process keeps its
slice; no random number is copied from the host.
So K processes augment exactly like one, and a resumed run like an
uninterrupted one. Use a distinct `purpose` for each call within a step
("D/real", "D/fake", "G/fake", ...).

    x = diff_augment(x, "color,translation,cutout", seed, step, rank, world, purpose="D/real", p=1.0)
"""

from dataclasses import dataclass

import torch

from training.config import check
from training.data import shard
from training.seeding import generator

POLICY_GROUPS = {
    "color": ("brightness", "saturation", "contrast"),
    "translation": ("translation",),
    "cutout": ("cutout",),
}
TRANSLATION_RATIO = 0.125  # largest shift, as a fraction of the image size
CUTOUT_RATIO = 0.5         # side of the cut-out square, as a fraction of the image size


def parse_policy(policy: str) -> list[str]:
    """'color,cutout' -> ['brightness', 'saturation', 'contrast', 'cutout']; '' -> []."""
    transforms = []
    for group in (g.strip() for g in policy.split(",")):
        if not group:
            continue
        if group not in POLICY_GROUPS:
            raise ValueError(f"unknown DiffAugment policy {group!r}; choose from {', '.join(POLICY_GROUPS)}")
        transforms += [t for t in POLICY_GROUPS[group] if t not in transforms]
    return transforms


@dataclass
class AugmentConfig:
    """The `augment` section of a config: which DiffAugment groups D's inputs go through."""

    policy: str = "color,translation,cutout"  # comma-separated groups; "" = no augmentation

    def validate(self):
        try:
            parse_policy(self.policy)
        except ValueError as e:
            check(False, "augment.policy", f"a comma-separated subset of {', '.join(POLICY_GROUPS)} ({e})")


def _translate(x: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    """Shift image b by (tx[b], ty[b]) pixels (output[y, x] = input[y - ty, x - tx]); zeros come in."""
    b, c, h, w = x.shape
    ys = torch.arange(h, device=x.device)[None, :, None] - ty[:, None, None]
    xs = torch.arange(w, device=x.device)[None, None, :] - tx[:, None, None]
    inside = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    index = (ys.clamp(0, h - 1) * w + xs.clamp(0, w - 1)).reshape(b, 1, h * w).expand(b, c, h * w)
    shifted = x.reshape(b, c, h * w).gather(2, index).reshape(b, c, h, w)
    return shifted * inside[:, None].to(x.dtype)


def _cutout_mask(cx: torch.Tensor, cy: torch.Tensor, size_x: int, size_y: int, h: int, w: int) -> torch.Tensor:
    """[B, 1, H, W] mask, False inside the size_x x size_y rectangle centred on pixel (cx, cy)."""
    ys = torch.arange(h, device=cy.device)[None, :, None] - (cy[:, None, None] - size_y // 2)
    xs = torch.arange(w, device=cx.device)[None, None, :] - (cx[:, None, None] - size_x // 2)
    inside = (ys >= 0) & (ys < size_y) & (xs >= 0) & (xs < size_x)
    return (~inside)[:, None]


def diff_augment(x: torch.Tensor, policy: str | list[str], seed: int, step: int, rank: int = 0, world: int = 1,
                 purpose: str = "augment", p: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Randomly transform a batch, differentiably.

    Args:
        x:       this process's images [B, C, H, W], float, roughly in [-1, 1]
        policy:  'color,translation,cutout' (any subset; '' = identity) or a parse_policy list
        seed:    the run's seed
        step:    the training step (with `purpose`, selects the random numbers)
        rank:    this process's index; world: the number of processes. The
                 random numbers are drawn for B * world images and this
                 process takes slice `rank`, like training.data.shard.
        purpose: names the call, so different calls in one step differ
        p:       probability that each transform is applied to each image: a
                 number, or a 0-dim tensor on x's device (ADA's p, which is
                 then never read on the host)

    Returns:
        the augmented batch, same shape and dtype; gradients flow to x.
    """
    transforms = parse_policy(policy) if isinstance(policy, str) else policy
    always = not isinstance(p, torch.Tensor) and p >= 1
    if not transforms or (not isinstance(p, torch.Tensor) and p <= 0):
        return x
    b, c, h, w = x.shape
    n = b * world

    def local(values: torch.Tensor) -> torch.Tensor:
        return shard(values, rank, world)

    for name in transforms:
        draw = {"generator": generator(seed, "augment", purpose, step, name, device=x.device), "device": x.device}
        apply = local(torch.rand(n, **draw)) < p  # drawn first and always, so p does not shift the other draws
        if name == "brightness":
            delta = local(torch.rand(n, **draw) - 0.5).to(x.dtype)
            out = x + delta[:, None, None, None]
        elif name == "saturation":
            factor = local(torch.rand(n, **draw) * 2).to(x.dtype)
            mean = x.mean(dim=1, keepdim=True)
            out = (x - mean) * factor[:, None, None, None] + mean
        elif name == "contrast":
            factor = local(torch.rand(n, **draw) + 0.5).to(x.dtype)
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            out = (x - mean) * factor[:, None, None, None] + mean
        elif name == "translation":
            sx, sy = int(w * TRANSLATION_RATIO + 0.5), int(h * TRANSLATION_RATIO + 0.5)
            tx, ty = local(torch.randint(-sx, sx + 1, (n,), **draw)), local(torch.randint(-sy, sy + 1, (n,), **draw))
            out = _translate(x, tx, ty)
        elif name == "cutout":
            size_x, size_y = int(w * CUTOUT_RATIO + 0.5), int(h * CUTOUT_RATIO + 0.5)
            # Centres range one past the edge for even sizes so that every pixel is covered equally often.
            cx = local(torch.randint(0, w + (1 - size_x % 2), (n,), **draw))
            cy = local(torch.randint(0, h + (1 - size_y % 2), (n,), **draw))
            out = x * _cutout_mask(cx, cy, size_x, size_y, h, w).to(x.dtype)
        else:
            raise ValueError(f"unknown transform {name!r}")
        x = out if always else torch.where(apply[:, None, None, None], out, x)
    return x


class AdaptiveAugment:
    """ADA-style controller for the augmentation probability p.

    The overfitting heuristic r_t = E[sign(D(real))] is accumulated over
    `interval` steps (summed over all processes, so every process keeps the
    same p); then p moves by batch * interval / (speed_kimg * 1000) towards
    more augmentation when r_t > target and less otherwise, so it can cross
    [0, 1] in `speed_kimg` thousand images. p is clamped to [0, p_max] with
    p_max < 1: at p = 1 D would never see a clean image and transforms that
    are not invertible leak into the generated images.

    p, r_t and the running sums are 0-dim tensors on `device` and the update
    runs there, so the controller never waits for the device; p and r_t are
    read on the host only when logged or saved. p is float64, like the Python
    number it was before (diff_augment compares it with float32 draws in float32).

    Args:
        batch_size: global batch size
        p:          initial probability
        target:     desired r_t (ADA uses 0.6)
        interval:   steps between adjustments
        speed_kimg: thousands of images for p to go from 0 to 1
        p_max:      upper clamp, below 1
        device:     where p and the statistics live (the training device)
    """

    def __init__(self, batch_size: int, p: float = 0.0, target: float = 0.6, interval: int = 4,
                 speed_kimg: float = 100.0, p_max: float = 0.95, device: torch.device | str = "cpu"):
        if not 0 <= p_max < 1:
            raise ValueError(f"p_max must lie in [0, 1), got {p_max}")
        self.batch_size, self.target, self.interval = batch_size, target, interval
        self.speed_kimg, self.p_max = speed_kimg, p_max
        self.device = torch.device(device)
        self.load_state_dict({"p": min(max(float(p), 0.0), p_max), "rt": 0.0, "sign_sum": 0.0, "count": 0.0})

    def observe(self, real_logits: torch.Tensor) -> None:
        """Add this process's D outputs on (augmented) reals to the running r_t."""
        logits = real_logits.detach().float()
        self._sums += torch.stack([logits.sign().sum(), logits.new_full((), logits.numel())])

    def update(self, step: int, reduce_sum) -> None:
        """At the end of every `interval`-th step, adjust p from the statistics of all processes.

        `reduce_sum(tensor)` sums a tensor over processes (e.g.
        `lambda t: accelerator.reduce(t, "sum")`); it is called on every
        process at the same steps.
        """
        if (step + 1) % self.interval:
            return
        sign_sum, count = reduce_sum(self._sums)
        self._sums = torch.zeros_like(self._sums)
        observed = count > 0
        self.rt = torch.where(observed, sign_sum / count.clamp(min=1), self.rt)
        direction = (self.rt.double() > self.target).double() * 2 - 1  # +1: more augmentation
        adjust = direction * (self.batch_size * self.interval / (self.speed_kimg * 1000))
        self.p = torch.where(observed, (self.p + adjust).clamp(0.0, self.p_max), self.p)

    def state_dict(self) -> dict:
        sign_sum, count = self._sums.tolist()
        return {"p": float(self.p), "rt": float(self.rt), "sign_sum": sign_sum, "count": count}

    def load_state_dict(self, state: dict) -> None:
        self.p = torch.tensor(float(state["p"]), dtype=torch.float64, device=self.device)
        self.rt = torch.tensor(float(state["rt"]), device=self.device)
        self._sums = torch.tensor([float(state["sign_sum"]), float(state["count"])], device=self.device)
