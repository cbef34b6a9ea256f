"""Vicinal training for continuous labels (CcGAN: Ding et al., "CcGAN: Continuous Conditional GANs",
ICLR 2021), for sets like ~300 frames that each have their own energy: no two frames share a value,
so a label value has one real frame, or none, to learn from.

The remedy, with `train.label_vicinity: hard | soft` (continuous columns only; discrete ones must match):

- label noise: a target label is a training frame's label plus Gaussian noise of width sigma per
  continuous column, the rule of thumb of the paper: sigma = (4 s^5 / (3 N))^(1/5), s the standard
  deviation of the N (encoded) labels;
- D's real loss takes, for each target, a real frame from the target's vicinity, scored at the target:
  hard: a frame whose label is within kappa of the target in every continuous column, drawn uniformly
  (kappa = kappa_factor x the largest gap between neighbouring label values, the paper's kappa_base);
  soft: a frame within the radius where the weight exp(-nu d^2), nu = 1 / kappa^2, is above 1e-3,
  its loss weighted by that weight (the product over columns);
- the fakes D sees for a target are generated at labels drawn uniformly within kappa of it and scored
  at the target (soft: weighted like reals);
- G is trained at the noisy target labels.

A target whose vicinity holds no frame of its classes falls back to the frame it was drawn from.
All draws are keyed by (seed, purpose, step) for the whole global batch, so K processes train like one
and a resumed run like an uninterrupted one.
"""

import math
from dataclasses import dataclass

import torch

from training.labels import LabelEncoding
from training.seeding import generator

SOFT_CUTOFF = 1e-3  # the soft vicinity keeps frames whose weight is at least this (the paper's threshold)


@dataclass
class Vicinity:
    kind: str                  # 'hard' or 'soft'
    continuous: torch.Tensor   # positions of the continuous columns in the encoded label
    discrete: torch.Tensor     # positions of the one-hot entries
    sigma: torch.Tensor        # label noise per continuous column (encoded units)
    kappa: torch.Tensor        # vicinity half-width per continuous column
    nu: torch.Tensor           # soft weight's sharpness, 1 / kappa^2

    @property
    def radius(self) -> torch.Tensor:
        """How far a real frame may be from its target in each column."""
        return self.kappa if self.kind == "hard" else torch.sqrt(-math.log(SOFT_CUTOFF) / self.nu)

    def weights(self, labels: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Each sample's loss weight: 1 (hard) or prod exp(-nu d^2) over the continuous columns (soft)."""
        if self.kind == "hard":
            return torch.ones(len(labels), device=labels.device)
        d = labels[:, self.continuous] - targets[:, self.continuous]
        return torch.exp(-(self.nu.to(d.device) * d.square()).sum(dim=1))


def rule_of_thumb(values: torch.Tensor) -> tuple[float, float]:
    """(sigma, kappa_base) of one continuous column's N training values: Silverman's bandwidth
    (4 s^5 / 3N)^(1/5) and the largest gap between neighbouring distinct values."""
    values = values.double()
    sigma = (4 * values.std().item() ** 5 / (3 * len(values))) ** 0.2
    distinct = torch.unique(values)
    kappa_base = (distinct[1:] - distinct[:-1]).max().item() if len(distinct) > 1 else 0.0
    return sigma, kappa_base


def build_vicinity(kind: str, encoding: LabelEncoding, table: torch.Tensor, kappa_factor: float) -> Vicinity:
    """The vicinity of a set's encoded labels `table` [N, c_dim]; ValueError without continuous labels."""
    continuous, discrete, at = [], [], 0
    for column in encoding.columns:
        (continuous if column.kind == "continuous" else discrete).extend(range(at, at + column.width))
        at += column.width
    if not continuous:
        raise ValueError("train.label_vicinity: the labels have no continuous column; use none")
    sigma, kappa = zip(*(rule_of_thumb(table[:, i].cpu()) for i in continuous))
    kappa = torch.tensor(kappa) * kappa_factor
    return Vicinity(kind, torch.tensor(continuous), torch.tensor(discrete, dtype=torch.long),
                    torch.tensor(sigma, dtype=torch.float32), kappa.float(), (1 / kappa.square()).float())


def draw_targets(vicinity: Vicinity, table: torch.Tensor, n: int, seed: int, *keys) -> tuple[torch.Tensor,
                                                                                               torch.Tensor]:
    """(target labels [n, c_dim], the rows they were drawn from [n]): training labels plus noise."""
    g = generator(seed, "vicinity/targets", *keys)
    rows = torch.randint(len(table), (n,), generator=g)
    noise = torch.randn(n, len(vicinity.continuous), generator=g) * vicinity.sigma
    targets = table.cpu()[rows].clone()
    targets[:, vicinity.continuous] += noise
    return targets, rows


def real_rows(vicinity: Vicinity, table: torch.Tensor, targets: torch.Tensor, rows: torch.Tensor, seed: int,
              *keys) -> torch.Tensor:
    """For each target a training frame from its vicinity (same classes, every continuous column within
    the radius), drawn uniformly; the frame the target came from when the vicinity is empty."""
    table = table.cpu()
    u = torch.rand(len(targets), generator=generator(seed, "vicinity/reals", *keys))
    distance = (table[None, :, vicinity.continuous] - targets[:, None, vicinity.continuous]).abs()
    inside = (distance <= vicinity.radius).all(dim=2)
    if len(vicinity.discrete):
        inside &= (table[None, :, vicinity.discrete] == targets[:, None, vicinity.discrete]).all(dim=2)
    chosen = rows.clone()
    for i in range(len(targets)):
        candidates = inside[i].nonzero()[:, 0]
        if len(candidates):
            chosen[i] = candidates[min(int(u[i] * len(candidates)), len(candidates) - 1)]
    return chosen


def fake_labels(vicinity: Vicinity, targets: torch.Tensor, seed: int, *keys) -> torch.Tensor:
    """Labels to generate D's fakes at: each continuous column uniform within kappa of the target."""
    u = torch.rand(len(targets), len(vicinity.continuous), generator=generator(seed, "vicinity/fakes", *keys))
    labels = targets.clone()
    labels[:, vicinity.continuous] += (2 * u - 1) * vicinity.kappa
    return labels
