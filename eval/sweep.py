"""One label swept across its range: a grid of frames, each column one value of the label.

    python eval/sweep.py --ckpt CKPT --sweep energy=1:5:6 --label field=0.5,type=tracks --rows 3 --out sweep.png
    python eval/sweep.py --builtin particles-cond --resolution 64 --sweep energy=1:5:6 --label type=shower --out e.png

With a conditional checkpoint each row is one latent (sample i of --seed) generated at every value of the
swept label, the other labels held at --label (or at sample i's drawn ones). For a checkpoint trained on
`builtin:particles-cond` each generated row has beneath it a built-in frame (frame i of the set's seed)
rendered afresh at the same values: what the generator should show. With --builtin, rendered frames
alone. Values outside the training range are allowed with one warning.
"""

import os
import sys

if __package__ in (None, ""):
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse

import numpy as np
import torch

from training.checkpoint import CheckpointError
from training.images import make_grid, save_png, to_uint8


def parse_sweep(text: str) -> tuple[str, np.ndarray]:
    """'energy=1:5:6' -> ('energy', 6 values from 1 to 5)."""
    name, _, spec = text.partition("=")
    try:
        low, high, count = spec.split(":")
        values = np.linspace(float(low), float(high), int(count))
    except ValueError:
        raise ValueError(f"--sweep {text!r}: expected name=low:high:count, e.g. energy=1:5:6") from None
    if len(values) < 2:
        raise ValueError(f"--sweep {text!r}: expected at least 2 values")
    return name, values


def rendered_rows(seed: int, rows: int, resolution: int, name: str, values: np.ndarray, fixed: dict) -> torch.Tensor:
    """builtin:particles-cond frames 0..rows-1 of `seed` rendered at every value: uint8 [rows * len(values), 1, R, R]."""
    from training import particles
    keyword = {"energy": "energy", "field": "field", "type": "kind"}
    if name not in keyword or any(k not in keyword for k in fixed):
        raise ValueError("builtin:particles-cond has the labels energy, field and type")
    frames = [particles.render_conditional_frame(seed, i, resolution, **{keyword[k]: v for k, v in fixed.items()},
                                                 **{keyword[name]: value})
              for i in range(rows) for value in values]
    return torch.from_numpy(np.stack(frames))[:, None]


def generated_rows(checkpoint: dict, seed: int, rows: int, name: str, values: np.ndarray, fixed: dict) -> torch.Tensor:
    """Samples 0..rows-1 of the checkpoint's generator at every value: uint8 [rows * len(values), C, R, R]."""
    import nets
    from training.labels import LabelEncoding, labels_for_indices, warn_outside_range
    encoding = LabelEncoding.from_config(checkpoint["config"].get("data", {}))
    if not encoding.c_dim:
        raise ValueError("--ckpt: this checkpoint's model was trained without labels")
    if name not in encoding.names:
        raise ValueError(f"--sweep: {name} is not a label of this model ({', '.join(encoding.names)})")
    drawn = encoding.decode(labels_for_indices(checkpoint["labels"], torch.arange(rows), seed))
    table = {key: [] for key in encoding.names}
    for i in range(rows):
        for value in values:
            for key in encoding.names:
                table[key].append(value if key == name else fixed.get(key, drawn[key][i]))
    warn_outside_range(encoding, table)
    labels = encoding.encode(table)
    # Sample i (its latent and noise) in every column of row i: one sampler per column, whose label
    # row i is row i's label at that column's value.
    columns = [to_uint8(nets.load_sampler(checkpoint, "cpu", seed=seed, labels=labels[column::len(values)])(
        torch.arange(rows))) for column in range(len(values))]
    return torch.stack(columns, dim=1).flatten(0, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A grid of frames with one label swept across its range.")
    parser.add_argument("--ckpt", help="conditional training checkpoint")
    parser.add_argument("--builtin", choices=["particles-cond"], help="without --ckpt: rendered frames only")
    parser.add_argument("--resolution", type=int, default=64, help="with --builtin: frame size")
    parser.add_argument("--sweep", required=True, metavar="NAME=LOW:HIGH:COUNT")
    parser.add_argument("--label", default="", metavar="NAME=VALUE,...", help="the other labels, held fixed")
    parser.add_argument("--rows", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="a .png file")
    args = parser.parse_args(argv)
    if bool(args.ckpt) == bool(args.builtin):
        parser.error("give --ckpt or --builtin")
    try:
        name, values = parse_sweep(args.sweep)
        fixed = {}
        for item in filter(None, args.label.split(",")):
            key, _, value = item.partition("=")
            try:
                fixed[key] = float(value)
            except ValueError:
                fixed[key] = value
        grid_rows = []
        if args.ckpt:
            from training.checkpoint import load_checkpoint
            checkpoint = load_checkpoint(args.ckpt)
            generated = generated_rows(checkpoint, args.seed, args.rows, name, values, fixed)
            data = checkpoint["config"]["data"]
            rendered = None
            if data["path"].startswith("builtin:particles-cond"):
                from training.data import parse_builtin
                builtin_seed = parse_builtin(data["path"])[1]["seed"]
                rendered = rendered_rows(builtin_seed, args.rows, data["resolution"], name, values, fixed)
            for i in range(args.rows):
                grid_rows.append(generated[i * len(values):(i + 1) * len(values)])
                if rendered is not None:  # what the generator should show, beneath
                    grid_rows.append(rendered[i * len(values):(i + 1) * len(values)].expand(
                        -1, generated.shape[1], -1, -1))
        else:
            rendered = rendered_rows(args.seed, args.rows, args.resolution, name, values, fixed)
            grid_rows = [rendered[i * len(values):(i + 1) * len(values)] for i in range(args.rows)]
    except (ValueError, OSError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    save_png(make_grid(torch.cat(grid_rows), columns=len(values)), args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
