"""Conversions between network outputs and stored images.

Networks work in [-1, 1]; 8-bit files and metrics work in uint8. Everything
that turns a generated tensor into 8-bit pixels goes through `to_uint8`, so an
image scored in memory is bit-identical to the same image saved as PNG. Frames
in data units (16-bit PNG, float TIFF, .npy) come from
`training.normalize.Normalization.inverse`.
"""

import math
import os

import numpy as np
import torch
from PIL import Image


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float images -> uint8 with round-to-nearest, clamped to [0, 255]."""
    return (images.detach().float() * 127.5 + 127.5).round().clamp(0, 255).to(torch.uint8)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [-1, 1] (the inverse of `to_uint8` on its grid)."""
    return images.float() / 127.5 - 1


def make_grid(images: torch.Tensor, columns: int | None = None) -> np.ndarray:
    """uint8 [N, C, H, W] -> one HxWxC (or HxW for C=1) uint8 array, row-major tiles."""
    n, c, h, w = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    grid = torch.zeros(c, rows * h, columns * w, dtype=torch.uint8)
    for i, image in enumerate(images.cpu()):
        r, col = divmod(i, columns)
        grid[:, r * h:(r + 1) * h, col * w:(col + 1) * w] = image
    array = grid.permute(1, 2, 0).numpy()
    return array[:, :, 0] if c == 1 else array


def write_atomically(path: str, write, suffix: str) -> None:
    """`write(temporary path)`, then rename onto `path`: a crash never leaves half a file under `path`."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}{suffix}"
    write(tmp)
    os.replace(tmp, path)


def save_png(array: np.ndarray, path: str) -> None:
    """Write an HxW or HxWx3 uint8 array (or an HxW uint16 one: a 16-bit PNG) as PNG, atomically."""
    write_atomically(path, lambda tmp: Image.fromarray(array).save(tmp), ".png")


def save_tiff(array: np.ndarray, path: str) -> None:
    """Write an HxW or HxWxC array as TIFF in its own dtype (float32 stays float32), atomically."""
    import tifffile
    write_atomically(path, lambda tmp: tifffile.imwrite(tmp, array), ".tif")


def save_npy(array: np.ndarray, path: str) -> None:
    """Write an array as .npy, atomically."""
    write_atomically(path, lambda tmp: np.save(tmp, array), ".npy")
