"""Write samples of a checkpoint's generator as PNGs, or as one grid, or in the data's own units.

    python eval/generate.py --ckpt runs/x/checkpoints/best.pt --num 100 --out samples/ [--seed 0] [--truncation 0.7]
    python eval/generate.py --ckpt CKPT --num 64 --out grid.png --grid
    python eval/generate.py --ckpt CKPT --num 1000 --out samples.npy --format npy     # one float32 stack
    python eval/generate.py --ckpt CKPT --num 100 --out frames/ --format png16|tiff
    python eval/generate.py --ckpt SINGAN_CKPT --num 16 --out wide/ --size 250x500 [--start-scale 3]
    torchrun --nproc_per_node K eval/generate.py ...    # each process writes every K-th image

A conditional checkpoint (trained with labels, docs/conditional.md) generates at a setting:

    python eval/generate.py --ckpt CKPT --num 100 --out e35/ --label energy=3.5,field=0.8
    python eval/generate.py --ckpt CKPT --num 100 --out showers/ --label type=shower
    python eval/generate.py --ckpt CKPT --num 300 --out set.h5 --format h5 --labels-from settings.csv
    python eval/generate.py --ckpt CKPT --num 1000 --out drawn/      # labels drawn from the training set's

Sample i's labels are drawn from the training set's label rows by (seed, i); `--label` sets some or all
of them for every frame, `--labels-from` sets them per frame (a CSV with a header naming labels, one
row per frame, the rows repeated when --num is larger). Labels outside the training range are allowed,
with one warning naming the range. The labels go beside the frames: `labels.csv` (file + one column per
label) in the output folder, `<name>_labels.csv` beside a .npy, or inside a .h5 file (`--format h5`:
dataset /frames in data units and one dataset /labels/<name> per label, readable back as training
data with data.path=set.h5:/frames data.labels=[set.h5:/labels/energy, ...]).

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
         written by process 0 (`--out` a .npy file, or a folder for samples.npy);
- h5:    the same stack as dataset /frames of an HDF5 file (`--out` a .h5 file, or a folder for
         samples.h5), with the labels of a conditional model beside it.
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
from training.images import make_grid, save_npy, save_png, save_tiff, to_uint8, write_atomically
from training.normalize import normalization_from_config
from training.progress import Progress

FORMATS = {"png": ".png", "png16": ".png", "tiff": ".tif", "npy": ".npy", "h5": ".h5"}


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


def label_values(checkpoint: dict, num: int, seed: int, label: str | None, labels_from: str | None) -> dict | None:
    """Each of `num` samples' labels {name: values} for a conditional checkpoint (None for an unconditional
    one): drawn from the training set's rows by (seed, i), then overridden by --labels-from and --label.
    ValueError (one line) for labels the checkpoint does not have."""
    from training.labels import (LabelEncoding, labels_for_indices, parse_label_arguments, read_csv_labels,
                                 warn_outside_range)

    encoding = LabelEncoding.from_config(checkpoint["config"].get("data", {}))
    if not encoding.c_dim:
        if label or labels_from:
            raise ValueError("--label/--labels-from: this checkpoint's model was trained without labels")
        return None
    values = encoding.decode(labels_for_indices(checkpoint["labels"], torch.arange(num), seed))
    if labels_from:
        rows = read_csv_labels(labels_from, None, count=None)
        for name, column in rows.items():
            if name not in encoding.names:
                raise ValueError(f"--labels-from {labels_from}: {name} is not a label of this model "
                                 f"({', '.join(encoding.names)})")
            values[name] = [column[i % len(column)] for i in range(num)]
    if label:
        for name, value in parse_label_arguments(label, encoding).items():
            values[name] = [value] * num
    warn_outside_range(encoding, values)
    encoding.encode(values)  # an unknown class is an error before anything is generated
    return values


def write_labels_csv(values: dict, files: list[str], path: str) -> None:
    """labels.csv: a `file` column and one column per label, atomically (readable back as data.labels)."""
    import csv
    import io
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["file", *values])
    for i, name in enumerate(files):
        writer.writerow([name, *(_cell(values[key][i]) for key in values)])

    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text.getvalue())
    write_atomically(path, write, ".csv")


def _cell(value) -> str:
    return repr(float(value)) if isinstance(value, float) or isinstance(value, np.floating) else str(value)


def save_h5(frames: np.ndarray, values: dict | None, path: str) -> None:
    """Frames as dataset /frames and each label as /labels/<name>, atomically."""
    import h5py

    def write(tmp):
        with h5py.File(tmp, "w") as f:
            f.create_dataset("frames", data=frames)
            for name, column in (values or {}).items():
                column = np.asarray(column)
                f.create_dataset(f"labels/{name}", data=column.astype(h5py.string_dtype()) if column.dtype.kind
                                 in "UO" else column)
    write_atomically(path, write, ".h5")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write samples of a checkpoint's generator as PNGs.")
    parser.add_argument("--ckpt", required=True, help="training checkpoint (.pt)")
    parser.add_argument("--num", type=int, required=True, help="number of images")
    parser.add_argument("--out", required=True, help="output folder (with --grid: a .png file or a folder)")
    parser.add_argument("--seed", type=int, default=0, help="sample i depends on (seed, i) only")
    parser.add_argument("--truncation", type=float, default=1.0, help="truncation psi (StyleGAN2; 1 = none)")
    parser.add_argument("--format", choices=list(FORMATS), default="png",
                        help="png (8 bits), png16 or tiff (data units, one file per frame), npy or h5 (one stack)")
    parser.add_argument("--label", metavar="NAME=VALUE,...",
                        help="conditional models: these labels for every frame, e.g. energy=3.5,field=0.8 or type=shower")
    parser.add_argument("--labels-from", metavar="CSV",
                        help="conditional models: a CSV with a header of label names and one row per frame")
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
        from training.checkpoint import load_checkpoint
        from training.data import DataError
        from training.labels import LabelEncoding
        checkpoint = load_checkpoint(args.ckpt)
        try:
            values = label_values(checkpoint, args.num, args.seed, args.label, args.labels_from)
        except (ValueError, DataError) as error:
            raise ConfigError(str(error)) from None
        labels = {} if values is None else {
            "labels": LabelEncoding.from_config(checkpoint["config"]["data"]).encode(values)}  # row i: sample i
        checkpoint, sampler = checkpoint_sampler(args.ckpt, device, seed=args.seed, truncation=args.truncation,
                                                 use_ema=not args.no_ema, **singan_options, **labels)
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
    if args.format in ("npy", "h5"):
        if rank == 0:
            extension = FORMATS[args.format]
            path = args.out if args.out.lower().endswith(extension) else os.path.join(args.out, "samples" + extension)
            frames = generate_data_units(sampler, torch.arange(args.num), normalization, args.batch_size,
                                         progress="generate").numpy()
            frames = frames[:, 0] if frames.shape[1] == 1 else frames
            if args.format == "h5":
                save_h5(frames, values, path)
            else:
                save_npy(frames, path)
                if values is not None:
                    write_labels_csv(values, [str(i) for i in range(args.num)], path[:-4] + "_labels.csv")
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
        if values is not None:
            write_labels_csv(values, [f"{i:06d}{FORMATS[args.format]}" for i in range(args.num)],
                             os.path.join(args.out, "labels.csv"))
        print(f"wrote {args.num} images to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
