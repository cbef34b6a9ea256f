"""What FID misses and the physics statistics see, measured on the built-in particle frames; and their speed.

    python benchmarks/stats_vs_fid.py [--count 300] [--device cpu]

A reference set (builtin:particles, seed 0) is compared with an independent
set from the same renderer (seed 1) as it is, with every intensity scaled by
1.1, and with half of each frame's clusters removed (the pixels of a random
half of the clusters above the threshold, grown by 2 pixels, set to the
frame's median). For each: FID/KID (Inception, as in training) and every
statistic of eval/stats.py beside its real-vs-real floor. Then the time to load
300 16-bit 64x64 PNGs and to compute the statistics of 1000 frames against 300.
Prints one JSON object.
"""

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from eval.fid import Evaluator
from eval.stats import FrameStatistics
from training.data import load_images
from training.normalize import Normalization


def remove_half_the_clusters(frames: np.ndarray, threshold: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = frames.copy()
    for frame in out:
        labels, count = ndimage.label(frame > threshold, np.ones((3, 3), bool))
        chosen = rng.permutation(np.arange(1, count + 1))[:count // 2]
        mask = ndimage.binary_dilation(np.isin(labels, chosen), iterations=2)
        frame[mask] = np.median(frame)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    reference = load_images(f"builtin:particles?count={args.count}&seed=0", 64, 1)
    fresh = load_images(f"builtin:particles?count={args.count}&seed=1", 64, 1).double()[:, 0].numpy()
    statistics = FrameStatistics(reference)
    candidates = {"independent real set": fresh,
                  "intensities x1.1": fresh * 1.1,
                  "half the clusters removed": remove_half_the_clusters(fresh, statistics.threshold, seed=0)}
    evaluator = Evaluator(reference, args.device, kid_subsets=100, kid_subset_size=args.count, cache=False)
    eight_bit = Normalization()  # what FID sees: the 8-bit picture (values above 255 saturate, as a PNG would)
    results = {"threshold": statistics.threshold, "floor": statistics.floor, "candidates": {}}
    for name, frames in candidates.items():
        images = eight_bit.to_uint8(torch.from_numpy(frames)[:, None].float())
        scores = evaluator.evaluate(lambda indices, images=images: images[indices].float() / 127.5 - 1, len(images))
        report = statistics.report(frames)
        results["candidates"][name] = {"fid": scores["fid"], "kid": scores["kid"],
                                       **{k: v for k, v in report.items() if k not in ("floor", "threshold")}}

    with tempfile.TemporaryDirectory() as folder:
        rng = np.random.default_rng(0)
        for i in range(300):
            Image.fromarray(rng.integers(0, 65536, (64, 64), dtype=np.uint16)).save(os.path.join(folder, f"{i}.png"))
        start = time.perf_counter()
        loaded = load_images(folder, 64, 1)
        results["load_300_png16_64px_s"] = time.perf_counter() - start
        assert loaded.dtype == torch.float32 and len(loaded) == 300
    generated = np.concatenate([fresh] * (1000 // len(fresh) + 1))[:1000]
    start = time.perf_counter()
    FrameStatistics(reference).report(generated)
    results["stats_1000_vs_300_s"] = time.perf_counter() - start
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
