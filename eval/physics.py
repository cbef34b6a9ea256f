"""Would a physicist accept these frames? The field's own tests, each beside its real-vs-real floor.

    python eval/physics.py --ckpt runs/x/checkpoints/best.pt [--num-samples N] [--json] [--plots DIR]
    python eval/physics.py --real PATH --fake PATH [--resolution R] [--json] [--plots DIR] [--no-classifier]

The tests the fast-calorimeter-simulation community accepts a generator by (CaloChallenge 2022;
Kansal et al., "Evaluating generative models in high energy physics", PRD 2023), on frames in data
units (the inputs of eval/stats.py, read the same way):

- separation power, ½·Σ_bins (h_r - h_g)² / (h_r + h_g) of the unit-normalized real and generated
  histograms, for every distribution eval/stats.py compares: pixel values, total intensity per frame,
  occupancy per frame, clusters per frame, cluster size, cluster summed intensity. 0: the same
  histogram, 1: no overlap. Bins: `eval.stats.histogram_bins` of the real sample (whole numbers: edges
  halfway between integers, one or a whole number of integers per bin; else 60 equal bins over its
  range) plus an underflow and an overflow bin, so generated values outside the real range count in full. The power spectrum is a
  mean over frames, not a distribution: eval/stats.py's log ratio covers it;
- FPD and KPD (jetnet's definitions, written here) on each frame's feature vector
  (`eval.stats.reader_features`: total intensity, occupancy, clusters, pixel quantiles, log power
  spectrum), every feature standardized by the real set's mean and standard deviation (a feature
  constant on the real set by 1), so the numbers carry no units. (jetnet divides by each feature's
  largest |value| instead; one frame decides that, at a few hundred frames.) FPD: the Fréchet
  distance of Gaussians fitted to random subsets of sizes evenly spaced in 1/N between 0.4·n and n
  (n the smaller set; 10 sizes, 20 subsets each, drawn without replacement so each is a sample of
  the population, not of the finite set), its mean per size fitted by a line in 1/N; the value is
  the intercept at 1/N = 0 (an infinite sample), ± its fit error (jetnet's curve_fit with intercept
  and slope bounded below by 0). KPD: the unbiased estimate of the squared MMD with jetnet's
  quartic kernel (x·y/d + 1)^4 on 100 random subset pairs of half the smaller set (without
  replacement); the value is their median, ± half the range between their 16.3 and 83.7 %
  percentiles (the spread of one subset's estimate: a generous error for the median);
- classifier two-sample test: a classifier trained to tell generated from real frames, with 5-fold
  cross-validation over all real frames and as many generated (a random subset of the larger set):
  (i) eval/frame_cnn.py's small CNN on the frames (flip augmentation), (ii) scikit-learn's
  HistGradientBoostingClassifier on the feature vectors. ROC AUC of the out-of-fold scores with a
  95 % bootstrap interval (the test frames resampled; the training's own randomness is not in it).
  0.5: chance; 1: every frame told apart.

Each number stands beside its floor: the same test between two independent real sets. For a
`builtin:` set the second set is rendered afresh with another seed, as many frames as were
generated (what an ideal generator scores, with the same set sizes); for a user's data it is two
random halves of the real frames (sizes in the report: half-size sets have a higher floor).

What they flag: frames that differ from the real ones in distribution. A copier (the training frames
handed back) has the real distribution: its separation powers are 0 and its FPD and KPD consistent
with 0. Only the classifier test sees it, and only the other way round: each held-out copy's twin was
in the classifier's training with the other label, so the AUC falls far below 0.5 (an interval below
both 0.5 and the floor's is reported as a hint of copies; cross-validated AUCs of two real sets
also come out a little below 0.5, about 0.49 on average). eval/memorization.py is the check for copies.

`--plots DIR`: ROC curves (roc.png), eval/stats.py's histogram overlays annotated with their
separation powers, and per classifier the 16 generated frames it is surest are fake beside the 16
real frames it is surest are real (surest_cnn.png, surest_trees.png), so you see what gives the
fakes away.

`--json` prints one JSON object on the last line: {"separation_power": {"pixels", "totals",
"occupancy", "clusters", "cluster_sizes", "cluster_intensities"}, "fpd", "fpd_error", "kpd",
"kpd_error", "classifier": {"cnn": {"auc", "auc_low", "auc_high", "num"}, "trees": {...}, "floor":
{"cnn", "trees"}}, "floor": {"separation_power", "fpd", "fpd_error", "kpd", "kpd_error"}, "floor_kind",
"num_real", "num_fake", "num_floor": [a, b], "threshold", "seconds"};
"classifier" is absent with --no-classifier; an undefined number (no cluster in a set) is null.
Errors are one line, exit status 2.

Training logs the cheap part (separation powers, FPD, KPD) at every evaluation beside eval/stats.py's
statistics ("physics" in metrics.jsonl, Metrics/physics/... in TensorBoard; with eval.stats), and the
classifier tests once at the final evaluation when eval.physics_final is true ("classifier").
"""

import os
import sys

if __package__ in (None, ""):
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse
import math
import time

import numpy as np
import torch

from eval.stats import (add_frame_arguments, check_frame_arguments, compared_frames, frame_features,
                        histogram_bins, otsu_threshold, plot_overlays, reader_features, report_command,
                        single_channel)

DISTRIBUTIONS = {  # frame_features key -> what it is, in the order of the report
    "pixels": "pixel values",
    "totals": "total intensity per frame",
    "occupancy": "occupancy per frame",
    "clusters": "clusters per frame",
    "cluster_sizes": "cluster size (pixels)",
    "cluster_intensities": "cluster summed intensity",
}
CLASSIFIERS = {"cnn": "CNN on frames", "trees": "boosted trees on features"}
FOLDS = 5
BOOTSTRAP_RESAMPLES = 1000
CNN_EPOCHS = 20         # passes over a fold's training frames (150 Adam steps of 64 frames for 300 + 300)
CNN_BATCH = 64
CNN_WIDTH = 8           # FrameCNN's first-layer channels: a quarter of the default's compute
FPD_POINTS, FPD_SUBSETS, FPD_SMALLEST = 10, 20, 0.4
KPD_DEGREE, KPD_SUBSETS = 4, 100
SUREST = 16             # frames per side in the surest-fakes grid
FRESH_COPY = 1          # the second real set of a built-in set: copy 1 in eval/conditional.py's seed scheme


# ---------------------------------------------------------------------------
# Separation power

def separation_power(real: np.ndarray, fake: np.ndarray) -> float | None:
    """½·Σ (h_r - h_g)² / (h_r + h_g) over the real sample's bins plus an underflow and an overflow bin,
    each histogram normalized to unit sum; None when either sample is empty."""
    real, fake = np.asarray(real, np.float64).ravel(), np.asarray(fake, np.float64).ravel()
    if len(real) == 0 or len(fake) == 0:
        return None
    edges = histogram_bins(real)

    def histogram(values):
        inside = np.histogram(values, edges)[0]
        counts = np.concatenate([[np.sum(values < edges[0])], inside, [np.sum(values > edges[-1])]])
        return counts / len(values)

    h_r, h_g = histogram(real), histogram(fake)
    both = h_r + h_g
    used = both > 0
    return float(0.5 * np.sum((h_r[used] - h_g[used]) ** 2 / both[used]))


# ---------------------------------------------------------------------------
# FPD and KPD

def fpd(real: np.ndarray, fake: np.ndarray, *, seed: int = 0) -> tuple[float, float] | tuple[None, None]:
    """Fréchet physics distance of two [N, D] feature sets: (value extrapolated to infinite samples, its
    error); (None, None) below 4 samples a side."""
    from scipy.optimize import curve_fit

    from eval.metrics import frechet_distance_features

    largest = min(len(real), len(fake))
    if largest < 4:
        return None, None
    smallest = max(2, int(FPD_SMALLEST * largest))
    sizes = np.unique((1 / np.linspace(1 / smallest, 1 / largest, FPD_POINTS)).astype(np.int64))
    rng = np.random.default_rng(seed)
    means = [np.mean([frechet_distance_features(real[rng.choice(len(real), size, replace=False)],
                                                fake[rng.choice(len(fake), size, replace=False)])
                      for _ in range(FPD_SUBSETS)]) for size in sizes]
    (intercept, _), covariance = curve_fit(lambda x, a, b: a + b * x, 1 / sizes, means,
                                           bounds=([0, 0], [np.inf, np.inf]))
    return float(intercept), float(np.sqrt(covariance[0, 0]))


def kpd(real: np.ndarray, fake: np.ndarray, *, subset_size: int | None = None,
        seed: int = 0) -> tuple[float, float] | tuple[None, None]:
    """Kernel physics distance of two [N, D] feature sets: (median, error) of the unbiased squared MMD with
    the quartic kernel over KPD_SUBSETS subset pairs of `subset_size` (default half the smaller set);
    (None, None) below 4 samples a side."""
    from eval.metrics import mmd2_subsets

    if min(len(real), len(fake)) < 4:
        return None, None
    size = subset_size or min(len(real), len(fake)) // 2
    values = mmd2_subsets(real, fake, degree=KPD_DEGREE, num_subsets=KPD_SUBSETS, subset_size=size,
                          seed=seed).numpy()
    low, high = np.percentile(values, [16.275, 83.725])
    return float(np.median(values)), float((high - low) / 2)


# ---------------------------------------------------------------------------
# Classifier two-sample test

def auc_with_interval(labels: np.ndarray, scores: np.ndarray, seed: int = 0) -> dict:
    """ROC AUC (label 1 scored higher than label 0) and its 95 % bootstrap interval, each class resampled
    with replacement: {"auc", "auc_low", "auc_high", "num": frames per class}.

    The AUC is the mean over (generated, real) pairs of 1 when the generated frame scores higher, ½ on a
    tie; a resample weights each pair by how often it drew both frames, so all resamples are one product
    of their multinomial counts with that pair matrix."""
    positive, negative = scores[labels == 1], scores[labels == 0]
    wins = (positive[:, None] > negative[None, :]) + 0.5 * (positive[:, None] == negative[None, :])
    rng = np.random.default_rng(seed)
    draws_p = rng.multinomial(len(positive), np.full(len(positive), 1 / len(positive)), BOOTSTRAP_RESAMPLES)
    draws_n = rng.multinomial(len(negative), np.full(len(negative), 1 / len(negative)), BOOTSTRAP_RESAMPLES)
    resampled = np.einsum("bi,ij,bj->b", draws_p, wins, draws_n) / (len(positive) * len(negative))
    low, high = np.percentile(resampled, [2.5, 97.5])
    return {"auc": float(wins.mean()), "auc_low": float(low), "auc_high": float(high), "num": int(len(negative))}


def classifier_two_sample_test(real_frames: np.ndarray, fake_frames: np.ndarray, real_vectors: np.ndarray,
                               fake_vectors: np.ndarray, *, seed: int = 0, cnn_epochs: int = CNN_EPOCHS) -> dict:
    """Both classifiers, FOLDS-fold (fewer below FOLDS frames a side), on all of the smaller set and as many
    frames of the other (a random subset). {"cnn": auc_with_interval, "trees": ..., "details": {"labels",
    "scores": {name: out-of-fold scores}, "rows": the frame of each row (real rows index the real set,
    generated rows the generated set)}}."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold

    from eval.frame_cnn import fit_frame_cnn, predict

    rng = np.random.default_rng(seed)
    n = min(len(real_frames), len(fake_frames))
    if n < 2:
        raise ValueError(f"the classifier test needs at least 2 frames a side, got {len(real_frames)} real and "
                         f"{len(fake_frames)} generated")
    real_rows = np.sort(rng.choice(len(real_frames), n, replace=False))
    fake_rows = np.sort(rng.choice(len(fake_frames), n, replace=False))
    frames = np.concatenate([real_frames[real_rows], fake_frames[fake_rows]]).astype(np.float32)
    vectors = np.concatenate([real_vectors[real_rows], fake_vectors[fake_rows]])
    labels = np.r_[np.zeros(n), np.ones(n)]
    scores = {name: np.zeros(2 * n) for name in CLASSIFIERS}

    def bce(outputs, targets):
        return torch.nn.functional.binary_cross_entropy_with_logits(outputs[:, 0], targets)

    split = StratifiedKFold(min(FOLDS, n), shuffle=True, random_state=seed).split(vectors, labels)
    for fold, (train, test) in enumerate(split):
        batch = min(CNN_BATCH, len(train))
        model = fit_frame_cnn(frames[train], torch.from_numpy(labels[train]).float(), bce, outputs=1,
                              steps=math.ceil(cnn_epochs * len(train) / batch), seed=seed + fold, batch_size=batch,
                              width=CNN_WIDTH, augment_shift=0)
        scores["cnn"][test] = predict(model, frames[test])[:, 0].numpy()
        trees = HistGradientBoostingClassifier(random_state=seed + fold).fit(vectors[train], labels[train])
        scores["trees"][test] = trees.predict_proba(vectors[test])[:, 1]
    result = {name: auc_with_interval(labels, scores[name], seed) for name in CLASSIFIERS}
    result["details"] = {"labels": labels, "scores": scores, "rows": np.r_[real_rows, fake_rows]}
    return result


# ---------------------------------------------------------------------------
# The tests against a real set

def independent_real_frames(path: str, resolution: int, count: int, label_exclude=()) -> torch.Tensor | None:
    """`count` frames of a `builtin:` set rendered afresh (another seed: other hits and tracks, the same
    physics) at `resolution`, for the floor; None for a user's data, or a built-in set with a band left
    out of training (`data.label_exclude`: a fresh set would hold the band)."""
    from eval.conditional import FRESH_SEED_STRIDE
    from training.data import BUILTIN_PREFIX, load_images, parse_builtin

    if not path.startswith(BUILTIN_PREFIX) or label_exclude:
        return None
    name, options = parse_builtin(path)
    seed = options["seed"] + FRESH_COPY * FRESH_SEED_STRIDE
    return load_images(f"{BUILTIN_PREFIX}{name}?count={count}&seed={seed}", resolution, 1)


class PhysicsTests:
    """The real side of the tests, computed once; `report` scores a generated set against it.

    Args:
        real_frames:   [N, C, H, W] or [N, H, W] in data units (the training frames)
        second_real:   an independent real set for the floor (`independent_real_frames`); None: the
                       floor compares two random halves of the real frames
        normalization: the set's mapping (training/normalize.py), for `report_generated`
        threshold:     data units; default Otsu's on the real pixels (as eval/stats.py)
        seed:          the halves, the subsets, the folds and the classifiers' initialization
    """

    def __init__(self, real_frames, second_real=None, normalization=None, threshold: float | None = None,
                 seed: int = 0):
        self.real = single_channel(real_frames)
        if len(self.real) < 2:
            raise ValueError(f"the physics tests need at least 2 real frames, got {len(self.real)}")
        self.frame_shape = tuple(real_frames.shape[1:])
        self.normalization, self.seed = normalization, seed
        self.threshold = otsu_threshold(self.real) if threshold is None else float(threshold)
        vectors = reader_features(self.real, self.threshold)
        scale = vectors.std(0)
        self.center, self.scale = vectors.mean(0), np.where(scale > 0, scale, 1.0)
        self.real_side = self._side(self.real)
        if second_real is not None:
            self.floor_sides = (self.real_side, self._side(single_channel(second_real)))
            self.floor_kind = (f"the real frames against {len(second_real)} rendered afresh with another seed "
                               f"(an ideal generator)")
        else:
            order = np.random.default_rng(seed).permutation(len(self.real))
            half = len(self.real) // 2
            self.floor_sides = tuple(self._side(self.real[np.sort(rows)])
                                     for rows in (order[:half], order[half:2 * half]))
            self.floor_kind = f"two random halves of the real frames ({half} against {half})"
        self.floor = self._compare(*self.floor_sides)
        self.classifier_floor = None

    def _side(self, frames: np.ndarray) -> dict:
        """A set's frames, their eval/stats.py features and their feature vectors standardized by the real set's
        mean and spread."""
        return {"frames": frames, "features": frame_features(frames, self.threshold),
                "vectors": (reader_features(frames, self.threshold) - self.center) / self.scale}

    def _compare(self, real: dict, fake: dict) -> dict:
        """The cheap tests of one pair of sides: separation powers, FPD, KPD."""
        result = {"separation_power": {key: separation_power(real["features"][key], fake["features"][key])
                                       for key in DISTRIBUTIONS}}
        result["fpd"], result["fpd_error"] = fpd(real["vectors"], fake["vectors"], seed=self.seed)
        result["kpd"], result["kpd_error"] = kpd(real["vectors"], fake["vectors"], seed=self.seed)
        return result

    def report(self, fake_frames) -> dict:
        """The cheap tests of generated frames (data units) beside their floors: {"separation_power": {...},
        "fpd", "fpd_error", "kpd", "kpd_error", "floor": {the same}, "floor_kind", "num_real", "num_fake",
        "num_floor", "threshold"}."""
        fake = self._side(single_channel(fake_frames))
        return {**self._compare(self.real_side, fake), "floor": self.floor, "floor_kind": self.floor_kind,
                "num_real": len(self.real), "num_fake": len(fake["frames"]),
                "num_floor": [len(side["frames"]) for side in self.floor_sides], "threshold": self.threshold}

    def report_generated(self, images: torch.Tensor) -> dict:
        """`report` of network outputs in [-1, 1], taken to data units by the normalization."""
        return self.report(self.normalization.inverse(images))

    def classifier_report(self, fake_frames) -> dict:
        """The classifier two-sample tests of generated frames (data units) and of the floor's two real sets:
        {"cnn": {"auc", "auc_low", "auc_high", "num"}, "trees": {...}, "floor": {"cnn", "trees"}} (the floor's
        test runs once, at the first call). `self.classifier_details` keeps the out-of-fold scores for the plots."""
        def test(real: dict, fake: dict) -> dict:
            return classifier_two_sample_test(real["frames"], fake["frames"], real["vectors"], fake["vectors"],
                                              seed=self.seed)

        if self.classifier_floor is None:  # the real sets' test, once
            self.classifier_floor = test(*self.floor_sides)
        fake = self._side(single_channel(fake_frames))
        found = test(self.real_side, fake)
        self.classifier_details = (fake["frames"], found.pop("details"), self.classifier_floor["details"])
        return {**found, "floor": {name: self.classifier_floor[name] for name in CLASSIFIERS}}


# ---------------------------------------------------------------------------
# Plots

def plot_roc(details: dict, floor_details: dict, path: str) -> None:
    """Each classifier's ROC curve on the generated frames (solid) and on the floor's real sets (dashed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for (name, label), color in zip(CLASSIFIERS.items(), ("C0", "C1")):
        for found, style, which in ((details, "-", "generated"), (floor_details, "--", "real vs real")):
            false_positive, true_positive, _ = roc_curve(found["labels"], found["scores"][name])
            auc = roc_auc_score(found["labels"], found["scores"][name])
            ax.plot(false_positive, true_positive, style, color=color, label=f"{label}, {which}: AUC {auc:.3f}")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set_xlabel("real frames called generated")
    ax.set_ylabel("generated frames called generated")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_surest(real: np.ndarray, fake: np.ndarray, details: dict, name: str, path: str) -> None:
    """The SUREST generated frames the classifier `name` is surest are fake beside the SUREST real frames it
    is surest are real, on one grey scale (the real pixels' 0.1 .. 99.9 % range)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from training.images import make_grid

    labels, scores, rows = details["labels"], details["scores"][name], details["rows"]
    fakes = np.flatnonzero(labels == 1)[np.argsort(-scores[labels == 1])][:SUREST]
    reals = np.flatnonzero(labels == 0)[np.argsort(scores[labels == 0])][:SUREST]
    low, high = np.percentile(real, [0.1, 99.9])

    def grid(frames):
        scaled = np.clip((frames - low) / max(high - low, 1e-12) * 255, 0, 255).round().astype(np.uint8)
        return make_grid(torch.from_numpy(scaled[:, None]), columns=4)

    fig, axes = plt.subplots(1, 2, figsize=(8, 4.4))
    for ax, image, title in ((axes[0], grid(fake[rows[fakes]]), "generated, surest fake"),
                             (axes[1], grid(real[rows[reals]]), "real, surest real")):
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"{CLASSIFIERS[name]}: what gives the fakes away", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_plots(tests: PhysicsTests, report: dict, fake_frames, out_dir: str) -> None:
    """Everything --plots draws, for `report` of `fake_frames` (data units) against `tests`' real frames."""
    notes = {key: f"separation power {_number(report['separation_power'][key])} "
                  f"(real vs real {_number(report['floor']['separation_power'][key])})" for key in DISTRIBUTIONS}
    plot_overlays(tests.real, single_channel(fake_frames), tests.threshold, out_dir, notes=notes)
    if "classifier" in report:
        fake, details, floor_details = tests.classifier_details
        plot_roc(details, floor_details, os.path.join(out_dir, "roc.png"))
        for name in CLASSIFIERS:
            plot_surest(tests.real, fake, details, name, os.path.join(out_dir, f"surest_{name}.png"))


# ---------------------------------------------------------------------------
# Command line

def _number(value, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}g}"


def format_report(report: dict) -> str:
    floor = report["floor"]

    def with_error(found, key):
        return f"{_number(found[key])} ± {_number(found[key + '_error'], 2)}" if found[key] is not None else "–"

    def auc(found):
        return f"{found['auc']:.3f} [{found['auc_low']:.3f}, {found['auc_high']:.3f}]"

    lines = [f"{'test':44s} {'generated':>22s} {'real vs real':>22s}"]
    lines += [f"{'separation power, ' + label:44s} {_number(report['separation_power'][key]):>22s} "
              f"{_number(floor['separation_power'][key]):>22s}" for key, label in DISTRIBUTIONS.items()]
    lines += [f"{name + ' (standardized features)':44s} {with_error(report, key):>22s} {with_error(floor, key):>22s}"
              for key, name in (("fpd", "FPD"), ("kpd", "KPD"))]
    if "classifier" in report:
        classifier = report["classifier"]
        lines += [f"{'classifier AUC, ' + label:44s} {auc(classifier[name]):>22s} {auc(classifier['floor'][name]):>22s}"
                  for name, label in CLASSIFIERS.items()]
    lines.append(f"threshold {report['threshold']:.4g}; {report['num_real']} real frames, {report['num_fake']} "
                 f"generated; floor: {report['floor_kind']}")
    if "classifier" in report:
        lines.append(f"classifiers: {FOLDS}-fold, {report['classifier']['cnn']['num']} real against as many "
                     f"generated (floor: {report['classifier']['floor']['cnn']['num']} against as many); "
                     f"95 % bootstrap intervals; 0.5 is chance")
        classifier = report["classifier"]
        below = [label for name, label in CLASSIFIERS.items()
                 if classifier[name]["auc_high"] < min(0.5, classifier["floor"][name]["auc_low"])]
        if below:
            lines.append(f"AUC below chance and its floor ({', '.join(below)}): generated frames may repeat real "
                         f"ones; look for copies with eval/memorization.py")
    lines.append(f"{report['seconds']:.1f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The physics community's tests of generated frames against real "
                                                 "ones (separation power, FPD/KPD, classifier AUC), each beside "
                                                 "its real-vs-real floor.")
    add_frame_arguments(parser)
    parser.add_argument("--no-classifier", action="store_true", help="only the cheap tests (separation power, "
                        "FPD, KPD): no classifier is trained")
    parser.add_argument("--plots", metavar="DIR", help="write ROC curves, annotated histogram overlays and the "
                        "frames each classifier is surest about")
    args = parser.parse_args(argv)
    check_frame_arguments(parser, args)

    from eval.fid import EvalError

    def compute() -> dict:
        started = time.perf_counter()
        real, fake, data = compared_frames(args)
        second = independent_real_frames(data["path"], real.shape[-1], len(fake), data.get("label_exclude") or ())
        if second is None and len(real) < 4:
            raise EvalError(f"{len(real)} real frames: the floor's two halves need at least 2 frames each")
        tests = PhysicsTests(real, second, threshold=args.threshold, seed=args.seed)
        report = tests.report(fake)
        if not args.no_classifier:
            report["classifier"] = tests.classifier_report(fake)
        report["seconds"] = time.perf_counter() - started
        if args.plots:
            write_plots(tests, report, fake, args.plots)
        return report

    return report_command(compute, format_report, args.json, args.plots)


if __name__ == "__main__":
    sys.exit(main())
