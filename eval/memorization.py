"""Is the generator copying its training set? Nearest training images of generated ones.

    python eval/memorization.py --ckpt runs/x/checkpoints/best.pt [--data PATH] [--num N] [--out DIR] [--json]
    torchrun --nproc_per_node K eval/memorization.py ...   # Inception work split K ways, same report

With a few hundred training images a GAN can reach a good FID by
reproducing them, and FID cannot tell. This finds, for N generated images,
the nearest training image in two spaces:

- pixel: root-mean-square difference of the [-1, 1] pixel values of the
  uint8 images (= L2 / sqrt(C*H*W); 0.02 is about 2.5 grey levels of 255);
- inception: Euclidean distance of pytorch-fid's pool3 features (2048-d),
  the space FID and precision/recall live in.

Training images count together with the flips the model was trained with
(the checkpoint's data.hflip/data.vflip; --no-flips for the images alone):
a generator that learned a flipped training image has still copied it.

The yardstick is the same distance among the real images: each training
image to its nearest OTHER training image (its own flips excluded, the
others' flips included). In each space

    threshold = 5th percentile (--threshold-quantile) of those real-to-other-real distances
    copy rate = share of generated images whose nearest training image is closer than threshold

i.e. a sample counts as a copy when it is closer to a training image than
95% of the training images are to any other. A generator of genuinely new
images from the training distribution has about the same nearest-neighbour
distances as a held-out real image, so its copy rate is about 0.05 (the
quantile); one that reproduces training images approaches 1; one far from the
data (noise) gets 0. Grids show samples next to their nearest training image
(the matching flip), most suspicious first: smallest ratio of the sample's
distance to the distance from that training image to its own nearest other
training image (a ratio below 1: closer than any other real image gets).

A SinGAN checkpoint has one training image, so copies are looked for patch
by patch (`nearest_patches`): every patch of a sample (patch x patch pixels,
default a quarter of the short side, on a grid at --stride) against every
patch of the real image, at any position. A sample patch is

- copied when it is closer to some real patch than the real image's own
  patches come to any other non-overlapping real patch (the 5th percentile,
  --threshold-quantile): the image repeating itself is the yardstick;
- in place when that real patch overlaps the sample patch's own position (a
  shift of less than a patch), moved when only a non-overlapping one is.

A sample that reproduces the image has nearly every patch copied in place;
one that rearranges the image's structures has patches copied from elsewhere,
or new ones. The copy rate is the share of samples with more than half their
patches copied in place; the network's own reconstruction of the image is
checked alike, as the copy every sample is compared with. Output:
nearest_patches.png (the reconstruction, then the samples, most in place
first, each beside its map of patches: black copied in place, grey copied
from elsewhere, white new) and report.json.

Beside them: FID, KID, precision and recall of the same samples
(eval/fid.py's `scores`). Each phase (generating, real features once per
flip, generated features) shows its progress on stderr. Output folder
(default: next to the checkpoint, <ckpt>-memorization/): nearest_pixel.png, nearest_inception.png,
nearest.csv (every sample's neighbours) and report.json. `--json` prints the
report as one JSON object on the last line. Errors (missing or corrupt
checkpoint, data, weights; too few images) are one line on stderr, exit 2.
"""

import os
import sys

if __package__ in (None, ""):
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse
import csv
import json
import math
import pathlib

import numpy as np
import torch

from eval import fid
from eval.fid import EvalError, checkpoint_real_images, checkpoint_sampler, init_distributed
from eval.generate import generate
from eval.precision_recall import nearest, quantiles
from training.images import save_png, to_float, write_atomically

FLIP_NAMES = ("none", "h", "v", "hv")
PAIRS_PER_ROW = 8
GAP = 4  # white pixels between pairs in the grids; one grey column inside each pair


# ---------------------------------------------------------------------------
# Nearest training images

def flip_variants(images: torch.Tensor, hflip: bool, vflip: bool) -> tuple[torch.Tensor, list[str]]:
    """The images and their flips, variant-major ([V*N, ...]: row v*N + i is variant v of image i), and the names."""
    variants = {"none": images}
    if hflip:
        variants["h"] = images.flip(3)
    if vflip:
        variants["v"] = images.flip(2)
    if hflip and vflip:
        variants["hv"] = images.flip((2, 3))
    return torch.cat(list(variants.values())), list(variants)


def pixel_points(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 images -> rows whose Euclidean distance is the RMS difference of [-1, 1] pixel values."""
    flat = to_float(images_uint8).flatten(1).double()
    return flat / math.sqrt(flat.shape[1])


def nearest_training(generated, real, real_variants, *, threshold_quantile: float = 0.05, device=None) -> dict:
    """Nearest training image of every generated point, and the real-to-other-real yardstick.

    Args:
        generated:          [G, ...] points (features or `pixel_points`) of generated images
        real:               [N, ...] the same for the training images
        real_variants:      [V*N, ...] training images and their flips, variant-major (`flip_variants`);
                            pass `real` itself for no flips
        threshold_quantile: copy threshold = this quantile of real-to-other-real distances

    Returns a dict of tensors: distance [G], train [G] (index of the training image), flip [G]
    (variant index), ratio [G] (distance / that training image's real_distance), real_distance [N]
    (each training image to its nearest other one, flips of others included), and the floats
    threshold and copy_rate (share of `distance < threshold`).
    """
    count = len(real)
    if count < 2:
        raise EvalError(f"the memorization check needs at least 2 training images, got {count}")
    if len(real_variants) % count:
        raise ValueError(f"{len(real_variants)} variants of {count} training images")
    groups = torch.arange(count).repeat(len(real_variants) // count)
    distance, index = nearest(generated, real_variants, 1, device=device)
    real_distance, _ = nearest(real, real_variants, 1, query_groups=torch.arange(count), reference_groups=groups,
                               device=device)
    distance, index, real_distance = distance[:, 0].cpu(), index[:, 0].cpu(), real_distance[:, 0].cpu()
    train = index % count
    threshold = float(np.quantile(real_distance.numpy(), threshold_quantile))
    return {"distance": distance, "train": train, "flip": index // count,
            "ratio": distance / real_distance[train].clamp_min(1e-12), "real_distance": real_distance,
            "threshold": threshold, "copy_rate": float((distance < threshold).double().mean())}


def summary(result: dict, flip_names: list[str], top: int = 8) -> dict:
    """JSON-able digest of `nearest_training`: threshold, copy rate, quantiles, most suspicious samples."""
    order = torch.argsort(result["ratio"], stable=True)[:top].tolist()
    return {
        "threshold": result["threshold"],
        "copy_rate": result["copy_rate"],
        "generated_to_nearest_train": quantiles(result["distance"]),
        "real_to_nearest_other_real": quantiles(result["real_distance"]),
        "ratio": quantiles(result["ratio"]),
        "most_suspicious": [{"sample": i, "train": int(result["train"][i]), "flip": flip_names[int(result["flip"][i])],
                             "distance": float(result["distance"][i]), "ratio": float(result["ratio"][i])}
                            for i in order],
    }


# ---------------------------------------------------------------------------
# Outputs

def pair_grid(generated: torch.Tensor, neighbours: torch.Tensor, pairs_per_row: int = PAIRS_PER_ROW) -> np.ndarray:
    """uint8 [P, C, H, W] twice -> one image: each sample, a grey line, its neighbour; GAP white between pairs."""
    count, channels, height, width = generated.shape
    columns = max(1, min(pairs_per_row, count))
    rows = math.ceil(count / columns)
    tile_h, tile_w = height + GAP, 2 * width + 1 + GAP
    grid = np.full((rows * tile_h - GAP, columns * tile_w - GAP, channels), 255, np.uint8)
    for i, (sample, neighbour) in enumerate(zip(generated, neighbours)):
        top, left = (i // columns) * tile_h, (i % columns) * tile_w
        line = torch.full((channels, height, 1), 128, dtype=torch.uint8)
        pair = torch.cat([sample.cpu(), line, neighbour.cpu()], 2).permute(1, 2, 0).numpy()
        grid[top:top + height, left:left + 2 * width + 1] = pair
    return grid[:, :, 0] if channels == 1 else grid


def write_outputs(out_dir: str, generated: torch.Tensor, variants: torch.Tensor, results: dict, flip_names: list[str],
                  report: dict, grid_pairs: int) -> None:
    """nearest_<space>.png, nearest.csv and report.json in `out_dir`."""
    os.makedirs(out_dir, exist_ok=True)
    count = len(variants) // len(flip_names)
    for space, result in results.items():
        order = torch.argsort(result["ratio"], stable=True)[:grid_pairs]
        neighbours = variants[result["flip"][order] * count + result["train"][order]]
        save_png(pair_grid(generated[order], neighbours), os.path.join(out_dir, f"nearest_{space}.png"))
    with open(os.path.join(out_dir, "nearest.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["sample"] + [f"{space}_{column}" for space in results
                                      for column in ("train", "flip", "distance", "ratio")])
        for i in range(len(generated)):
            row = [i]
            for result in results.values():
                row += [int(result["train"][i]), flip_names[int(result["flip"][i])],
                        f"{float(result['distance'][i]):.6g}", f"{float(result['ratio'][i]):.6g}"]
            writer.writerow(row)
    write_report(out_dir, report)


def write_report(out_dir: str, report: dict) -> None:
    write_atomically(os.path.join(out_dir, "report.json"),
                     lambda tmp: pathlib.Path(tmp).write_text(json.dumps(report, indent=1)), ".json")


# ---------------------------------------------------------------------------
# SinGAN: one training image, copies looked for patch by patch

def image_patches(images_uint8: torch.Tensor, patch: int, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 [N, C, H, W] -> (points [N, P, C*patch*patch] whose Euclidean distance is the RMS difference of
    [-1, 1] pixel values, top-left corners [P, 2]) of the patches on a grid at `stride`."""
    _, channels, height, width = images_uint8.shape
    if patch > min(height, width):
        raise EvalError(f"patch {patch} px is larger than the {height}x{width} images")
    flat = torch.nn.functional.unfold(to_float(images_uint8).double(), patch, stride=stride)  # [N, C*p*p, P]
    rows = torch.arange(0, height - patch + 1, stride)
    columns = torch.arange(0, width - patch + 1, stride)
    corners = torch.cartesian_prod(rows, columns)  # unfold's order: row-major
    return flat.transpose(1, 2) / math.sqrt(channels * patch * patch), corners


def nearest_real_patches(queries: torch.Tensor, query_corners: torch.Tensor, real: torch.Tensor,
                         real_corners: torch.Tensor, patch: int, chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Each query patch's distance to its nearest real patch that overlaps its own position (corners less
    than `patch` pixels apart, Chebyshev) and to its nearest one that does not: (near [Q], far [Q])."""
    near, far = [], []
    for start in range(0, len(queries), chunk):
        d = torch.cdist(queries[start:start + chunk], real)  # [q, R]
        overlaps = (query_corners[start:start + chunk, None, :] - real_corners[None, :, :]).abs().amax(-1) < patch
        near.append(d.masked_fill(~overlaps, math.inf).min(1).values)
        far.append(d.masked_fill(overlaps, math.inf).min(1).values)
    return torch.cat(near), torch.cat(far)


def nearest_patches(samples: torch.Tensor, real: torch.Tensor, patch: int, stride: int, *,
                    threshold_quantile: float = 0.05) -> dict:
    """Every sample patch against the one real image: copied in place, copied from elsewhere, or new.

    The yardstick is the real image repeating itself: each of its patches on the grid against its nearest
    real patch that does not overlap it; threshold = `threshold_quantile` of those distances. A sample patch
    is copied in place when a real patch overlapping its position (a shift of less than `patch` pixels) is
    closer than that, copied from elsewhere when only a non-overlapping one is: the same search as the
    yardstick's, so a patch as new as the real image's own patches are to each other counts as copied from
    elsewhere `threshold_quantile` of the time.

    Args:
        samples: uint8 [S, C, H, W] generated at the real image's size
        real:    uint8 [C, H, W] the training image
        patch, stride: patch side and the step of the grid the patches are taken on

    Returns tensors near, far [S, P] (grid patches, row-major: distance to the nearest overlapping and
    non-overlapping real patch), in_place, moved [S] (each sample's share of patches copied in place / from
    elsewhere), real_distance [P], corners [P, 2], and the floats threshold and copy_rate (share of samples
    with more than half their patches copied in place).
    """
    if samples.shape[1:] != real.shape:
        raise EvalError(f"samples are {tuple(samples.shape[1:])}, the training image {tuple(real.shape)}")
    real_points, real_corners = image_patches(real[None], patch, 1)
    real_points = real_points[0]
    grid = (real_corners % stride == 0).all(1)  # the real image's own patches on the samples' grid
    _, real_distance = nearest_real_patches(real_points[grid], real_corners[grid], real_points, real_corners, patch)
    threshold = float(np.quantile(real_distance.numpy(), threshold_quantile))
    sample_points, corners = image_patches(samples, patch, stride)
    near, far = (torch.stack(d) for d in zip(*(
        nearest_real_patches(points, corners, real_points, real_corners, patch) for points in sample_points)))
    in_place = near < threshold
    moved = (far < threshold) & ~in_place
    return {"near": near, "far": far, "in_place": in_place.double().mean(1), "moved": moved.double().mean(1),
            "real_distance": real_distance, "corners": corners, "threshold": threshold,
            "copy_rate": float((in_place.double().mean(1) > 0.5).double().mean())}


def patch_map(near: torch.Tensor, far: torch.Tensor, threshold: float, corners: torch.Tensor,
              size: tuple[int, int], patch: int, stride: int) -> torch.Tensor:
    """uint8 [1, H, W]: each grid patch, over the stride x stride cell at its centre, black when copied in
    place, grey when copied from elsewhere, white when new (dark grey where no cell reaches, at the edges)."""
    image = torch.full((1, *size), 96, dtype=torch.uint8)
    shade = torch.where(near < threshold, 0, torch.where(far < threshold, 160, 255))
    first = (patch - stride) // 2
    for (top, left), value in zip(corners.tolist(), shade.tolist()):
        image[:, top + first:top + first + stride, left + first:left + first + stride] = value
    return image


def singan_patch_check(checkpoint: dict, sampler, args, device) -> dict:
    """The nearest-patch report of a SinGAN checkpoint's samples and of its reconstruction (the yardstick copy)."""
    from nets.singan import generators_from_checkpoint, image_pyramid, synthesize
    from training.images import to_float, to_uint8

    # A checkpoint written mid-training samples at its last trained scale: compare with that scale's image.
    sizes = [tuple(s) for s in checkpoint["pyramid"][:len(checkpoint["noise_amps"])]]
    real = to_uint8(image_pyramid(to_float(checkpoint["real"])[None], sizes)[-1])[0]
    patch = args.patch or max(1, min(real.shape[1:]) // 4)
    stride = args.stride or max(1, patch // 4)
    generated = generate(sampler, torch.arange(args.num or 50), args.batch_size, progress="generate")
    generators = generators_from_checkpoint(checkpoint, device)
    with torch.no_grad():
        reconstruction = to_uint8(synthesize(generators, checkpoint["noise_amps"],
                                             sizes, None,
                                             fixed_noise=checkpoint["fixed_noise"].to(device),
                                             start_scale=len(generators))).cpu()
    options = {"threshold_quantile": args.threshold_quantile}
    result = nearest_patches(generated, real, patch, stride, **options)
    control = nearest_patches(reconstruction, real, patch, stride, **options)
    out_dir = args.out or os.path.splitext(args.ckpt)[0] + "-memorization"
    report = {
        "checkpoint": args.ckpt, "out": out_dir, "model": "singan", "num_fake": len(generated),
        "size": list(real.shape[1:]), "patch": patch, "stride": stride, "patches_per_sample": len(result["corners"]),
        "threshold_quantile": args.threshold_quantile, "threshold": result["threshold"],
        "threshold_rule": f"copied: distance to a real patch < the {args.threshold_quantile:g} quantile of the real "
                          f"image's patches' distances to their nearest non-overlapping real patch; in place: that "
                          f"real patch overlaps the sample patch's position, moved: only a non-overlapping one",
        "copy_rule": "a copy of the image: more than half the sample's patches copied in place",
        "pixel_distance": "RMS difference of [-1, 1] pixel values = L2 / sqrt(C*patch*patch)",
        "copy_rate": result["copy_rate"],
        "samples": {key: quantiles(result[key]) for key in ("in_place", "moved")},
        "reconstruction": {key: float(control[key][0]) for key in ("in_place", "moved")},
        "sample_patch_to_nearest_real": quantiles(torch.minimum(result["near"], result["far"]).flatten()),
        "real_patch_to_nearest_elsewhere": quantiles(result["real_distance"]),
    }
    images = torch.cat([reconstruction, generated])
    near, far = torch.cat([control["near"], result["near"]]), torch.cat([control["far"], result["far"]])
    order = ([0] + (1 + torch.argsort(result["in_place"], descending=True, stable=True)).tolist())[:args.grid]
    maps = torch.stack([patch_map(near[i], far[i], result["threshold"], result["corners"], tuple(real.shape[1:]),
                                  patch, stride) for i in order])
    save_png(pair_grid(images[order], maps.expand(-1, images.shape[1], -1, -1)),
             os.path.join(out_dir, "nearest_patches.png"))
    write_report(out_dir, report)
    return report


# ---------------------------------------------------------------------------
# Checkpoint -> report

def memorization(generated: torch.Tensor, real: torch.Tensor, device, *, hflip: bool, vflip: bool,
                 threshold_quantile: float = 0.05, batch_size: int = 64, cache_dir: str | None = None,
                 cache: bool = True, extractor=None) -> tuple[dict, dict, torch.Tensor, list[str]] | None:
    """The memorization report of uint8 generated images against uint8 training images.

    Every process calls it (Inception is sharded like FID's); process 0 gets
    (report, per-space `nearest_training` results, training variants, flip names), the others None.
    """
    if len(real) < 4 or len(generated) < 4:
        raise EvalError(f"the memorization check needs at least 4 training and 4 generated images "
                        f"(precision/recall use k=3), got {len(real)} and {len(generated)}")
    if generated.shape[1:] != real.shape[1:]:
        raise EvalError(f"generated images are {tuple(generated.shape[1:])}, training images {tuple(real.shape[1:])}")
    variants, flip_names = flip_variants(real, hflip, vflip)
    extractor = extractor or fid.feature_extractor(device)
    # One reference set per flip variant, through the Evaluator's cache (the unflipped one is training's own).
    real_features = [fid.Evaluator(variant, device, batch_size=batch_size, cache_dir=cache_dir, cache=cache,
                                   extractor=extractor).real_features for variant in variants.chunk(len(flip_names))]
    generated_features = fid.compute_features(generated, extractor, batch_size=batch_size,
                                              progress="generated features")
    rank, _ = fid._world()
    if rank != 0:
        return None
    options = {"threshold_quantile": threshold_quantile, "device": device}
    results = {
        "pixel": nearest_training(pixel_points(generated), pixel_points(real), pixel_points(variants), **options),
        "inception": nearest_training(generated_features, real_features[0], np.concatenate(real_features), **options),
    }
    report = {
        "num_real": len(real), "num_fake": len(generated), "flips": flip_names,
        "threshold_quantile": threshold_quantile,
        "threshold_rule": f"copy: distance to the nearest training image (or its flips) < the {threshold_quantile:g} "
                          f"quantile of the training images' distances to their nearest other training image",
        "pixel_distance": "RMS difference of [-1, 1] pixel values = L2 / sqrt(C*H*W)",
        "inception_distance": "L2 between Inception pool3 features (2048-d)",
        **{space: summary(result, flip_names) for space, result in results.items()},
    }
    report.update(fid.scores(real_features[0], generated_features, device=device))
    return report, results, variants, flip_names


def _run(args, device) -> dict | None:
    checkpoint, sampler = checkpoint_sampler(args.ckpt, device, seed=args.seed, truncation=args.truncation,
                                             use_ema=not args.no_ema)
    if checkpoint["model"] == "singan":
        return singan_patch_check(checkpoint, sampler, args, device) if fid._world()[0] == 0 else None
    path, real = checkpoint_real_images(checkpoint, args.ckpt, args.data)
    if len(real) < 4:
        raise EvalError(f"{path}: {len(real)} training image(s); the memorization check needs at least 4")
    data = checkpoint["config"]["data"]
    hflip, vflip = (False, False) if args.no_flips else (bool(data.get("hflip")), bool(data.get("vflip")))
    generated = generate(sampler, torch.arange(args.num or 1000), args.batch_size, progress="generate")
    outcome = memorization(generated, real, device, hflip=hflip, vflip=vflip,
                           threshold_quantile=args.threshold_quantile, batch_size=args.batch_size,
                           cache_dir=args.cache_dir, cache=not args.no_cache)
    if outcome is None:
        return None
    report, results, variants, flip_names = outcome
    out_dir = args.out or os.path.splitext(args.ckpt)[0] + "-memorization"
    report = {"checkpoint": args.ckpt, "out": out_dir, **report}
    write_outputs(out_dir, generated, variants, results, flip_names, report, args.grid)
    return report


def _print_table(report: dict) -> None:
    if report.get("model") == "singan":
        _print_patch_table(report)
        return
    flips = ", ".join(f for f in report["flips"] if f != "none") or "none"
    print(f"{report['num_fake']} generated vs {report['num_real']} training images (flips: {flips}); a copy is "
          f"closer than the {report['threshold_quantile']:g} quantile of real-to-other-real distances")
    print(f"{'space':<10} {'threshold':>10} {'copy rate':>10} {'gen->train q05':>15} {'q50':>10} "
          f"{'real->real q05':>15} {'q50':>10}")
    for space in ("pixel", "inception"):
        s = report[space]
        gen, real = s["generated_to_nearest_train"], s["real_to_nearest_other_real"]
        print(f"{space:<10} {s['threshold']:>10.4g} {s['copy_rate']:>10.3f} {gen['q05']:>15.4g} {gen['q50']:>10.4g} "
              f"{real['q05']:>15.4g} {real['q50']:>10.4g}")
    print(f"FID {report['fid']:.2f}  KID {report['kid']:.4f}  precision {report['precision']:.3f}  "
          f"recall {report['recall']:.3f}")
    print(f"grids, nearest.csv, report.json in {report['out']}")


def _print_patch_table(report: dict) -> None:
    samples, control = report["samples"], report["reconstruction"]
    print(f"{report['num_fake']} samples vs the {report['size'][0]}x{report['size'][1]} training image, "
          f"{report['patches_per_sample']} patches of {report['patch']} px each (stride {report['stride']})")
    print(f"{'share of patches':<22} {'reconstruction':>15} {'samples q05':>12} {'q50':>8} {'q95':>8}")
    for key, name in (("in_place", "copied in place"), ("moved", "copied from elsewhere")):
        print(f"{name:<22} {control[key]:>15.3f} {samples[key]['q05']:>12.3f} {samples[key]['q50']:>8.3f} "
              f"{samples[key]['q95']:>8.3f}")
    print(f"copy rate {report['copy_rate']:.3f} (samples with more than half their patches copied in place)")
    print(f"nearest_patches.png, report.json in {report['out']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Nearest training images of a checkpoint's samples: copy rate, "
                                                 "distance distributions, grids, precision/recall.")
    parser.add_argument("--ckpt", required=True, help="checkpoint; its G_ema (G when absent) is checked")
    parser.add_argument("--data", help="training images instead of the checkpoint's data.path")
    parser.add_argument("--num", type=int, help="generated images (default 1000; SinGAN 50)")
    parser.add_argument("--out", help="output folder (default <ckpt without .pt>-memorization)")
    parser.add_argument("--seed", type=int, default=0, help="sample i depends on (seed, i)")
    parser.add_argument("--truncation", type=float, default=1.0, help="truncation psi (StyleGAN2)")
    parser.add_argument("--no-ema", action="store_true", help="check G, not G_ema")
    parser.add_argument("--no-flips", action="store_true", help="compare with the training images only, not the "
                        "flips the checkpoint trained with (data.hflip/vflip)")
    parser.add_argument("--threshold-quantile", type=float, default=0.05,
                        help="copy threshold: this quantile of real-to-other-real distances (default 0.05)")
    parser.add_argument("--grid", type=int, default=32, help="pairs in each grid, most suspicious first")
    parser.add_argument("--patch", type=int, help="SinGAN: patch side in pixels (default a quarter of the short side)")
    parser.add_argument("--stride", type=int, help="SinGAN: step of the samples' patch grid (default patch/4)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per generator and Inception call")
    parser.add_argument("--device", choices=["cuda", "cpu"], help="default: cuda when available")
    parser.add_argument("--cache-dir", help=f"reference-feature cache (default {fid.default_cache_dir()})")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object on the last line")
    args = parser.parse_args(argv)
    if args.num is not None and args.num < 4:
        parser.error("--num must be at least 4 (precision/recall use k=3 neighbours)")
    if not 0 <= args.threshold_quantile <= 1:
        parser.error("--threshold-quantile must be in [0, 1]")
    if args.batch_size < 1 or args.grid < 1 or (args.patch or 1) < 1 or (args.stride or 1) < 1:
        parser.error("--batch-size, --grid, --patch and --stride must be positive")

    from eval.inception_weights import WeightsError
    from training.checkpoint import CheckpointError
    from training.data import DataError

    device, joined = init_distributed(args.device)
    try:
        report = _run(args, device)
    except (EvalError, WeightsError, CheckpointError, DataError) as error:
        if fid._world()[0] == 0:
            print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        if joined:
            torch.distributed.destroy_process_group()
    if report is not None:
        if args.json:
            print(json.dumps(report))
        else:
            _print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
