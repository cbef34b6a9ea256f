"""Data-loading throughput: decoding a folder, rendering the built-in set, serving batches.

    python benchmarks/data_speed.py [--count 300] [--resolution 64] [--batch 32]

Prints one JSON object (images per second for each stage).
"""

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch

from training import particles
from training.data import ImageBatches, load_images
from training.images import save_png


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=500)
    args = parser.parse_args()

    start = time.perf_counter()
    frames = particles.render(args.count, args.resolution, seed=0)
    render_s = time.perf_counter() - start

    with tempfile.TemporaryDirectory() as folder:
        for i, frame in enumerate(frames):  # stored at 2x so decoding includes a real resize
            big = torch.from_numpy(frame).repeat_interleave(2, 1).repeat_interleave(2, 2)
            save_png(big[0].numpy(), os.path.join(folder, f"{i:04d}.png"))
        start = time.perf_counter()
        images = load_images(folder, args.resolution, 1)
        decode_s = time.perf_counter() - start

    device = "cuda" if torch.cuda.is_available() else "cpu"
    batches = ImageBatches(images, args.batch, seed=0, hflip=True, vflip=True, device=device)
    batches.batch(0)
    start = time.perf_counter()
    for step in range(args.steps):
        batches.batch(step)
    if device == "cuda":
        torch.cuda.synchronize()
    serve_s = time.perf_counter() - start
    print(json.dumps({
        "images": args.count, "resolution": args.resolution, "device": device,
        "render_builtin_img_per_s": round(args.count / render_s, 1),
        "decode_folder_img_per_s": round(args.count / decode_s, 1),
        "serve_batches_img_per_s": round(args.steps * args.batch / serve_s, 1),
    }))


if __name__ == "__main__":
    main()
