"""PSNR and SSIM between images of the same size (how well SinGAN reconstructs its image).

SSIM follows Wang, Bovik, Sheikh & Simoncelli (2004): an 11x11 Gaussian
window with sigma 1.5, K1 = 0.01, K2 = 0.03, statistics weighted by the window
over every position where it fits inside the image ('valid'), the SSIM map
averaged over positions and channels. Images smaller than the window use the
largest odd window that fits.
"""

import math

import torch
import torch.nn.functional as F


def _as_float64(images: torch.Tensor) -> torch.Tensor:
    images = images.detach().to(torch.float64)
    return images[None] if images.ndim == 3 else images


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 255.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image ([N, C, H, W] or [C, H, W]); inf when identical."""
    x, y = _as_float64(x), _as_float64(y)
    mse = (x - y).pow(2).mean(dim=(1, 2, 3))
    return 10 * torch.log10(data_range ** 2 / mse)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Normalized 2-D Gaussian weights [size, size] (float64)."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-coords ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 255.0, window_size: int = 11,
         sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Mean structural similarity per image ([N, C, H, W] or [C, H, W]; any value range given
    `data_range`, e.g. 255 for uint8). 1 for identical images."""
    x, y = _as_float64(x), _as_float64(y)
    if x.shape != y.shape:
        raise ValueError(f"ssim: shapes differ, {tuple(x.shape)} vs {tuple(y.shape)}")
    channels = x.shape[1]
    size = min(window_size, x.shape[2], x.shape[3])
    size -= 1 - size % 2  # odd, so the window has a center
    window = gaussian_window(size, sigma).to(x.device).expand(channels, 1, size, size)

    def local_mean(images):
        return F.conv2d(images, window, groups=channels)

    mu_x, mu_y = local_mean(x), local_mean(y)
    var_x = local_mean(x * x) - mu_x ** 2
    var_y = local_mean(y * y) - mu_y ** 2
    cov_xy = local_mean(x * y) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return ssim_map.mean(dim=(1, 2, 3))


def reconstruction_quality(reconstruction_uint8: torch.Tensor, real_uint8: torch.Tensor) -> dict[str, float]:
    """{'psnr': dB, 'ssim': ...} of one uint8 image against another (the scale's real image)."""
    value = float(psnr(reconstruction_uint8, real_uint8)[0])
    # JSON has no infinity: an exact reconstruction reports 100 dB (8-bit images differing by one level in
    # one pixel of a 250x250 image already give 96 dB).
    return {"psnr": value if math.isfinite(value) else 100.0, "ssim": float(ssim(reconstruction_uint8, real_uint8)[0])}
