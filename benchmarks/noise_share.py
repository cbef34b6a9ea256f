"""How much of a StyleGAN2 generator's output comes from its per-pixel noise inputs?

    python benchmarks/noise_share.py --ckpt runs/study-cpu32/stylegan2-reference/checkpoints/last.pt \
        [--num 256] [--grid noise_share.png]

StyleGAN2's noise inputs are meant for stochastic detail on top of what the latent decides (hair,
pores). On sparse detector frames a generator can instead make the hits themselves from noise, and
spatially independent noise makes scattered points, never a track. The same latents are rendered
with the sampler's per-sample noise and with none; the noise's share of the image variance,
var(with - without) / var(with), is near 0 when the latent draws the frame and near 1 when the noise
does. Prints one JSON object: kimg, each layer's learned noise strength and the share; `--grid`
writes 16 samples with noise beside the same 16 without.
"""

import os
import sys

if __package__ in (None, ""):
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse
import json

import numpy as np
import torch

from nets.stylegan2 import Generator, Sampler, sampler_from_checkpoint
from training.checkpoint import CheckpointError, load_checkpoint
from training.config import exit_with_error
from training.images import make_grid, save_png, to_uint8

GRID_SAMPLES = 16


def noise_share(G: Generator, num: int, seed: int = 0) -> tuple[float, torch.Tensor, torch.Tensor]:
    """(share of the output variance due to noise, images with noise, the same latents without)."""
    indices = torch.arange(num)
    with_noise = Sampler(G, seed=seed, noise_mode="random")(indices)
    without = Sampler(G, seed=seed, noise_mode="none")(indices)
    share = float((with_noise - without).double().var() / with_noise.double().var())
    return share, with_noise, without


def noise_strengths(G: Generator) -> dict:
    return {name.removeprefix("synthesis.").removesuffix(".noise_strength"): round(float(p), 5)
            for name, p in G.named_parameters() if name.endswith("noise_strength")}


def save_side_by_side(with_noise: torch.Tensor, without: torch.Tensor, path: str) -> None:
    left, right = (make_grid(to_uint8(x[:GRID_SAMPLES])) for x in (with_noise, without))
    gap = np.zeros((left.shape[0], 8, *left.shape[2:]), dtype=np.uint8)
    save_png(np.concatenate([left, gap, right], axis=1), path)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="a StyleGAN2 checkpoint (its G_ema is measured)")
    parser.add_argument("--num", type=int, default=256, help="samples rendered both ways")
    parser.add_argument("--grid", help="PNG path: 16 samples with noise beside the same without")
    args = parser.parse_args(argv)
    if args.num < 2:
        exit_with_error("--num must be at least 2")
    try:
        checkpoint = load_checkpoint(args.ckpt)
    except CheckpointError as e:
        exit_with_error(str(e))
    if checkpoint.get("model") != "stylegan2":
        exit_with_error(f"--ckpt: {args.ckpt} is a {checkpoint.get('model')} checkpoint; noise inputs are StyleGAN2's")
    G = sampler_from_checkpoint(checkpoint, "cpu").G
    share, with_noise, without = noise_share(G, args.num)
    if args.grid:
        save_side_by_side(with_noise, without, args.grid)
    print(json.dumps({"checkpoint": args.ckpt, "kimg": checkpoint["kimg"], "num": args.num,
                      "noise_strength": noise_strengths(G), "noise_share_of_variance": round(share, 4)}, indent=1))


if __name__ == "__main__":
    main()
