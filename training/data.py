"""Image data: decode once into memory, serve deterministic sharded batches.

A data set of a few hundred small images fits in a few megabytes, so it is
decoded once into a uint8 tensor on the training device and batches are plain
indexing: loading never starves a GPU. Which images form the batch at step s
and how they are flipped is a function of (seed, s) alone: the same global
batch on any number of processes (each takes its slice), and the same batch
after a resume.
"""

import io
import os
import urllib.parse
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image

from training import particles
from training.images import to_float
from training.seeding import generator

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
BUILTIN_PREFIX = "builtin:"


class DataError(ValueError):
    """The data path yields no usable images; the message says what to change."""


# ---------------------------------------------------------------------------
# Decoding

def to_8bit(image: Image.Image) -> Image.Image:
    """Scientific formats (16-bit, 32-bit int/float) scaled to 8 bits by their full range."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        array = np.asarray(image, dtype=np.float64) / 65535.0
    elif image.mode == "I":
        array = np.asarray(image, dtype=np.float64)
        array = array / 65535.0 if array.max() > 255 else array / 255.0
    elif image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        peak = array.max()
        array = array / peak if peak > 1 else array  # floats in [0, 1], or counts scaled by the peak
    else:
        return image
    return Image.fromarray(np.round(np.clip(array, 0, 1) * 255).astype(np.uint8))


def decode_image(data: bytes, resolution: int, channels: int) -> np.ndarray:
    """Encoded bytes -> uint8 [channels, resolution, resolution].

    Non-square images are center-cropped to their largest central square, then
    resized with Lanczos (antialiased) filtering.
    """
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        image = to_8bit(image)
        image = image.convert("L" if channels == 1 else "RGB")
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    image = image.crop((left, top, left + side, top + side))
    if side != resolution:
        image = image.resize((resolution, resolution), Image.Resampling.LANCZOS)
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def image_sources(path: str) -> list[tuple[str, callable]]:
    """(name, read-bytes function) for every image file under `path`, in a stable order."""
    if os.path.isdir(path):
        files = []
        for root, dirs, names in os.walk(path, followlinks=True):
            dirs.sort()
            files += [os.path.join(root, n) for n in sorted(names) if n.lower().endswith(IMAGE_EXTENSIONS)]
        return [(f, lambda f=f: open(f, "rb").read()) for f in files]
    if path.lower().endswith(".zip"):
        try:
            archive = zipfile.ZipFile(path)
        except (OSError, zipfile.BadZipFile) as e:
            raise DataError(f"data.path: cannot open zip {path} ({e}); give a valid .zip, a folder or an image")
        names = sorted(n for n in archive.namelist() if n.lower().endswith(IMAGE_EXTENSIONS))
        return [(f"{path}:{n}", lambda n=n: archive.read(n)) for n in names]
    if os.path.isfile(path):
        return [(path, lambda: open(path, "rb").read())]
    raise DataError(f"data.path: {path} does not exist; give a folder, a .zip, an image or builtin:particles")


def parse_builtin(path: str) -> tuple[str, dict]:
    """'builtin:particles?count=300&seed=0' -> ('particles', {'count': 300, 'seed': 0})."""
    name, _, query = path[len(BUILTIN_PREFIX):].partition("?")
    if name != "particles":
        raise DataError(f"data.path: unknown built-in set {name!r}; the built-in set is builtin:particles")
    options = {"count": 300, "seed": 0}
    for key, values in urllib.parse.parse_qs(query, strict_parsing=bool(query)).items() if query else []:
        if key not in options or not values[-1].lstrip("-").isdigit():
            raise DataError(f"data.path: {path}: options are count=<int> and seed=<int>")
        options[key] = int(values[-1])
    if options["count"] < 1:
        raise DataError(f"data.path: {path}: count must be positive")
    return name, options


def load_images(path: str, resolution: int, channels: int) -> torch.Tensor:
    """Every usable image under `path` as uint8 [N, channels, resolution, resolution].

    Unreadable files are skipped with a warning naming them; no usable image
    at all is a DataError.
    """
    if path.startswith(BUILTIN_PREFIX):
        _, options = parse_builtin(path)
        images = torch.from_numpy(particles.load(options["count"], resolution, options["seed"]))
        return images.expand(-1, channels, -1, -1).contiguous()

    sources = image_sources(path)

    def decode(source):
        name, read = source
        try:
            return decode_image(read(), resolution, channels)
        except Exception as e:  # any decoder failure means the same thing: skip this file
            warnings.warn(f"skipping unreadable image {name}: {type(e).__name__}: {e}", stacklevel=2)
            return None

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        decoded = [image for image in pool.map(decode, sources) if image is not None]
    if not decoded:
        raise DataError(f"data.path: no usable images in {path} (looked for {', '.join(IMAGE_EXTENSIONS)})")
    return torch.from_numpy(np.stack(decoded))


# ---------------------------------------------------------------------------
# Batches

class ImageBatches:
    """The data set in device memory and the deterministic global batch of each step.

    Args:
        images:      uint8 [N, C, H, W] (from `load_images`)
        batch_size:  global batch size (all processes together)
        seed:        the run's seed; shuffling and flips derive from it
        hflip/vflip: random flips, each with probability 1/2 per image
        device:      where the images live and batches are returned
    """

    def __init__(self, images: torch.Tensor, batch_size: int, seed: int,
                 hflip: bool = False, vflip: bool = False, device: torch.device | str = "cpu"):
        self.images = images.to(device)
        self.batch_size = batch_size
        self.seed = seed
        self.hflip = hflip
        self.vflip = vflip
        self._epoch_cache: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.images)

    def _epoch_order(self, epoch: int) -> torch.Tensor:
        if epoch not in self._epoch_cache:  # keep the two epochs a batch can straddle
            self._epoch_cache = {e: o for e, o in self._epoch_cache.items() if e == epoch - 1}
            self._epoch_cache[epoch] = torch.randperm(len(self), generator=generator(self.seed, "epoch", epoch))
        return self._epoch_cache[epoch]

    def global_indices(self, step: int) -> torch.Tensor:
        """Indices of the global batch at `step`: epochs are reshuffled permutations, read in order."""
        n = len(self)
        positions = torch.arange(step * self.batch_size, (step + 1) * self.batch_size)
        indices = torch.empty_like(positions)
        for epoch in range(int(positions[0]) // n, int(positions[-1]) // n + 1):
            in_epoch = positions // n == epoch
            indices[in_epoch] = self._epoch_order(epoch)[positions[in_epoch] % n]
        return indices

    def batch(self, step: int, rank: int = 0, world_size: int = 1) -> torch.Tensor:
        """This process's share of the step's batch, float in [-1, 1]."""
        indices = self.global_indices(step)
        g = generator(self.seed, "flips", step)
        flips = torch.rand(self.batch_size, 2, generator=g) < 0.5
        local = shard(torch.arange(self.batch_size), rank, world_size)
        images = to_float(self.images[indices[local].to(self.images.device)])
        if self.hflip:
            images = torch.where(flips[local, 0].to(images.device)[:, None, None, None], images.flip(3), images)
        if self.vflip:
            images = torch.where(flips[local, 1].to(images.device)[:, None, None, None], images.flip(2), images)
        return images


def shard(x: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank's contiguous slice of a global batch (the batch must divide evenly)."""
    if len(x) % world_size:
        raise ValueError(f"global batch of {len(x)} does not split over {world_size} processes")
    per_rank = len(x) // world_size
    return x[rank * per_rank:(rank + 1) * per_rank]


# ---------------------------------------------------------------------------
# One image at its own size (SinGAN)

GRAYSCALE_MODES = ("1", "L", "LA", "La")  # PIL modes after to_8bit, which turns 16-bit, integer and float into "L"


def load_image_full(path: str, channels: int | None, builtin_resolution: int = 250) -> torch.Tensor:
    """One image at its full size and aspect ratio, as uint8 [channels, H, W].

    `path` is an image file; a folder or .zip gives its first image (with a
    warning). `builtin:particles[?seed=S]` renders one (grayscale) frame at
    `builtin_resolution`, so the default config needs no data. `channels`
    None keeps the file's own: 1 for a grayscale file, 3 for any other.
    """
    if path.startswith(BUILTIN_PREFIX):
        _, options = parse_builtin(path)
        frame = torch.from_numpy(particles.render_frame(options["seed"], 0, builtin_resolution))
        return frame[None].expand(channels or 1, -1, -1).contiguous()
    sources = image_sources(path)
    if not sources:
        raise DataError(f"data.path: no image in {path} (looked for {', '.join(IMAGE_EXTENSIONS)})")
    name, read = sources[0]
    if len(sources) > 1:
        warnings.warn(f"data.path: {path} holds {len(sources)} images; SinGAN learns one, using {name}",
                      stacklevel=2)
    try:
        with Image.open(io.BytesIO(read())) as image:
            image.load()
            image = to_8bit(image)
            channels = channels or (1 if image.mode in GRAYSCALE_MODES else 3)
            image = image.convert("L" if channels == 1 else "RGB")
    except Exception as e:  # any decoder failure: the one image is unusable
        raise DataError(f"data.path: cannot read {name} as an image ({type(e).__name__}: {e})")
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array[None] if channels == 1 else array.transpose(2, 0, 1).copy())
