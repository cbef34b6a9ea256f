"""Write samples of a checkpoint's generator as PNGs, or as one grid, or in the data's own units.

    python eval/generate.py --ckpt runs/x/checkpoints/best.pt --num 100 --out samples/ [--seed 0] [--truncation 0.7]
    python eval/generate.py --ckpt CKPT --num 64 --out grid.png --grid
    python eval/generate.py --ckpt CKPT --num 1000 --out samples.npy --format npy     # one float32 stack
    python eval/generate.py --ckpt CKPT --num 100 --out frames/ --format png16|tiff
    python eval/generate.py --ckpt SINGAN_CKPT --num 16 --out wide/ --size 250x500 [--start-scale 3]
    torchrun --nproc_per_node K eval/generate.py ...    # each process writes every K-th image

Sample i is a function of (seed, i) alone (`nets.load_sampler`), so a file
`000042.png` is the same image whatever the batch size or process count, and
is bit-identical to what eval/fid.py scores for index 42 with the same seed:
both quantize with `training.images.to_uint8`. G_ema is used when the
checkpoint has one (`--no-ema` for G). Errors are one line, exit status 2.
Generating and writing show their progress on stderr.

`--format` (default png) chooses what a frame becomes:
- png:   8 bits as the networks see them (for 8-bit data sets: the data's own pixels);
- png16: 16-bit grayscale PNG of the frame in data units (the checkpoint's
         normalization inverted), rounded to whole counts; for data within 0..65535;
- tiff:  float32 TIFF in data units, nothing rounded;
- npy:   one float32 array in data units, [N, H, W] (grayscale) or [N, C, H, W],
         written by process 0 (`--out` a .npy file, or a folder for samples.npy).
"""

import os
import sys

if __package__ in (None, ""):
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse

import numpy as np
import torch
import torch.distributed as dist

from eval.fid import checkpoint_sampler, init_distributed
from training.images import make_grid, save_npy, save_png, save_tiff, to_uint8
from training.normalize import normalization_from_config
from training.progress import Progress

FORMATS = {"png": ".png", "png16": ".png", "tiff": ".tif", "npy": ".npy"}


def generate(sampler, indices: torch.Tensor, batch_size: int = 64, progress: str | None = None,
             convert=to_uint8) -> torch.Tensor:
    """Images [len(indices), C, H, W] on the CPU, sampled in batches and passed through `convert`
    (default: uint8 exactly as a saved PNG holds them); `progress`: a bar's label."""
    images = []
    with torch.no_grad(), Progress(progress, total=len(indices), unit="img") as bar:
        for start in range(0, len(indices), batch_size):
            images.append(convert(sampler(indices[start:start + batch_size])).cpu())
            bar.update(len(images[-1]))
    return torch.cat(images)


def generate_data_units(sampler, indices: torch.Tensor, normalization, batch_size: int = 64,
                        progress: str | None = None) -> torch.Tensor:
    """float32 frames [len(indices), C, H, W] in data units on the CPU: the normalization inverted."""
    return generate(sampler, indices, batch_size, progress, convert=normalization.inverse)


def frame_file(frame: torch.Tensor, image_format: str) -> np.ndarray:
    """One [C, H, W] frame in data units -> the array its file holds (HxW, or HxWxC for colour)."""
    array = frame.numpy()
    array = array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0)
    if image_format == "png16":
        return np.clip(np.round(array), 0, 65535).astype(np.uint16)
    return np.ascontiguousarray(array, dtype=np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write samples of a checkpoint's generator as PNGs.")
    parser.add_argument("--ckpt", required=True, help="training checkpoint (.pt)")
    parser.add_argument("--num", type=int, required=True, help="number of images")
    parser.add_argument("--out", required=True, help="output folder (with --grid: a .png file or a folder)")
    parser.add_argument("--seed", type=int, default=0, help="sample i depends on (seed, i) only")
    parser.add_argument("--truncation", type=float, default=1.0, help="truncation psi (StyleGAN2; 1 = none)")
    parser.add_argument("--format", choices=list(FORMATS), default="png",
                        help="png (8 bits), png16 or tiff (data units, one file per frame), npy (one stack)")
    parser.add_argument("--grid", action="store_true", help="write one grid PNG instead of one file per image")
    parser.add_argument("--columns", type=int, help="with --grid: images per row (default: about square)")
    parser.add_argument("--no-ema", action="store_true", help="sample G, not G_ema")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--size", metavar="HxW", help="SinGAN: output size, any aspect ratio (default: training size)")
    parser.add_argument("--start-scale", type=int, default=0, metavar="N",
                        help="SinGAN: keep the real image's structure from the N coarsest scales, sample the rest")
    args = parser.parse_args(argv)
    if args.num < 1 or args.batch_size < 1:
        parser.error("--num and --batch-size must be positive")
    if args.grid and args.format != "png":
        parser.error("--grid writes one 8-bit PNG; leave out --format")

    device, joined = init_distributed()
    try:
        return _write_samples(args, device)
    finally:
        if joined:
            dist.destroy_process_group()


def _write_samples(args, device: torch.device) -> int:
    from training.checkpoint import CheckpointError
    from training.config import ConfigError

    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    singan_options = {k: v for k, v in (("size", args.size), ("start_scale", args.start_scale)) if v}
    try:
        checkpoint, sampler = checkpoint_sampler(args.ckpt, device, seed=args.seed, truncation=args.truncation,
                                                 use_ema=not args.no_ema, **singan_options)
        normalization = normalization_from_config(checkpoint["config"].get("data", {}))
        if args.format == "png16" and (normalization.low < 0 or normalization.high > 65535):
            raise CheckpointError(f"--format png16 holds 0..65535; this data set spans {normalization.low:g}.."
                                  f"{normalization.high:g}; use --format tiff or npy")
        if args.format == "png16" and sampler.channels != 1:
            raise CheckpointError("--format png16 writes grayscale frames; use --format tiff or npy for colour")
    except (CheckpointError, ConfigError) as error:
        if rank == 0:
            print(f"error: {error}", file=sys.stderr)
        return 2
    except TypeError:  # another model's sampler takes no SinGAN options
        if not singan_options:
            raise
        if rank == 0:
            print("error: --size and --start-scale apply to SinGAN checkpoints only", file=sys.stderr)
        return 2

    if args.grid:
        if rank == 0:
            path = args.out if args.out.lower().endswith(".png") else os.path.join(args.out, "grid.png")
            images = generate(sampler, torch.arange(args.num), args.batch_size, progress="generate")
            save_png(make_grid(images, args.columns), path)
            print(f"wrote {path}")
        return 0
    if args.format == "npy":
        if rank == 0:
            path = args.out if args.out.lower().endswith(".npy") else os.path.join(args.out, "samples.npy")
            frames = generate_data_units(sampler, torch.arange(args.num), normalization, args.batch_size,
                                         progress="generate").numpy()
            save_npy(frames[:, 0] if frames.shape[1] == 1 else frames, path)
            print(f"wrote {args.num} frames in data units to {path}")
        return 0
    os.makedirs(args.out, exist_ok=True)
    indices = torch.arange(rank, args.num, world)
    share = f" (process 0 of {world})" if world > 1 else ""  # the bars show process 0's share
    if args.format == "png":
        frames = generate(sampler, indices, args.batch_size, progress="generate" + share)

        def save(frame, path):
            save_png(make_grid(frame[None], columns=1), path)
    else:
        frames = generate_data_units(sampler, indices, normalization, args.batch_size, progress="generate" + share)
        save_file = save_png if args.format == "png16" else save_tiff

        def save(frame, path):
            save_file(frame_file(frame, args.format), path)
    with Progress(f"write {args.format}" + share, total=len(indices), unit="img") as bar:
        for index, frame in zip(indices.tolist(), frames):
            save(frame, os.path.join(args.out, f"{index:06d}{FORMATS[args.format]}"))
            bar.update()
    if world > 1:
        dist.barrier()  # every file is written before anyone reports
    if rank == 0:
        print(f"wrote {args.num} images to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
