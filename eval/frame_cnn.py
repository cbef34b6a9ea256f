"""A small convolutional network that reads single-channel frames in data units, and its training loop.

One network for every downstream question the evaluation asks of frames: the classifier two-sample
test (eval/physics.py: real or generated?) and the utility benchmark (benchmarks/utility.py: which
label does this frame carry?). It is what a physicist would train on a few hundred frames: a few
strided convolutions, global average and max pooling (so it sees both the mean level and the
brightest hit), one linear layer.

    model = fit_frame_cnn(frames, targets, loss, outputs=1, steps=600, seed=0)
    outputs = predict(model, other_frames)
"""

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn


class FrameCNN(nn.Module):
    """Frames [N, H, W] (data units) -> outputs [N, outputs].

    Args:
        resolution:  H = W of the frames (a power of two, at least 8)
        outputs:     number of outputs (one logit, label values, class logits)
        pixel_mean:  the training frames' pixel mean: inputs are standardized by it ...
        pixel_std:   ... and their pixel spread, so data units of any scale train alike
        width:       channels of the first convolution, doubled at each halving (at most 4x)
    """

    def __init__(self, resolution: int, outputs: int, pixel_mean: float, pixel_std: float, width: int = 16):
        super().__init__()
        if resolution < 8 or resolution & (resolution - 1):
            raise ValueError(f"FrameCNN takes square frames of a power-of-two size >= 8, got {resolution}")
        self.register_buffer("pixel_mean", torch.tensor(float(pixel_mean)))
        self.register_buffer("pixel_std", torch.tensor(max(float(pixel_std), 1e-12)))
        layers, channels = [nn.Conv2d(1, width, 3, padding=1), nn.LeakyReLU(0.2)], width
        for _ in range(int(math.log2(resolution)) - 2):  # halvings down to 4x4
            wider = min(channels * 2, width * 4)
            layers += [nn.Conv2d(channels, wider, 3, stride=2, padding=1), nn.LeakyReLU(0.2)]
            channels = wider
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(2 * channels, outputs)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = self.features(((frames - self.pixel_mean) / self.pixel_std)[:, None])
        return self.head(torch.cat([x.mean((2, 3)), x.amax((2, 3))], 1))


def random_flips_and_shifts(frames: torch.Tensor, generator: torch.Generator, max_shift: int) -> torch.Tensor:
    """Classical augmentation of a batch [N, H, W]: each frame flipped left-right and up-down with
    probability 1/2 each and translated by up to `max_shift` pixels per axis (zero fill)."""
    n, h, w = frames.shape
    flips = torch.rand(n, 2, generator=generator) < 0.5
    frames = torch.where(flips[:, 0, None, None], frames.flip(2), frames)
    frames = torch.where(flips[:, 1, None, None], frames.flip(1), frames)
    if max_shift == 0:
        return frames
    padded = nn.functional.pad(frames, (max_shift,) * 4)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, n), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, :, None]
    cols = (dx[:, None] + torch.arange(w))[:, None, :]
    return padded[torch.arange(n)[:, None, None], rows, cols]


def fit_frame_cnn(frames, targets: torch.Tensor, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                  outputs: int, steps: int, seed: int, batch_size: int = 64, lr: float = 2e-3,
                  width: int = 16, augment_shift: int | None = None) -> FrameCNN:
    """Train a FrameCNN on frames [N, H, W] (array or tensor, data units) against targets [N, ...] by
    `loss(outputs, targets)` for `steps` Adam steps of `batch_size` frames drawn without replacement
    (a new permutation each pass). Deterministic for a seed; the global random state is untouched.
    `augment_shift`: None for no augmentation, else flips and translations of up to that many pixels."""
    frames = torch.as_tensor(np.asarray(frames, np.float32))
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FrameCNN(frames.shape[-1], outputs, frames.mean(), frames.std(), width)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    batch_size = min(batch_size, len(frames))
    order, at = torch.randperm(len(frames), generator=generator), 0
    model.train()
    for _ in range(steps):
        if at + batch_size > len(order):
            order, at = torch.randperm(len(frames), generator=generator), 0
        rows, at = order[at:at + batch_size], at + batch_size
        batch = frames[rows]
        if augment_shift is not None:
            batch = random_flips_and_shifts(batch, generator, augment_shift)
        optimizer.zero_grad(set_to_none=True)
        loss(model(batch), targets[rows]).backward()
        optimizer.step()
    return model.eval()


@torch.no_grad()
def predict(model: FrameCNN, frames, batch_size: int = 256) -> torch.Tensor:
    """The model's outputs [N, outputs] for frames [N, H, W] (data units)."""
    frames = torch.as_tensor(np.asarray(frames, np.float32))
    return torch.cat([model(frames[start:start + batch_size]) for start in range(0, len(frames), batch_size)])
