"""FID and KID of generated images against real ones: library and command line.

    python eval/fid.py --ckpt runs/x/checkpoints/best.pt [--data PATH] [--num-samples N] [--json]
    python eval/fid.py --real DIR --fake DIR [--json]
    torchrun --nproc_per_node K eval/fid.py ...      # the same number, the work split K ways

Features are pytorch-fid's InceptionV3 pool3 (eval/inception.py), so FID
matches pytorch-fid's. Generated images are quantized with
`training.images.to_uint8`, exactly as a saved PNG, so scoring in memory
equals scoring the saved files. KID (unbiased, cubic kernel, mean and std
over subsets) stands beside FID because FID is strongly biased at a few
hundred images. Precision and recall (k-nearest-neighbour manifolds,
Kynkäänniemi et al. 2019, k=3; eval/precision_recall.py) come from the same
features: precision is the share of samples that look like real images,
recall the share of real images the samples cover. Real features are cached
in an npz keyed by the images' contents and the feature extractor (also a
valid pytorch-fid stats file: it holds `mu` and `sigma`); a repeated
evaluation skips the real images.

Under torch.distributed (torchrun, or Accelerate inside training) each
process extracts every K-th batch; features are gathered back into the global
order, so each image counts once and the statistics are the one-process ones.
Process 0 finishes the math and every process returns its result.

`--json` prints one JSON object on the last line:
{"fid": ..., "kid": ..., "kid_std": ..., "precision": ..., "recall": ..., "num_real": ...,
"num_fake": ...} (without precision/recall under --no-precision-recall).
Errors (missing weights, checkpoint, data; fewer than 2 images) are one line
on stderr and exit status 2. Each phase (real features, generated or fake
features) shows its progress on stderr (training/progress.py).
"""

import os
import sys

if __package__ in (None, ""):
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse
import hashlib
import io
import json
import math
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image

from eval.inception import feature_extractor
from eval.metrics import (feature_statistics, frechet_distance, frechet_distance_features,
                          kernel_inception_distance)
from eval.precision_recall import DEFAULT_K, precision_recall as knn_precision_recall
from training.images import to_uint8
from training.progress import Progress

__all__ = ["Evaluator", "ImageFiles", "compute_features", "default_cache_dir", "feature_extractor",
           "feature_statistics", "frechet_distance", "frechet_distance_features", "kernel_inception_distance",
           "reference_features", "scores"]

CACHE_VERSION = 1


class EvalError(RuntimeError):
    """A user-facing problem (no images, too few images); the message is one line."""


# ---------------------------------------------------------------------------
# Sources of uint8 images, addressed by global index range

class ImageFiles:
    """Image files at their own size, decoded per batch like pytorch-fid does.

    `path` is a folder (recursive), a .zip or one image, listed in the same
    order as training data. Each image becomes RGB through PIL's `convert`
    (8-bit grayscale stays one channel and is replicated on the device: the
    same pixels); high-bit-depth scientific images are scaled to 8 bits, each
    by its own range (`training.data.to_8bit`). Unreadable files are skipped
    with a warning.
    """

    def __init__(self, path: str):
        from training.data import DataError, image_sources
        if not os.path.exists(path):
            raise EvalError(f"{path} does not exist; give a folder, a .zip or an image")
        try:
            self.sources = image_sources(path)
        except DataError as error:
            raise EvalError(str(error).removeprefix("data.path: ")) from None
        self.path = path

    def __len__(self) -> int:
        return len(self.sources)

    def digest(self) -> str:
        """SHA-256 over every file's bytes, in order: the data set's contents."""
        hasher = hashlib.sha256(f"files:{len(self.sources)}".encode())
        for _, read in self.sources:
            data = read()
            hasher.update(len(data).to_bytes(8, "little"))
            hasher.update(data)
        return hasher.hexdigest()

    def decode(self, index: int) -> np.ndarray | None:
        from training.data import to_8bit
        name, read = self.sources[index]
        try:
            with Image.open(io.BytesIO(read())) as image:
                image.load()
                image = to_8bit(image)
                image = image if image.mode == "L" else image.convert("RGB")
                array = np.asarray(image, dtype=np.uint8)
        except Exception as error:  # any decoder failure means the same: skip this file
            warnings.warn(f"skipping unreadable image {name}: {type(error).__name__}: {error}", stacklevel=2)
            return None
        return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


class _Batches:
    """Uniform access to the three kinds of source, batch by batch.

    Yields a uint8 tensor [B, C, H, W] per batch or, for files of differing
    sizes, a list of [C, H, W] tensors; unreadable files leave gaps (fewer
    images). Files are decoded by a thread pool one batch ahead of the
    network; samplers run in the calling thread (their grad and autocast modes
    are thread-local) without autograd.
    """

    def __init__(self, source, num_images: int | None, batch_size: int, pin: bool, threads: int):
        self.source, self.batch_size, self.pin, self.threads = source, batch_size, pin, threads
        if isinstance(source, torch.Tensor):
            if source.dtype != torch.uint8 or source.ndim != 4:
                raise ValueError(f"images must be uint8 [N, C, H, W], got {source.dtype} {tuple(source.shape)}")
            self.count = len(source) if num_images is None else min(num_images, len(source))
        elif isinstance(source, ImageFiles):
            self.count = len(source) if num_images is None else min(num_images, len(source))
        elif callable(source):
            if num_images is None:
                raise ValueError("a sampler needs num_images")
            self.count = num_images
        else:
            raise TypeError(f"cannot take images from {type(source).__name__}")

    def __len__(self) -> int:
        return math.ceil(self.count / self.batch_size)

    def _range(self, batch: int) -> range:
        return range(batch * self.batch_size, min(self.count, (batch + 1) * self.batch_size))

    def iterate(self, batches: list[int]):
        if isinstance(self.source, ImageFiles):
            yield from self._decoded(batches)
            return
        for batch in batches:
            indices = self._range(batch)
            if isinstance(self.source, torch.Tensor):
                yield self.source[indices.start:indices.stop]
            else:
                with torch.no_grad():
                    yield to_uint8(self.source(torch.arange(indices.start, indices.stop)))

    def _decoded(self, batches: list[int]):
        with ThreadPoolExecutor(max_workers=self.threads) as decoders, ThreadPoolExecutor(max_workers=1) as ahead:
            def load(batch: int):
                arrays = [a for a in decoders.map(self.source.decode, self._range(batch)) if a is not None]
                if arrays and all(a.shape == arrays[0].shape for a in arrays):
                    stacked = torch.from_numpy(np.stack(arrays))
                    return stacked.pin_memory() if self.pin else stacked
                return [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]

            pending = ahead.submit(load, batches[0]) if batches else None
            for i in range(len(batches)):
                images = pending.result()
                pending = ahead.submit(load, batches[i + 1]) if i + 1 < len(batches) else None
                yield images


def _extract(extractor: Callable, images) -> torch.Tensor:
    """Features of one batch; a ragged list is run as one stack per image size, then reordered."""
    if isinstance(images, torch.Tensor):
        return extractor(images).float()
    if not images:
        return None
    groups: dict[tuple, list[int]] = {}
    for position, image in enumerate(images):
        groups.setdefault(tuple(image.shape), []).append(position)
    outputs = [None] * len(images)
    for positions in groups.values():
        for position, row in zip(positions, extractor(torch.stack([images[p] for p in positions])).float()):
            outputs[position] = row
    return torch.stack(outputs)


# ---------------------------------------------------------------------------
# Distributed helpers (torch.distributed directly: torchrun and Accelerate both initialize it)

def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _broadcast_object(value, rank: int, world: int):
    if world == 1:
        return value
    box = [value if rank == 0 else None]
    dist.broadcast_object_list(box, src=0, device=_comm_device())
    return box[0]


def _all_agree(flag: bool, world: int) -> bool:
    """True only when `flag` holds on every process (so all take the same branch)."""
    if world == 1:
        return flag
    value = torch.tensor([int(flag)], device=_comm_device())
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def _gather_in_order(local: list[torch.Tensor], counts: torch.Tensor, dims: int, world: int) -> torch.Tensor:
    """Every process's batch features, reassembled in global batch order (batch b from rank b % K)."""
    device = _comm_device()
    counts = counts.to(device)
    dist.all_reduce(counts)  # each batch's count is nonzero on exactly one process
    counts = counts.cpu()
    rows = [int(counts[r::world].sum()) for r in range(world)]
    padded = torch.zeros(max(rows), dims, device=device)
    if local:
        mine = torch.cat(local).to(device)
        padded[:len(mine)] = mine
    gathered = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded)
    offsets, pieces = [0] * world, []
    for batch, count in enumerate(counts.tolist()):
        owner = batch % world
        pieces.append(gathered[owner][offsets[owner]:offsets[owner] + count])
        offsets[owner] += count
    return torch.cat(pieces).cpu() if pieces else torch.zeros(0, dims)


# ---------------------------------------------------------------------------
# Features

def compute_features(source, extractor: Callable | None = None, *, num_images: int | None = None,
                     batch_size: int = 64, device=None, threads: int = 4, progress: str | None = None) -> np.ndarray:
    """Features [N, D] (float32) of every image of `source`, the same array on every process.

    Args:
        source:     uint8 tensor [N, C, H, W]; an `ImageFiles`; a sampler (LongTensor indices ->
                    float images in [-1, 1], quantized with `to_uint8`); or any iterable of uint8
                    batches (not sharded: each process extracts all of it)
        extractor:  uint8 batch -> [B, D] features with a `dims` attribute (default: Inception pool3)
        num_images: how many to take (required for a sampler; a cap otherwise)
        batch_size: images per extractor call; batch b runs on process b % world_size
        device:     for the default extractor
        threads:    file-decoding threads
        progress:   label of a progress bar on process 0 (training.progress), e.g. "real features"
    """
    extractor = extractor or feature_extractor(device or "cpu")
    extractor_device = getattr(extractor, "device", torch.device("cpu"))
    rank, world = _world()
    if not isinstance(source, (torch.Tensor, ImageFiles)) and not callable(source):
        batches = []
        with Progress(progress, unit="img", enabled=rank == 0) as bar:
            for images in source:
                batches.append(_extract(extractor, images))
                bar.update(len(images))
        batches = [b for b in batches if b is not None]
        return torch.cat(batches).cpu().numpy() if batches else np.zeros((0, extractor.dims), np.float32)

    batches = _Batches(source, num_images, batch_size, pin=torch.device(extractor_device).type == "cuda",
                       threads=threads)
    mine = list(range(rank, len(batches), world))
    counts = torch.zeros(len(batches), dtype=torch.long)
    local = []
    with Progress(progress, total=batches.count, unit="img", enabled=rank == 0) as bar:
        for batch, images in zip(mine, batches.iterate(mine)):
            with torch.no_grad():
                features = _extract(extractor, images)
            if features is not None:
                counts[batch] = len(features)
                local.append(features)
            # The other processes work on the batches beside this one meanwhile.
            bar.set(min(batches.count, (batch + world) * batch_size))
    if world > 1:
        features = _gather_in_order(local, counts, extractor.dims, world)
    else:
        features = torch.cat(local).cpu() if local else torch.zeros(0, extractor.dims)
    return features.numpy()


# ---------------------------------------------------------------------------
# Cached reference features

def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "smallgan", "fid")


def images_digest(images: torch.Tensor) -> str:
    """SHA-256 of a uint8 image tensor's shape and pixels."""
    images = images.detach().cpu().contiguous()
    hasher = hashlib.sha256(f"tensor:{tuple(images.shape)}".encode())
    hasher.update(images.numpy().tobytes())
    return hasher.hexdigest()


def reference_cache_path(cache_dir: str, content_digest: str, description: dict) -> str:
    """npz path keyed by the contents and everything that shapes the features."""
    key = json.dumps({"content": content_digest, **description, "version": CACHE_VERSION}, sort_keys=True)
    return os.path.join(cache_dir, f"ref-{hashlib.sha256(key.encode()).hexdigest()[:32]}.npz")


def _read_cache(path: str) -> np.ndarray | None:
    try:
        with np.load(path) as data:
            return data["features"]
    except Exception:  # absent, partial or foreign: recompute
        return None


def _write_cache(path: str, features: np.ndarray, description: dict) -> None:
    mu, sigma = feature_statistics(features)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".npz")
    os.close(handle)
    try:
        np.savez(tmp, mu=mu, sigma=sigma, features=features, description=json.dumps(description))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; the cache is meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def reference_features(source, extractor: Callable, *, content_digest: str, description: dict,
                       cache_dir: str | None, batch_size: int = 64) -> tuple[np.ndarray, bool]:
    """Features of the real images, from the cache when every process finds them there.

    Returns (features, cache hit). Process 0 writes the cache after a miss.
    """
    rank, world = _world()
    description = {"extractor": getattr(extractor, "name", type(extractor).__name__), **description}
    path = reference_cache_path(cache_dir, content_digest, description) if cache_dir is not None else None
    cached = _read_cache(path) if path else None
    if _all_agree(cached is not None, world):
        return cached, True
    features = compute_features(source, extractor, batch_size=batch_size, progress="real features")
    if path and rank == 0 and len(features) >= 2:
        try:
            _write_cache(path, features, description)
        except OSError as error:
            warnings.warn(f"could not write FID reference cache {path}: {error}", stacklevel=2)
    return features, False


# ---------------------------------------------------------------------------
# Scores

def scores(real: np.ndarray, fake: np.ndarray, *, kid_subsets: int = 100, kid_subset_size: int = 1000,
           precision_recall: bool = True, device=None) -> dict:
    """{"fid", "kid", "kid_std", "precision", "recall", "num_real", "num_fake"} of two feature sets.

    precision/recall (k=3 nearest neighbours) only when `precision_recall`.
    """
    for name, features in (("real", real), ("generated", fake)):
        if len(features) < 2:
            raise EvalError(f"FID needs at least 2 {name} images, got {len(features)}")
        if precision_recall and len(features) <= DEFAULT_K:
            raise EvalError(f"precision/recall (k={DEFAULT_K}) need at least {DEFAULT_K + 1} {name} images, got "
                            f"{len(features)}; --no-precision-recall or eval.precision_recall=false skips them")
    fid = frechet_distance_features(real, fake, device=device)
    kid, kid_std = kernel_inception_distance(real, fake, num_subsets=kid_subsets, subset_size=kid_subset_size,
                                             device=device)
    result = {"fid": fid, "kid": kid, "kid_std": kid_std}
    if precision_recall:
        result["precision"], result["recall"] = knn_precision_recall(real, fake, DEFAULT_K, device=device)
    return {**result, "num_real": len(real), "num_fake": len(fake)}


def _finish_on_main(real: np.ndarray, fake: np.ndarray, stats=None, generated: torch.Tensor | None = None,
                    physics=None, **options) -> dict:
    """Process 0 computes the scores (and `stats` and `physics` of the `generated` images, under "stats" and
    "physics"); every process returns them (or raises the same error)."""
    rank, world = _world()
    result = None
    if rank == 0:
        try:
            result = scores(real, fake, **options)
            if stats is not None:
                result["stats"] = stats.report_generated(generated)
            if physics is not None:
                result["physics"] = physics.report_generated(generated)
        except Exception as error:  # raised on every process below, instead of a hang in broadcast
            if world == 1:
                raise
            result = error
    result = _broadcast_object(result, rank, world)
    if isinstance(result, Exception):
        raise result
    return result


class _RecordingSampler:
    """A sampler that keeps this process's outputs (CPU float), so eval/stats.py can see every generated image."""

    def __init__(self, sampler: Callable, batch_size: int):
        self.sampler, self.batch_size = sampler, batch_size
        self.batches: list[tuple[int, torch.Tensor]] = []  # (global batch number, images)

    def __call__(self, indices: torch.Tensor) -> torch.Tensor:
        images = self.sampler(indices)
        self.batches.append((int(indices[0]) // self.batch_size, images.detach().float().cpu()))
        return images

    def gather(self, num_images: int, image_shape: tuple) -> torch.Tensor:
        """Every process's images in global order [num_images, *image_shape], on every process."""
        _, world = _world()
        local = [images.flatten(1) for _, images in sorted(self.batches, key=lambda b: b[0])]
        if world == 1:
            return torch.cat(local).view(-1, *image_shape)
        counts = torch.zeros(math.ceil(num_images / self.batch_size), dtype=torch.long)
        for batch, images in self.batches:
            counts[batch] = len(images)
        return _gather_in_order(local, counts, math.prod(image_shape), world).view(-1, *image_shape)


class Evaluator:
    """FID/KID (and precision/recall) of a generator against the training set, for the training loop and the CLI.

    Args:
        real_images:     uint8 [N, C, H, W], the training set (the same on every process)
        device:          where Inception and the score math run
        batch_size:      images per Inception call
        kid_subsets:     number of KID subsets
        kid_subset_size: KID subset size (capped by the number of images)
        precision_recall: also precision and recall (k=3), from the same features
        cache_dir:       reference-feature cache (default `default_cache_dir()`)
        cache:           False: neither read nor write the cache
        extractor:       feature extractor (default Inception pool3); tests pass small ones
        stats:           an `eval.stats.FrameStatistics` of the real frames: the result also holds
                         "stats", the physics statistics of the same generated images in data units
        physics:         an `eval.physics.PhysicsTests` of the real frames: the result also holds
                         "physics", the separation powers and FPD/KPD of the same generated images

    Every process must call `evaluate` (it shards the work); all get the same dict.
    """

    def __init__(self, real_images: torch.Tensor, device: torch.device, *, batch_size: int = 64,
                 kid_subsets: int = 100, kid_subset_size: int = 1000, precision_recall: bool = True,
                 cache_dir: str | None = None, cache: bool = True, extractor: Callable | None = None,
                 stats=None, physics=None):
        if real_images.dtype != torch.uint8 or real_images.ndim != 4:
            raise ValueError(f"real_images must be uint8 [N, C, H, W], got {real_images.dtype} "
                             f"{tuple(real_images.shape)}")
        self.real_images = real_images
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.options = {"kid_subsets": kid_subsets, "kid_subset_size": kid_subset_size,
                        "precision_recall": precision_recall}
        self.cache_dir = (cache_dir or default_cache_dir()) if cache else None
        self._extractor = extractor
        self._real_features = None
        self.cache_hit = None
        self.stats = stats
        self.physics = physics

    @property
    def extractor(self) -> Callable:
        if self._extractor is None:
            self._extractor = feature_extractor(self.device)
        return self._extractor

    @property
    def real_features(self) -> np.ndarray:
        """[N, D] features of the real images (computed sharded or read from the cache once)."""
        if self._real_features is None:
            n, c, h, w = self.real_images.shape
            self._real_features, self.cache_hit = reference_features(
                self.real_images, self.extractor, content_digest=images_digest(self.real_images),
                description={"kind": "tensor", "num_images": n, "channels": c, "resolution": [h, w]},
                cache_dir=self.cache_dir, batch_size=self.batch_size)
        return self._real_features

    def fake_features(self, sampler: Callable, num_samples: int) -> np.ndarray:
        return compute_features(sampler, self.extractor, num_images=num_samples, batch_size=self.batch_size,
                                progress="generated features")

    def evaluate(self, sampler: Callable, num_samples: int) -> dict:
        """`scores` of `num_samples` samples of `sampler`: {"fid", "kid", "kid_std", ["precision", "recall",]
        "num_real", "num_fake", ["stats"], ["physics"]}."""
        if num_samples < 2:
            raise ValueError(f"num_samples must be at least 2, got {num_samples}")
        real = self.real_features
        data_units = self.stats or self.physics  # what needs the generated images themselves
        recorder = _RecordingSampler(sampler, self.batch_size) if data_units is not None else None
        fake = self.fake_features(recorder or sampler, num_samples)
        generated = recorder.gather(num_samples, data_units.frame_shape) if recorder else None
        return _finish_on_main(real, fake, stats=self.stats, generated=generated, physics=self.physics,
                               device=self.device, **self.options)


# ---------------------------------------------------------------------------
# Command line

def init_distributed(device: str | None = None) -> tuple[torch.device, bool]:
    """This process's device, joining torchrun's process group when launched by it.

    `device` "cpu" keeps a CUDA machine's processes on the CPU (gloo); the
    default is this process's GPU when there is one. Returns (device, joined):
    joined is True when this call created the group (the caller then destroys
    it); a group that already exists is used as is.
    """
    cuda = torch.cuda.is_available() and device != "cpu"
    joined = False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo")
        joined = True
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    return device, joined


def checkpoint_sampler(path: str, device, **options) -> tuple[dict, Callable]:
    """(checkpoint, sampler) of a training checkpoint; CheckpointError (one line) when unusable."""
    import nets
    from training.checkpoint import CheckpointError, load_checkpoint

    checkpoint = load_checkpoint(path)
    try:
        return checkpoint, nets.load_sampler(checkpoint, device, **options)
    except (ValueError, KeyError, RuntimeError) as error:  # unknown model, mismatched state dicts
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"cannot rebuild the generator of {path}: {reason}") from None


def checkpoint_training_frames(checkpoint: dict, ckpt_path: str, data: str | None = None) -> tuple[str, torch.Tensor]:
    """(path, frames in data units) of the data a checkpoint was trained on, or of `data` at its
    resolution/channels. A band left out of training (data.label_exclude) stays out, as in training's own
    evaluation: the generator draws its labels without it."""
    from training.data import load_images

    try:
        config = checkpoint["config"]["data"]
        path, resolution, channels = data or config["path"], config["resolution"], config["channels"]
    except (KeyError, TypeError):
        raise EvalError(f"{ckpt_path}: the checkpoint's config has no data.path/resolution/channels") from None
    if data is None and config.get("label_exclude"):
        from eval.conditional import conditional_encoding, training_set
        return path, training_set(config, conditional_encoding(checkpoint, ckpt_path, "data.label_exclude"))[0]
    return path, load_images(path, resolution, channels)


def checkpoint_real_images(checkpoint: dict, ckpt_path: str, data: str | None = None) -> tuple[str, torch.Tensor]:
    """`checkpoint_training_frames` as uint8: frames deeper than 8 bits are seen as the networks saw them,
    through the checkpoint's normalization."""
    from training.normalize import normalization_from_config

    path, frames = checkpoint_training_frames(checkpoint, ckpt_path, data)
    return path, normalization_from_config(checkpoint["config"]["data"]).to_uint8(frames)


def _folder_scores(args, device: torch.device) -> dict:
    real_files, fake_files = ImageFiles(args.real), ImageFiles(args.fake)
    for name, files in (("--real", real_files), ("--fake", fake_files)):
        if len(files) < 2:
            raise EvalError(f"{name} {files.path}: {len(files)} image file(s); FID needs at least 2")
    extractor = feature_extractor(device)
    cache_dir = None if args.no_cache else (args.cache_dir or default_cache_dir())
    real, _ = reference_features(real_files, extractor, content_digest=real_files.digest() if cache_dir else "",
                                 description={"kind": "files"}, cache_dir=cache_dir, batch_size=args.batch_size)
    fake = compute_features(fake_files, extractor, batch_size=args.batch_size, progress="fake features")
    return _finish_on_main(real, fake, device=device, kid_subsets=args.kid_subsets,
                           kid_subset_size=args.kid_subset_size, precision_recall=not args.no_precision_recall)


def _checkpoint_scores(args, device: torch.device) -> dict:
    checkpoint, sampler = checkpoint_sampler(args.ckpt, device, seed=args.seed, truncation=args.truncation,
                                             use_ema=not args.no_ema)
    if checkpoint["model"] == "singan":  # one training image: FID has no distribution to compare with
        raise EvalError(f"{args.ckpt} is a SinGAN checkpoint; score it with python eval/sifid.py --ckpt {args.ckpt}")
    path, real_images = checkpoint_real_images(checkpoint, args.ckpt, args.data)
    num_samples = args.num_samples if args.num_samples is not None else \
        checkpoint["config"].get("eval", {}).get("num_samples", 5000)
    if len(real_images) < 2:
        raise EvalError(f"{path}: {len(real_images)} image(s); FID needs at least 2")
    if num_samples < 2:
        raise EvalError(f"--num-samples {num_samples}: FID needs at least 2")
    evaluator = Evaluator(real_images, device, batch_size=args.batch_size, kid_subsets=args.kid_subsets,
                          kid_subset_size=args.kid_subset_size, precision_recall=not args.no_precision_recall,
                          cache_dir=args.cache_dir, cache=not args.no_cache)
    return evaluator.evaluate(sampler, num_samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="FID and KID of a checkpoint's generator or of two folders.")
    source = parser.add_argument_group("what to compare (either --ckpt, or --real and --fake)")
    source.add_argument("--ckpt", help="checkpoint; scores G_ema (G when absent) against its training data")
    source.add_argument("--data", help="with --ckpt: real images instead of the checkpoint's data.path")
    source.add_argument("--real", help="folder (recursive), .zip or image of real images")
    source.add_argument("--fake", help="folder (recursive), .zip or image of generated images")
    parser.add_argument("--num-samples", type=int, help="with --ckpt: generated images (default: the "
                        "checkpoint's eval.num_samples, else 5000)")
    parser.add_argument("--seed", type=int, default=0, help="with --ckpt: sample i depends on (seed, i)")
    parser.add_argument("--truncation", type=float, default=1.0, help="with --ckpt: truncation psi (StyleGAN2)")
    parser.add_argument("--no-ema", action="store_true", help="with --ckpt: score G, not G_ema")
    parser.add_argument("--batch-size", type=int, default=64, help="images per Inception call")
    parser.add_argument("--device", choices=["cuda", "cpu"], help="default: cuda when available")
    parser.add_argument("--kid-subsets", type=int, default=100)
    parser.add_argument("--kid-subset-size", type=int, default=1000)
    parser.add_argument("--no-precision-recall", action="store_true", help="skip precision and recall (k=3)")
    parser.add_argument("--cache-dir", help=f"reference-feature cache (default {default_cache_dir()})")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    parser.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    args = parser.parse_args(argv)
    if bool(args.ckpt) == bool(args.real or args.fake) or (not args.ckpt and not (args.real and args.fake)):
        parser.error("give either --ckpt, or both --real and --fake")
    if not args.ckpt and (args.data or args.num_samples):
        parser.error("--data and --num-samples go with --ckpt")
    if args.batch_size < 1:
        parser.error("--batch-size must be positive")

    from eval.inception_weights import WeightsError
    from training.checkpoint import CheckpointError
    from training.data import DataError

    device, joined = init_distributed(args.device)
    rank, _ = _world()
    try:
        result = _checkpoint_scores(args, device) if args.ckpt else _folder_scores(args, device)
    except (EvalError, WeightsError, CheckpointError, DataError) as error:
        if rank == 0:
            print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        if joined:
            dist.destroy_process_group()
    if rank == 0:
        if args.json:
            print(json.dumps(result))
        else:
            quality = f"precision {result['precision']:.4f}  recall {result['recall']:.4f}  " \
                if "precision" in result else ""
            print(f"FID {result['fid']:.4f}  KID {result['kid']:.6f} ± {result['kid_std']:.6f}  {quality}"
                  f"({result['num_real']} real, {result['num_fake']} generated)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
