"""One mapping from data units to the networks' [-1, 1], fitted once for the whole data set.

    normalization = fit_normalization(frames, config.data)   # frames: uint8 or float32 [N, C, H, W]
    x = normalization.forward(frames)                          # what the networks see
    frames_again = normalization.inverse(x)                    # back in data units (counts, photo-electrons)

The same mapping for every frame keeps the brightness relation between frames
(the energy scale), which a per-image scaling would destroy. Three kinds:

- `linear`: [low, high] -> [-1, 1];
- `log1p`:  log1p(x / scale), then linear over [log1p(low / scale), log1p(high / scale)];
- `asinh`:  asinh(x / scale), the same way (linear below `scale`, logarithmic above; takes negative noise).

[low, high] is `data.range` when given, else 0 and 255 for 8-bit sets (exactly
the conversion every 8-bit run has always used), else the set's minimum and its
`data.range_percentile`-th percentile. Values beyond the range are not clipped.
The fitted range is written back into the config, so `config.yaml` and every
checkpoint record the mapping, and `normalization_from_config` rebuilds it.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch

from training.config import ConfigError

KINDS = ("linear", "log1p", "asinh")
EIGHT_BIT_RANGE = (0.0, 255.0)


class NormalizationError(ConfigError):
    """A mapping that cannot be fitted to this data; the message says which key to set."""


@dataclass(frozen=True)
class Normalization:
    kind: str = "linear"   # linear, log1p or asinh
    low: float = 0.0       # data value mapped to -1
    high: float = 255.0    # data value mapped to +1
    scale: float = 1.0     # log1p/asinh: data units per unit inside the log

    def _transform(self, x):
        if self.kind == "log1p":
            return torch.log1p(x / self.scale) if isinstance(x, torch.Tensor) else math.log1p(x / self.scale)
        if self.kind == "asinh":
            return torch.asinh(x / self.scale) if isinstance(x, torch.Tensor) else math.asinh(x / self.scale)
        return x

    def _untransform(self, t: torch.Tensor) -> torch.Tensor:
        if self.kind == "log1p":
            return torch.expm1(t) * self.scale
        if self.kind == "asinh":
            return torch.sinh(t) * self.scale
        return t

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Data units (any dtype) -> float32, the range at [-1, 1].

        For uint8 frames and the 8-bit range this is `frames.float() / 127.5 - 1` bit for bit
        (x - 0.0 is exact), i.e. `training.images.to_float`.
        """
        t_low, t_high = self._transform(self.low), self._transform(self.high)
        return (self._transform(frames.float()) - t_low) / ((t_high - t_low) / 2) - 1

    def inverse(self, images: torch.Tensor) -> torch.Tensor:
        """Network outputs ([-1, 1]) -> float32 data units."""
        t_low, t_high = self._transform(self.low), self._transform(self.high)
        return self._untransform((images.float() + 1) * ((t_high - t_low) / 2) + t_low)

    def to_uint8(self, frames: torch.Tensor) -> torch.Tensor:
        """The 8-bit picture of frames as the networks see them: what FID and sample grids compare.

        8-bit sets under the default mapping are returned as they are (the same pixels).
        """
        from training.images import to_uint8
        if frames.dtype == torch.uint8 and self == Normalization():
            return frames
        return to_uint8(self.forward(frames))

    def to_config(self) -> dict:
        return {"normalize": self.kind, "range": [self.low, self.high], "scale": self.scale}


def fit_normalization(frames: torch.Tensor, data_config) -> Normalization:
    """The mapping `data_config` (normalize, range, range_percentile, scale) asks for, fitted to `frames`."""
    kind, scale = data_config.normalize, float(data_config.scale)
    if data_config.range is not None:
        low, high = (float(v) for v in data_config.range)
    elif frames.dtype == torch.uint8:
        low, high = EIGHT_BIT_RANGE
    else:
        values = frames.detach().cpu().numpy().ravel()
        low = float(values.min())
        high = float(np.percentile(values, data_config.range_percentile))
        if high <= low:  # sparse frames: the percentile is still background; take the brightest value
            high = float(values.max())
        if high <= low:
            raise NormalizationError(f"data.range: every value of the set is {low:g}; nothing to learn, or give "
                                     f"data.range=[low,high]")
    if kind == "log1p":
        smallest = float(frames.min())
        if smallest <= -scale or low <= -scale:
            raise NormalizationError(f"data.normalize=log1p needs every value above -data.scale={-scale:g} "
                                     f"(the set's minimum is {smallest:g}); use asinh or a larger data.scale")
    return Normalization(kind, low, high, scale)


def normalization_from_config(data: dict) -> Normalization:
    """The mapping a run used, from its config's `data` section.

    The training loop always records the fitted range; a config without one is
    8-bit: a run from before data.normalize, or SinGAN's (one 8-bit image).
    """
    if data.get("range") is None:
        if data.get("normalize", "linear") != "linear":
            raise NormalizationError("data.range is empty: this config was never fitted to its data (a run's own "
                                     "config.yaml and its checkpoints hold the fitted range)")
        return Normalization()
    low, high = data["range"]
    return Normalization(data.get("normalize", "linear"), float(low), float(high), float(data.get("scale", 1.0)))
