"""Image data: decode once into memory, serve deterministic sharded batches.

A data set of a few hundred small images fits in a few megabytes, so it is
decoded once into a tensor on the training device (uint8 for 8-bit images,
float32 in the data's own units for 16-bit, 32-bit and float frames, .npy/.npz
stacks and HDF5 datasets) and batches are plain indexing, mapped to [-1, 1]
by the set's one `training.normalize.Normalization`: loading never starves a GPU. Which images form the batch at step s
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
from training.normalize import Normalization
from training.seeding import generator

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
BUILTIN_PREFIX = "builtin:"


class DataError(ValueError):
    """The data path yields no usable images; the message says what to change."""


# ---------------------------------------------------------------------------
# Decoding: 8-bit images as they always were; everything deeper as float32 in data units

HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")  # PIL's 16-bit, 32-bit int and float modes
LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601, the weights of PIL's convert("L")


def to_8bit(image: Image.Image) -> Image.Image:
    """A display copy of a scientific image (16-bit, 32-bit int/float) scaled to 8 bits by its own range.

    Only for looking at files (`eval/fid.py --real/--fake` folders); training data keep their precision.
    """
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


def _center_square(width: int, height: int) -> tuple[int, int, int, int]:
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def eight_bit_frame(image: Image.Image, resolution: int | None, channels: int) -> np.ndarray:
    """An 8-bit PIL image -> uint8 [channels, resolution, resolution].

    Non-square images are center-cropped to their largest central square, then
    resized with Lanczos (antialiased) filtering. `resolution` None keeps the size.
    """
    image = image.convert("L" if channels == 1 else "RGB")
    if resolution is not None:
        image = image.crop(_center_square(*image.size))
        if image.size[0] != resolution:
            image = image.resize((resolution, resolution), Image.Resampling.LANCZOS)
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def check_finite(array: np.ndarray, name: str) -> np.ndarray:
    finite = np.isfinite(array)
    if not finite.all():
        raise DataError(f"data.path: {name} holds {int(finite.size - finite.sum())} NaN/inf value(s); replace them "
                        f"(e.g. np.nan_to_num) or drop those frames")
    return array


def float_frame(array: np.ndarray, resolution: int | None, channels: int, name: str) -> np.ndarray:
    """One [H, W] or [H, W, C] frame in data units -> float32 [channels, resolution, resolution].

    Grayscale from colour uses the luma weights (as 8-bit images do); RGB from
    grayscale repeats it. The same center crop as 8-bit images, then an area
    average (box filter) to the resolution: unlike Lanczos it never rings
    below zero, and the mean intensity is kept (a whole-number factor is
    binning).
    """
    array = check_finite(np.asarray(array, dtype=np.float32), name)
    if array.ndim == 3:
        if array.shape[2] not in (1, 3, 4):
            raise DataError(f"data.path: {name}: a frame of shape {list(array.shape)} is not [H, W] or [H, W, C] "
                            f"with C = 1, 3 or 4")
        array = array[:, :, 0] if array.shape[2] == 1 else array[:, :, :3]
    if array.ndim == 2:
        planes = [array] * channels if channels == 3 else [array]
    else:
        planes = [array[:, :, i] for i in range(3)] if channels == 3 else [array @ LUMA]
    out = []
    for plane in planes:
        if resolution is not None and plane.shape != (resolution, resolution):
            image = Image.fromarray(np.ascontiguousarray(plane, np.float32), mode="F")
            image = image.crop(_center_square(*image.size))
            if image.size[0] != resolution:
                image = image.resize((resolution, resolution), Image.Resampling.BOX)
            plane = np.asarray(image, dtype=np.float32)
        out.append(plane)
    return np.stack(out).astype(np.float32, copy=False)


def _tiff_frames(array: np.ndarray, resolution: int | None, channels: int, name: str) -> np.ndarray:
    """A TIFF's pixels ([H, W], [H, W, C] or a page stack [N, H, W]) -> [K, C, R, R]."""
    if array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4)):
        pages = [array]
    elif array.ndim == 3:
        pages = list(array)
    else:
        raise DataError(f"data.path: {name}: TIFF pixels of shape {list(array.shape)}; expected [H, W], "
                        f"[H, W, C] or a page stack [N, H, W]")
    if array.dtype == np.uint8:
        return np.stack([eight_bit_frame(Image.fromarray(page), resolution, channels) for page in pages])
    return np.stack([float_frame(page, resolution, channels, name) for page in pages])


def decode_image(data: bytes, resolution: int | None, channels: int, name: str = "image") -> np.ndarray:
    """Encoded bytes -> frames [K, channels, resolution, resolution] (K = 1 but for TIFF page stacks).

    8-bit images give uint8 exactly as they always have; 16-bit PNG/TIFF and
    32-bit integer or float TIFF give float32 at full precision (TIFF through
    `tifffile`, which reads every sample format).
    """
    if name.lower().endswith((".tif", ".tiff")):
        import tifffile
        try:
            array = tifffile.imread(io.BytesIO(data))
        except Exception:  # a compression tifffile cannot decode: PIL may
            array = None
        if array is not None:
            return _tiff_frames(array, resolution, channels, name)
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        if image.mode in HIGH_DEPTH_MODES:
            return float_frame(np.asarray(image), resolution, channels, name)[None]
        return eight_bit_frame(image, resolution, channels)[None]


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
    raise DataError(f"data.path: {path} does not exist; give a folder, a .zip, an image, a .npy/.npz stack, "
                    f"file.h5:/dataset or builtin:particles")


def parse_builtin(path: str) -> tuple[str, dict]:
    """'builtin:particles?count=300&seed=0' -> ('particles', {'count': 300, 'seed': 0})."""
    name, _, query = path[len(BUILTIN_PREFIX):].partition("?")
    if name not in ("particles", "particles-cond"):
        raise DataError(f"data.path: unknown built-in set {name!r}; the built-in sets are builtin:particles and "
                        f"builtin:particles-cond (with labels)")
    options = {"count": 300, "seed": 0}
    for key, values in urllib.parse.parse_qs(query, strict_parsing=bool(query)).items() if query else []:
        if key not in options or not values[-1].lstrip("-").isdigit():
            raise DataError(f"data.path: {path}: options are count=<int> and seed=<int>")
        options[key] = int(values[-1])
    if options["count"] < 1:
        raise DataError(f"data.path: {path}: count must be positive")
    return name, options


ARRAY_EXTENSIONS = (".npy", ".npz", ".h5", ".hdf5")


def split_array_path(path: str) -> tuple[str, str | None]:
    """'frames.h5:/group/images' -> ('frames.h5', '/group/images'); 'stack.npy' -> ('stack.npy', None)."""
    lowered = path.lower()
    for extension in (".npz", ".h5", ".hdf5"):
        at = lowered.find(extension + ":")
        if at >= 0:
            return path[:at + len(extension)], path[at + len(extension) + 1:] or None
    return path, None


def is_array_path(path: str) -> bool:
    return split_array_path(path)[0].lower().endswith(ARRAY_EXTENSIONS)


def _hdf5_datasets(group, prefix: str = "") -> list[str]:
    import h5py
    names = []
    for key, item in group.items():
        if isinstance(item, h5py.Dataset):
            names.append(f"{prefix}/{key}")
        elif isinstance(item, h5py.Group):
            names += _hdf5_datasets(item, f"{prefix}/{key}")
    return names


def read_array(path: str) -> np.ndarray:
    """The array a .npy, .npz[:key] or .h5[:/dataset] path names, as stored."""
    file, key = split_array_path(path)
    if not os.path.isfile(file):
        raise DataError(f"data.path: {file} does not exist; give a .npy/.npz stack, file.h5:/dataset, a folder, "
                        f"a .zip, an image or builtin:particles")
    lowered = file.lower()
    try:
        if lowered.endswith(".npy"):
            return np.load(file, allow_pickle=False)
        if lowered.endswith(".npz"):
            with np.load(file, allow_pickle=False) as archive:
                names = archive.files
                if key is None and len(names) == 1:
                    key = names[0]
                if key not in names:
                    raise DataError(f"data.path: {file} holds arrays {', '.join(names) or '(none)'}; name one as "
                                    f"{file}:<array>")
                return archive[key]
        import h5py
        with h5py.File(file, "r") as h5:
            names = _hdf5_datasets(h5)
            if key is None and len(names) == 1:
                key = names[0]
            if key is None or not isinstance(h5.get(key), h5py.Dataset):
                what = "has no dataset " + repr(key) if key else "holds several datasets"
                raise DataError(f"data.path: {file} {what}; its datasets: {', '.join(names) or '(none)'}; "
                                f"give {file}:<dataset>")
            return h5[key][()]
    except DataError:
        raise
    except Exception as e:  # not a numpy/HDF5 file, truncated, pickled objects
        raise DataError(f"data.path: cannot read {path} ({type(e).__name__}: {e}); give a valid .npy, .npz or "
                        f"HDF5 file")


def array_frames(path: str, resolution: int | None, channels: int) -> np.ndarray:
    """A stack [N, H, W], [N, C, H, W] (C = 1 or 3) or one frame [H, W] -> [N, channels, R, R].

    uint8 arrays are 8-bit images (uint8 out, converted as image files are);
    any other numeric array becomes float32 in its own units.
    """
    array = read_array(path)
    if array.dtype.kind not in "uif":
        raise DataError(f"data.path: {path} holds {array.dtype} values; expected integers or floats")
    if array.size == 0:
        raise DataError(f"data.path: {path} is empty (shape {list(array.shape)}); it needs at least one frame")
    if array.ndim == 2:
        array = array[None, None]
    elif array.ndim == 3:
        array = array[:, None]
    elif array.ndim != 4 or array.shape[1] not in (1, 3):
        raise DataError(f"data.path: {path} has shape {list(array.shape)}; expected [N, H, W], [N, C, H, W] "
                        f"with C = 1 or 3, or one [H, W] frame (channels last? np.moveaxis(a, -1, 1))")
    if array.dtype == np.uint8:
        mode = "L" if array.shape[1] == 1 else "RGB"
        return np.stack([eight_bit_frame(Image.fromarray(frame[0] if mode == "L" else frame.transpose(1, 2, 0)),
                                         resolution, channels) for frame in array])
    same_size = resolution is None or array.shape[2:] == (resolution, resolution)
    if same_size and array.shape[1] == channels:  # the common case: no per-frame work
        return check_finite(np.asarray(array, dtype=np.float32), path)
    return np.stack([float_frame(frame[0] if frame.shape[0] == 1 else frame.transpose(1, 2, 0),
                                 resolution, channels, path) for frame in array])


def load_images(path: str, resolution: int | None, channels: int) -> torch.Tensor:
    """Every usable frame under `path` as [N, channels, resolution, resolution], in data units.

    uint8 when every source is an 8-bit image (exactly the pixels every run has
    always trained on), else float32 at the sources' full precision.
    Unreadable image files are skipped with a warning naming them; NaN/inf
    values, a malformed array or no usable frame at all is a DataError.
    `resolution` None keeps the frames' own size (they must all share it).
    """
    return load_frames(path, resolution, channels)[0]


def load_frames(path: str, resolution: int | None, channels: int) -> tuple[torch.Tensor, list[str] | None]:
    """`load_images` and each frame's file name relative to `path` (what a label CSV's `file` column
    names; a TIFF page stack repeats its name); None for stacks and the built-in sets (their labels
    go by frame order)."""
    if path.startswith(BUILTIN_PREFIX):
        name, options = parse_builtin(path)
        images = torch.from_numpy(particles.load(options["count"], resolution or 64, options["seed"], name))
        return images.expand(-1, channels, -1, -1).contiguous(), None
    if is_array_path(path):
        return torch.from_numpy(np.ascontiguousarray(array_frames(path, resolution, channels))), None

    sources = image_sources(path)

    def decode(source):
        name, read = source
        try:
            return decode_image(read(), resolution, channels, name)
        except DataError:  # NaN/inf or a malformed stack: bad data, not an unreadable file
            raise
        except Exception as e:  # any decoder failure means the same thing: skip this file
            warnings.warn(f"skipping unreadable image {name}: {type(e).__name__}: {e}", stacklevel=2)
            return None

    def relative(name: str) -> str:
        if os.path.isdir(path):
            return os.path.relpath(name, path).replace(os.sep, "/")
        return name.split(":", 1)[1] if name.startswith(path + ":") else os.path.basename(name)

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        results = list(pool.map(decode, sources))
    names = [relative(name) for (name, _), frames in zip(sources, results) if frames is not None
             for _ in range(len(frames))]
    decoded = [frames for frames in results if frames is not None]
    if not decoded:
        raise DataError(f"data.path: no usable images in {path} (looked for {', '.join(IMAGE_EXTENSIONS)})")
    shapes = {frames.shape[1:] for frames in decoded}
    if len(shapes) > 1:
        raise DataError(f"data.path: frames in {path} differ in size ({', '.join(str(list(s)) for s in shapes)}); "
                        f"give a resolution to resize them to")
    if any(frames.dtype != np.uint8 for frames in decoded):
        decoded = [frames.astype(np.float32, copy=False) for frames in decoded]
    return torch.from_numpy(np.concatenate(decoded)), names


# ---------------------------------------------------------------------------
# Batches

class ImageBatches:
    """The data set in device memory and the deterministic global batch of each step.

    Args:
        images:      [N, C, H, W] in data units: uint8 or float32 (from `load_images`)
        normalization: data units -> [-1, 1] (`training.normalize`); default: the 8-bit mapping
        labels:      encoded labels [N, c_dim] of a conditional set (`training.labels`), or None
        batch_size:  global batch size (all processes together)
        seed:        the run's seed; shuffling and flips derive from it
        hflip/vflip: random flips, each with probability 1/2 per image
        device:      where the images live and batches are returned
    """

    def __init__(self, images: torch.Tensor, batch_size: int, seed: int,
                 hflip: bool = False, vflip: bool = False, device: torch.device | str = "cpu",
                 normalization: Normalization | None = None, labels: torch.Tensor | None = None):
        if normalization is None and images.dtype != torch.uint8:
            raise ValueError("frames that are not 8-bit need their normalization (training.normalize)")
        self.images = images.to(device)
        self.labels = None if labels is None else labels.to(device)  # encoded [N, c_dim] (training.labels)
        self.normalization = normalization or Normalization()
        self.batch_size = batch_size
        self.seed = seed
        self.hflip = hflip
        self.vflip = vflip
        self._epoch_cache: dict[int, torch.Tensor] = {}

    def images_uint8(self) -> torch.Tensor:
        """The set as the networks see it, in 8 bits (FID's real images); 8-bit sets: `images` itself."""
        return self.normalization.to_uint8(self.images)

    def __len__(self) -> int:
        return len(self.images)

    def _epoch_order(self, epoch: int) -> torch.Tensor:
        if epoch not in self._epoch_cache:  # keep the two epochs a batch can straddle
            self._epoch_cache = {e: o for e, o in self._epoch_cache.items() if e == epoch - 1}
            device = self.images.device
            self._epoch_cache[epoch] = torch.randperm(len(self), generator=generator(self.seed, "epoch", epoch,
                                                                                      device=device), device=device)
        return self._epoch_cache[epoch]

    def global_indices(self, step: int) -> torch.Tensor:
        """Indices of the global batch at `step`: epochs are reshuffled permutations, read in order.
        Drawn and gathered on the images' device: no host-to-device copy."""
        n, start = len(self), step * self.batch_size
        first, last = start // n, (start + self.batch_size - 1) // n
        orders = torch.cat([self._epoch_order(epoch) for epoch in range(first, last + 1)])
        return orders[start - first * n:start - first * n + self.batch_size]

    def batch(self, step: int, rank: int = 0, world_size: int = 1) -> torch.Tensor:
        """This process's share of the step's batch, float in [-1, 1]."""
        return self.take(self.global_indices(step), rank, world_size, "flips", step)

    def take(self, indices: torch.Tensor, rank: int, world_size: int, *flip_keys) -> torch.Tensor:
        """This process's share of the global batch of frames `indices`, float in [-1, 1], flipped by
        draws keyed by (seed, *flip_keys) on the frames' device."""
        device = self.images.device
        flips = shard(torch.rand(len(indices), 2, generator=generator(self.seed, *flip_keys, device=device),
                                 device=device) < 0.5, rank, world_size)
        images = self.normalization.forward(self.images[shard(indices.to(device), rank, world_size)])
        if self.hflip:
            images = torch.where(flips[:, 0, None, None, None], images.flip(3), images)
        if self.vflip:
            images = torch.where(flips[:, 1, None, None, None], images.flip(2), images)
        return images


    def batch_labels(self, step: int, rank: int = 0, world_size: int = 1) -> torch.Tensor:
        """The encoded labels of this process's share of the step's batch (flips leave labels alone)."""
        return self.labels[shard(self.global_indices(step), rank, world_size)]


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
    array = np.array(image, dtype=np.uint8)  # a copy: PIL's buffer is read-only
    return torch.from_numpy(array[None] if channels == 1 else array.transpose(2, 0, 1).copy())
