"""The statistics a physicist checks, in data units, each beside its real-vs-real floor.

    python eval/stats.py --ckpt runs/x/checkpoints/best.pt [--num-samples N] [--threshold T] [--json] [--plots DIR]
    python eval/stats.py --real PATH --fake PATH [--resolution R] [--threshold T] [--json] [--plots DIR]

FID looks at frames through an ImageNet network; these numbers look at what
an analysis of detector frames uses. Generated frames are taken back to data
units through the checkpoint's normalization (training/normalize.py); PATH is
anything `data.path` takes (folder, .zip, .npy/.npz stack, file.h5:/dataset).

- pixel intensity: Wasserstein-1 (in data units) and Kolmogorov-Smirnov distance
  between the distributions of all pixel values;
- total intensity per frame: Wasserstein-1;
- occupancy per frame (fraction of pixels above the threshold): Wasserstein-1;
- clusters (8-connected pixels above the threshold, scipy.ndimage.label): number
  per frame, size in pixels and summed intensity per cluster: Wasserstein-1 each;
- radially averaged power spectrum (mean over frames of |FFT|², averaged over
  rings of integer radius 1 .. min(H, W)/2): mean absolute natural-log ratio,
  generated over real.

Each statistic is printed beside its floor: the same statistic between two
random halves of the real set. A value near its floor means the generated set
differs from the real one no more than the real set differs from itself.
The threshold defaults to Otsu's on the real pixels (256 bins). Multi-channel
frames are reduced to one channel with the luma weights first.

`--json` prints one JSON object on the last line: {"pixel_w1": ..., "pixel_ks": ..., "total_w1": ...,
"occupancy_w1": ..., "clusters_w1": ..., "cluster_size_w1": ..., "cluster_intensity_w1": ...,
"spectrum_log_ratio": ..., "floor": {the same keys}, "threshold": ..., "num_real": ..., "num_fake": ...};
a statistic that is undefined (no cluster in a set) is null. Errors are one line, exit status 2.
"""

import os
import sys

if __package__ in (None, ""):
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse
import json

import numpy as np
import torch
from scipy import ndimage

STATISTICS = {  # key -> what it is, in the order of the report
    "pixel_w1": "pixel intensity W1",
    "pixel_ks": "pixel intensity KS",
    "total_w1": "total intensity per frame W1",
    "occupancy_w1": "occupancy per frame W1",
    "clusters_w1": "clusters per frame W1",
    "cluster_size_w1": "cluster size (pixels) W1",
    "cluster_intensity_w1": "cluster summed intensity W1",
    "spectrum_log_ratio": "power spectrum mean |log ratio|",
}
PER_FRAME = {  # frame_features key -> what it is: the statistics with one value per frame
    "totals": "total intensity",
    "occupancy": "occupancy",
    "clusters": "clusters per frame",
}
LUMA = np.array([0.299, 0.587, 0.114])
SPECTRUM_CHUNK = 256  # frames per FFT call: bounded memory at any resolution


# ---------------------------------------------------------------------------
# The statistics

def w1_and_ks(a: np.ndarray, b: np.ndarray) -> tuple[float | None, float | None]:
    """Wasserstein-1 and Kolmogorov-Smirnov distance of two samples' empirical distributions.

    Both from the two CDFs on the merged sorted values: W1 = ∫ |F_a - F_b| dx,
    KS = max |F_a - F_b|. (None, None) when either sample is empty.
    """
    if len(a) == 0 or len(b) == 0:
        return None, None
    a, b = np.sort(np.asarray(a, np.float64).ravel()), np.sort(np.asarray(b, np.float64).ravel())
    values = np.concatenate([a, b])
    values.sort(kind="mergesort")
    gap = np.abs(np.searchsorted(a, values, side="right") / len(a) - np.searchsorted(b, values, side="right") / len(b))
    return float(np.sum(gap[:-1] * np.diff(values))), float(gap.max())


def single_channel(frames) -> np.ndarray:
    """[N, C, H, W] (tensor or array) or [N, H, W] -> float64 [N, H, W]; colour by the luma weights."""
    frames = frames.detach().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    frames = frames.astype(np.float64, copy=False)
    if frames.ndim == 3:
        return frames
    if frames.shape[1] == 1:
        return frames[:, 0]
    return np.einsum("nchw,c->nhw", frames[:, :3], LUMA)


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold: the histogram split with the largest between-class variance (upper edge of class 0)."""
    hist, edges = np.histogram(values, bins)
    centers = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(hist)[:-1].astype(np.float64)  # split after bin i: bins 0..i below, the rest above
    mass_low = np.cumsum(hist * centers)[:-1]
    weight_high, mass_high = hist.sum() - weight_low, (hist * centers).sum() - mass_low
    with np.errstate(divide="ignore", invalid="ignore"):
        between = weight_low * weight_high * (mass_low / weight_low - mass_high / weight_high) ** 2
    between[~np.isfinite(between)] = -1
    best = np.flatnonzero(between >= between.max() * (1 - 1e-9))  # an empty gap between classes: its middle
    return float(edges[(best[0] + best[-1]) // 2 + 1])


def radial_power_spectrum(frames: np.ndarray) -> np.ndarray:
    """Mean |FFT|² over frames, averaged over rings of integer radius 1 .. min(H, W) // 2 (DC left out)."""
    n, h, w = frames.shape
    power = np.zeros((h, w))
    for start in range(0, n, SPECTRUM_CHUNK):
        power += (np.abs(np.fft.fft2(frames[start:start + SPECTRUM_CHUNK])) ** 2).sum(0)
    power /= max(n, 1)
    radius = np.round(np.hypot(*np.meshgrid(np.fft.fftfreq(h) * h, np.fft.fftfreq(w) * w, indexing="ij")))
    radius = radius.astype(np.int64).ravel()
    rings = np.bincount(radius, weights=power.ravel()) / np.maximum(np.bincount(radius), 1)
    return rings[1:min(h, w) // 2 + 1]


def frame_features(frames: np.ndarray, threshold: float) -> dict:
    """The per-pixel, per-frame and per-cluster samples the statistics compare, of frames [N, H, W]."""
    n = len(frames)
    above = frames > threshold
    within_frame = np.zeros((3, 3, 3), bool)
    within_frame[1] = True  # 8-connected inside a frame, never across frames of the stack
    labels, count = ndimage.label(above, within_frame)
    flat = labels.ravel()
    sizes = np.bincount(flat, minlength=count + 1)[1:]
    intensities = np.bincount(flat, weights=frames.ravel(), minlength=count + 1)[1:]
    in_cluster = np.flatnonzero(flat)
    frame_of_label = np.zeros(count + 1, np.int64)
    frame_of_label[flat[in_cluster]] = in_cluster // (frames.shape[1] * frames.shape[2])
    return {"pixels": frames.ravel(), "totals": frames.sum((1, 2)), "occupancy": above.mean((1, 2)),
            "clusters": np.bincount(frame_of_label[1:], minlength=n), "cluster_sizes": sizes,
            "cluster_intensities": intensities, "spectrum": radial_power_spectrum(frames)}


def per_frame_statistics(frames: np.ndarray, threshold: float) -> dict[str, np.ndarray]:
    """{PER_FRAME key: one value per frame} of single-channel frames [N, H, W] in data units."""
    features = frame_features(frames, threshold)
    return {key: np.asarray(features[key], np.float64) for key in PER_FRAME}


def reader_features(frames: np.ndarray, threshold: float) -> np.ndarray:
    """One feature vector per single-channel frame [N, H, W]: the per-frame statistics, pixel quantiles
    (median, 90 %, 99 %, maximum) and the log radially averaged power spectrum, all unchanged by flips and
    rotations of the frame. What eval/conditional.py's label reader reads and eval/physics.py's FPD, KPD
    and gradient-boosted trees compare."""
    statistics = per_frame_statistics(frames, threshold)
    quantiles = np.quantile(frames.reshape(len(frames), -1), [0.5, 0.9, 0.99, 1.0], axis=1).T
    spectra = np.stack([radial_power_spectrum(frame[None]) for frame in frames])
    return np.concatenate([np.stack([statistics[key] for key in PER_FRAME], 1), quantiles,
                           np.log(spectra + np.finfo(np.float64).tiny)], axis=1)


def compare_features(real: dict, fake: dict) -> dict:
    """Every statistic of STATISTICS between two `frame_features`."""
    pixel_w1, pixel_ks = w1_and_ks(real["pixels"], fake["pixels"])
    result = {"pixel_w1": pixel_w1, "pixel_ks": pixel_ks}
    for key, samples in (("total_w1", "totals"), ("occupancy_w1", "occupancy"), ("clusters_w1", "clusters"),
                         ("cluster_size_w1", "cluster_sizes"), ("cluster_intensity_w1", "cluster_intensities")):
        result[key] = w1_and_ks(real[samples], fake[samples])[0]
    if real["spectrum"].shape != fake["spectrum"].shape:
        result["spectrum_log_ratio"] = None
    else:
        tiny = np.finfo(np.float64).tiny
        ratio = np.log(np.maximum(fake["spectrum"], tiny)) - np.log(np.maximum(real["spectrum"], tiny))
        result["spectrum_log_ratio"] = float(np.abs(ratio).mean()) if len(ratio) else None
    return result


class FrameStatistics:
    """The real set's side of the statistics, computed once; `report` scores a generated set against it.

    Args:
        real_frames:   [N, C, H, W] or [N, H, W] in data units (uint8 or float)
        normalization: the set's mapping (training/normalize.py), for `report_generated`
        threshold:     data units; default Otsu's on the real pixels
        seed:          the random split into halves for the floor
    """

    def __init__(self, real_frames, normalization=None, threshold: float | None = None, seed: int = 0):
        self.real = single_channel(real_frames)
        if len(self.real) < 2:
            raise ValueError(f"the statistics need at least 2 real frames, got {len(self.real)}")
        self.frame_shape = tuple(real_frames.shape[1:])
        self.normalization = normalization
        self.threshold = otsu_threshold(self.real) if threshold is None else float(threshold)
        self.real_features = frame_features(self.real, self.threshold)
        halves = np.random.default_rng(seed).permutation(len(self.real))
        half = len(self.real) // 2
        self.floor = compare_features(frame_features(self.real[halves[:half]], self.threshold),
                                      frame_features(self.real[halves[half:2 * half]], self.threshold))

    def report(self, fake_frames) -> dict:
        """{statistic: generated vs real, ..., "floor": {statistic: half vs half}, "threshold", "num_real",
        "num_fake"}."""
        fake = single_channel(fake_frames)
        return {**compare_features(self.real_features, frame_features(fake, self.threshold)), "floor": self.floor,
                "threshold": self.threshold, "num_real": len(self.real), "num_fake": len(fake)}

    def report_generated(self, images: torch.Tensor) -> dict:
        """`report` of network outputs in [-1, 1], taken to data units by the normalization."""
        return self.report(self.normalization.inverse(images))


# ---------------------------------------------------------------------------
# Plots

def histogram_bins(values: np.ndarray, bins: int = 60) -> np.ndarray:
    """Bin edges over the range of `values`. Whole numbers: edges halfway between integers, one bin per
    integer when they span at most 200, else bins of a whole number of integers (about `bins` of them), so
    no bin holds more integers than another and a value a rounding error off its integer stays in its
    bin. Other values: `bins` equal bins."""
    values = np.asarray(values, np.float64)
    low, high = values.min(), values.max()
    if np.all(values == np.round(values)):
        width = 1 if high - low <= 200 else np.ceil((high - low + 1) / bins)
        return np.arange(low - 0.5, high + 0.5 + width, width)
    return np.histogram_bin_edges(values, bins=bins)


def plot_overlays(real: np.ndarray, fake: np.ndarray, threshold: float, out_dir: str,
                  notes: dict[str, str] | None = None) -> list[str]:
    """One PNG per distribution: real and generated histograms (same bins) overlaid; the spectra as curves.
    `notes`: {frame_features key: text} as the title of that distribution's panel."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a, b = frame_features(real, threshold), frame_features(fake, threshold)
    os.makedirs(out_dir, exist_ok=True)
    panels = [("pixel_intensity", "pixels", "pixel value (data units)", True),
              ("total_intensity", "totals", "total intensity per frame", False),
              ("occupancy", "occupancy", f"fraction of pixels > {threshold:.4g}", False),
              ("clusters_per_frame", "clusters", "clusters per frame", False),
              ("cluster_size", "cluster_sizes", "cluster size (pixels)", True),
              ("cluster_intensity", "cluster_intensities", "summed intensity per cluster", True)]
    paths = []
    for name, key, xlabel, log_counts in panels:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        both = np.concatenate([a[key], b[key]]).astype(np.float64)
        if len(both):
            bins = histogram_bins(both)
            for samples, label in ((a[key], f"real ({len(real)} frames)"), (b[key], f"generated ({len(fake)})")):
                if len(samples):
                    ax.hist(samples, bins=bins, density=True, histtype="step", linewidth=1.5, label=label)
            ax.legend()
        if notes and key in notes:
            ax.set_title(notes[key], fontsize=9)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("density")
        if log_counts:
            ax.set_yscale("log")
        fig.tight_layout()
        paths.append(os.path.join(out_dir, f"{name}.png"))
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for spectrum, label in ((a["spectrum"], "real"), (b["spectrum"], "generated")):
        ax.loglog(np.arange(1, len(spectrum) + 1), spectrum, label=label)
    ax.set_xlabel("spatial frequency (cycles per frame)")
    ax.set_ylabel("power")
    ax.legend()
    fig.tight_layout()
    paths.append(os.path.join(out_dir, "power_spectrum.png"))
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths


# ---------------------------------------------------------------------------
# Command line

def format_report(report: dict) -> str:
    def number(value):
        return "–" if value is None else f"{value:.4g}"

    lines = [f"{'statistic (data units)':34s} {'generated':>12s} {'real vs real':>14s}"]
    lines += [f"{label:34s} {number(report[key]):>12s} {number(report['floor'][key]):>14s}"
              for key, label in STATISTICS.items()]
    lines.append(f"threshold {report['threshold']:.4g}; {report['num_real']} real frames, {report['num_fake']} "
                 f"generated; floor: two random halves of the real frames")
    return "\n".join(lines)


def checkpoint_frames(args) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(real frames, generated frames, the checkpoint's data config) of a checkpoint, frames in data units."""
    from eval.fid import EvalError, checkpoint_sampler, checkpoint_training_frames
    from training.normalize import normalization_from_config

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    checkpoint, sampler = checkpoint_sampler(args.ckpt, device, seed=args.seed, truncation=args.truncation,
                                             use_ema=not args.no_ema)
    if checkpoint["model"] == "singan":
        raise EvalError(f"{args.ckpt} is a SinGAN checkpoint: one training image has no distribution to compare")
    data = checkpoint["config"]["data"]
    _, real = checkpoint_training_frames(checkpoint, args.ckpt, args.data)
    normalization = normalization_from_config(data)
    num = args.num_samples or checkpoint["config"].get("eval", {}).get("num_samples", 1000)
    fake = []
    with torch.no_grad():
        for start in range(0, num, args.batch_size):
            fake.append(normalization.inverse(sampler(torch.arange(start, min(num, start + args.batch_size)))).cpu())
    return real, torch.cat(fake), data


def add_frame_arguments(parser: argparse.ArgumentParser) -> None:
    """The options saying which frames to compare: a checkpoint's, or two paths (eval/stats.py, eval/physics.py)."""
    source = parser.add_argument_group("what to compare (either --ckpt, or --real and --fake)")
    source.add_argument("--ckpt", help="checkpoint; its generator (G_ema) against its training data")
    source.add_argument("--data", help="with --ckpt: real frames instead of the checkpoint's data.path")
    source.add_argument("--real", help="real frames: folder, .zip, image, .npy/.npz stack or file.h5:/dataset")
    source.add_argument("--fake", help="generated frames, the same kinds of path")
    parser.add_argument("--resolution", type=int, help="with --real/--fake: resize frames to this (default: "
                        "their own size)")
    parser.add_argument("--num-samples", type=int, help="with --ckpt: generated frames (default: the checkpoint's "
                        "eval.num_samples)")
    parser.add_argument("--seed", type=int, default=0, help="with --ckpt: sample i depends on (seed, i)")
    parser.add_argument("--truncation", type=float, default=1.0, help="with --ckpt: truncation psi (StyleGAN2)")
    parser.add_argument("--no-ema", action="store_true", help="with --ckpt: G, not G_ema")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", choices=["cuda", "cpu"], help="default: cuda when available")
    parser.add_argument("--threshold", type=float, help="data units; default: Otsu's threshold of the real pixels")
    parser.add_argument("--json", action="store_true", help="print one JSON object on the last line")


def check_frame_arguments(parser: argparse.ArgumentParser, args) -> None:
    if bool(args.ckpt) == bool(args.real or args.fake) or (not args.ckpt and not (args.real and args.fake)):
        parser.error("give either --ckpt, or both --real and --fake")
    if args.batch_size < 1 or (args.num_samples is not None and args.num_samples < 2):
        parser.error("--batch-size must be positive and --num-samples at least 2")


def compared_frames(args) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(real frames, generated frames, the real set's data config: the checkpoint's with --ckpt, else just its
    path) from `add_frame_arguments`' options; an EvalError (one line) when they cannot be compared."""
    from eval.fid import EvalError
    from training.data import load_images

    if args.ckpt:
        real, fake, data = checkpoint_frames(args)
        data = {**data, "path": args.data or data["path"]}
    else:
        real, fake = load_images(args.real, args.resolution, 1), load_images(args.fake, args.resolution, 1)
        data = {"path": args.real}
    if len(real) < 2:
        raise EvalError(f"{args.real or args.data or args.ckpt}: {len(real)} real frame(s); the floor needs "
                        f"at least 2")
    if tuple(real.shape[2:]) != tuple(fake.shape[2:]):
        raise EvalError(f"real frames are {list(real.shape[2:])}, generated {list(fake.shape[2:])}; give "
                        f"--resolution to compare them at one size")
    return real, fake, data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Physics statistics of generated frames against real ones, "
                                                 "in data units, beside their real-vs-real floors.")
    add_frame_arguments(parser)
    parser.add_argument("--plots", metavar="DIR", help="write real-vs-generated overlays of every distribution")
    args = parser.parse_args(argv)
    check_frame_arguments(parser, args)

    def compute() -> dict:
        real, fake, _ = compared_frames(args)
        statistics = FrameStatistics(real, threshold=args.threshold)
        report = statistics.report(fake)
        if args.plots:
            plot_overlays(statistics.real, single_channel(fake), statistics.threshold, args.plots)
        return report

    return report_command(compute, format_report, args.json, args.plots)


def report_command(compute, format_report, as_json: bool, plots: str | None, errors: tuple = ()) -> int:
    """The end of every report command: run `compute()` (-> the report dict) and print the text report (on
    stderr with --json), where the plots went, then the JSON object as the last line; exit status 0. Bad
    input (the project's one-line errors, and `errors`) prints `error: ...` and gives exit status 2."""
    from eval.fid import EvalError
    from training.checkpoint import CheckpointError
    from training.config import ConfigError
    from training.data import DataError

    try:
        report = compute()
    except (EvalError, CheckpointError, DataError, ConfigError, *errors) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out = sys.stderr if as_json else sys.stdout
    print(format_report(report), file=out)
    if plots:
        print(f"plots in {plots}", file=out)
    if as_json:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
