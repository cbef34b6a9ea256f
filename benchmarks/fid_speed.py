"""FID speed: eval/fid.py against pytorch-fid's own pipeline and CLI on the same PNG folders.

    python benchmarks/fid_speed.py [--num 500] [--size 64] [--threads 2] [--device cpu] [--skip-cli]

Writes two folders of `--num` synthetic RGB PNGs (or uses `--real/--fake`),
then measures
  - feature extraction, in-process: pytorch-fid's `get_activations` (PIL per
    image in a DataLoader with its CLI's worker count, ToTensor, InceptionV3)
    against `eval.fid.compute_features` (uint8 batches decoded by threads,
    converted on the device, channels-last), on the real folder;
  - both command lines end to end (`python -m pytorch_fid REAL FAKE` and
    `python eval/fid.py --real REAL --fake FAKE --no-cache`), with the FID each prints.
Both use the same torch thread count and batch size. pytorch-fid's CLI runs
through a two-line wrapper that hands its loader the provisioned weights file
(which has no classifier; pytorch-fid loads strictly). Prints one JSON object.
"""

import os
import sys

if __package__ in (None, ""):
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse
import json
import re
import subprocess
import tempfile
import time
import warnings

import numpy as np
import torch
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PYTORCH_FID_CLI = """
import sys
from unittest import mock
from pytorch_fid import inception
from pytorch_fid.fid_score import main
sys.path.insert(0, {root!r})
from eval.inception_weights import load_inception_state_dict
with mock.patch.object(inception, "load_state_dict_from_url", lambda *a, **k: load_inception_state_dict()):
    sys.argv = ["pytorch_fid", *{args!r}]
    main()
"""


def write_folder(folder: str, count: int, size: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    for i in range(count):
        image = np.zeros((size, size, 3))
        for k in range(3):
            cx, cy, r = *rng.uniform(0.15 * size, 0.85 * size, 2), rng.uniform(0.06, 0.2) * size
            image[..., k] = 200 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
        image = np.clip(image + rng.normal(10 * seed, 10, image.shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(os.path.join(folder, f"{i:05d}.png"))
    return folder


def pytorch_fid_extraction(folder: str, batch_size: int, device: str) -> tuple[float, np.ndarray]:
    from unittest import mock

    from pytorch_fid import inception
    from pytorch_fid.fid_score import IMAGE_EXTENSIONS, get_activations

    from eval.inception_weights import load_inception_state_dict

    with mock.patch.object(inception, "load_state_dict_from_url", lambda *a, **k: load_inception_state_dict()):
        model = inception.InceptionV3([3]).to(device)
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.split(".")[-1] in IMAGE_EXTENSIONS)
    workers = min(len(os.sched_getaffinity(0)), 8)  # what its CLI uses
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        features = get_activations(files, model, batch_size, 2048, device, workers)
    return time.perf_counter() - start, features


def our_extraction(folder: str, batch_size: int, device: str) -> tuple[float, np.ndarray]:
    from eval.fid import ImageFiles, compute_features, feature_extractor

    extractor = feature_extractor(device)
    start = time.perf_counter()
    features = compute_features(ImageFiles(folder), extractor, batch_size=batch_size)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, features


def timed(command: list[str], env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if run.returncode != 0:
        raise SystemExit(f"{' '.join(command[:3])} failed: {run.stderr.strip().splitlines()[-1:]}")
    return seconds, run.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num", type=int, default=500, help="images per folder")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--real", help="existing folder instead of a synthetic one")
    parser.add_argument("--fake", help="existing folder instead of a synthetic one")
    parser.add_argument("--batch-size", type=int, default=50, help="pytorch-fid's default")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--skip-cli", action="store_true", help="only the in-process extraction")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}

    with tempfile.TemporaryDirectory() as tmp:
        real = args.real or write_folder(os.path.join(tmp, "real"), args.num, args.size, seed=0)
        fake = args.fake or write_folder(os.path.join(tmp, "fake"), args.num, args.size, seed=1)
        theirs_s, theirs = pytorch_fid_extraction(real, args.batch_size, args.device)
        ours_s, ours = our_extraction(real, args.batch_size, args.device)
        report = {
            "device": args.device, "torch_threads": args.threads, "batch_size": args.batch_size,
            "images": len(ours), "image_size": args.size, "load_average": os.getloadavg()[0],
            "extraction": {
                "pytorch_fid_images_per_s": round(len(theirs) / theirs_s, 2),
                "ours_images_per_s": round(len(ours) / ours_s, 2),
                "speedup": round(theirs_s / ours_s, 2),
                "max_abs_feature_difference": float(np.abs(theirs - ours).max()),
            },
        }
        if not args.skip_cli:
            fid_args = [real, fake, "--device", args.device, "--batch-size", str(args.batch_size)]
            theirs_cli_s, out = timed([sys.executable, "-c", PYTORCH_FID_CLI.format(root=ROOT, args=fid_args)], env)
            theirs_fid = float(re.search(r"FID:\s+(\S+)", out).group(1))
            ours_cli_s, out = timed([sys.executable, "eval/fid.py", "--real", real, "--fake", fake, "--no-cache",
                                     "--json", "--batch-size", str(args.batch_size), "--device", args.device.split(":")[0]], env)
            ours_result = json.loads(out.strip().splitlines()[-1])
            total = ours_result["num_real"] + ours_result["num_fake"]
            report["cli"] = {
                "pytorch_fid_seconds": round(theirs_cli_s, 1), "ours_seconds": round(ours_cli_s, 1),
                "pytorch_fid_images_per_s": round(total / theirs_cli_s, 2),
                "ours_images_per_s": round(total / ours_cli_s, 2),
                "speedup": round(theirs_cli_s / ours_cli_s, 2),
                "pytorch_fid_fid": theirs_fid, "ours_fid": ours_result["fid"],
                "fid_difference": abs(theirs_fid - ours_result["fid"]),
            }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
