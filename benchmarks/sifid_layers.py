"""Which Inception layer makes a useful SIFID? A worked example on one particle frame.

    python benchmarks/sifid_layers.py [--size 250] [--seed 7] [--frames 8]

The real image is frame 0 of `builtin:particles?seed=S` at `--size` px. SIFID
(eval/sifid.py's metric) is computed against
  - `--frames` other frames of the same renderer: the same statistics in new
    layouts, what a faithful single-image GAN sample should look like;
  - the real frame spoiled in known ways: Gaussian blur (sigma 1.5 px), half
    resolution up-sampled back, added noise (std 0.1 in [-1, 1] units), and
    its tiles shuffled (10 px tiles break the tracks while keeping every
    pixel's neighbourhood; 25 px tiles mostly rearrange whole structures);
for four layers of pytorch-fid's FID Inception: block 1 (192-d, after the
second max pool; SIFID's default), Conv2d_4a (192-d, block 1 before its max
pool: the layer the SinGAN paper's text names), block 0 (64-d, after the first
max pool) and Conv2d_2b (64-d, before the first max pool: where the SinGAN
authors' code takes its features). The authors used torchvision's ImageNet
weights, which this benchmark does not use. Prints one JSON object: per layer, the new
frames' mean, std and max, and each spoiled image's SIFID and its ratio to
that mean.
"""

import os
import sys

if __package__ in (None, ""):
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse
import json

import torch
import torch.nn.functional as F

from eval.inception import feature_extractor
from eval.sifid import SIFID
from nets.singan import resize
from training.images import to_float, to_uint8
from training.particles import render_frame


def shuffle_tiles(image: torch.Tensor, tile: int, g: torch.Generator) -> torch.Tensor:
    """uint8 [1, H, W] cut into tile x tile squares put back in random order (H, W multiples of tile)."""
    rows, cols = image.shape[1] // tile, image.shape[2] // tile
    tiles = image.reshape(rows, tile, cols, tile).permute(0, 2, 1, 3).reshape(rows * cols, tile, tile)
    tiles = tiles[torch.randperm(rows * cols, generator=g)]
    return tiles.reshape(rows, cols, tile, tile).permute(0, 2, 1, 3).reshape(1, rows * tile, cols * tile)


def spoiled_versions(real: torch.Tensor, g: torch.Generator) -> dict[str, torch.Tensor]:
    x = to_float(real)[None]
    size = tuple(x.shape[-2:])
    offsets = torch.arange(-4, 5, dtype=torch.float64)
    kernel = torch.exp(-offsets ** 2 / (2 * 1.5 ** 2))
    kernel = (kernel[:, None] * kernel[None]) / kernel.sum() ** 2
    blurred = F.conv2d(F.pad(x, (4, 4, 4, 4), mode="reflect"), kernel[None, None].float())
    half = resize(resize(x, (size[0] // 2, size[1] // 2)), size)
    noisy = x + 0.1 * torch.randn(x.shape, generator=g)
    return {"blur_1.5px": to_uint8(blurred)[0], "half_resolution": to_uint8(half)[0],
            "noise_0.1": to_uint8(noisy)[0], "tiles_10px_shuffled": shuffle_tiles(real, 10, g),
            "tiles_25px_shuffled": shuffle_tiles(real, 25, g)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=250, help="frame size (a multiple of 50)")
    parser.add_argument("--seed", type=int, default=7, help="builtin:particles seed")
    parser.add_argument("--frames", type=int, default=8, help="new frames of the same renderer")
    args = parser.parse_args(argv)

    g = torch.Generator().manual_seed(0)
    real = torch.from_numpy(render_frame(args.seed, 0, args.size))[None]
    new_frames = torch.stack([torch.from_numpy(render_frame(args.seed, i, args.size))[None]
                              for i in range(1, args.frames + 1)])
    spoiled = spoiled_versions(real, g)

    extractor = feature_extractor("cpu", blocks=(0, 1), resize=False)
    blocks = extractor.network.blocks  # batch norms folded into the convolutions

    def up_to(layers):
        def features(images):
            x = images.expand(-1, 3, -1, -1).float() / 255 * 2 - 1  # pytorch-fid's input scaling
            with torch.no_grad():
                return layers(x.contiguous(memory_format=torch.channels_last))
        return features

    layers = {"block1_192d_after_pool2": lambda images: extractor(images)[1],
              "conv2d_4a_192d_before_pool2": up_to(torch.nn.Sequential(blocks[0], *blocks[1][:2])),
              "block0_64d_after_pool1": lambda images: extractor(images)[0],
              "conv2d_2b_64d_before_pool1": up_to(blocks[0][:3])}
    report = {}
    for name, features in layers.items():
        metric = SIFID(real, features=features, batch_size=8)
        faithful = metric.scores(new_frames)
        entry = {"new_frames_mean": float(faithful.mean()), "new_frames_std": float(faithful.std()),
                 "new_frames_max": float(faithful.max())}
        for kind, image in spoiled.items():
            value = float(metric.scores(image[None])[0])
            entry[kind] = {"sifid": value, "ratio_to_new_frames": value / entry["new_frames_mean"]}
        report[name] = entry
        print(f"{name}: done", file=sys.stderr, flush=True)
    print(json.dumps({"size": args.size, "seed": args.seed, "frames": args.frames, "layers": report}))


if __name__ == "__main__":
    main()
