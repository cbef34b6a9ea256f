"""Does a generated frame show the setting it was asked for? A conditional checkpoint, label by label.

    python eval/conditional.py --ckpt CKPT [--num-samples N] [--bins 5] [--band energy=2.5:3.5] [--fid]
                               [--reader features|cnn] [--reader-frames N] [--json] [--plots DIR]

Generated frames are asked for labels drawn from the training set's (exactly the frames
`eval/generate.py --ckpt CKPT --num N` writes with the same seed) and taken to data units. Each frame
is reduced to the per-frame statistics of eval/stats.py (total intensity, occupancy, clusters per
frame, at Otsu's threshold of the real pixels). Three questions:

- response curves: for each continuous label, its training range cut into `--bins` equal bins; per
  bin the mean and spread of each statistic over the generated frames asked for labels in the bin
  and over the real frames labelled there, |mean generated - mean real| beside the real-vs-real
  floor: the same difference between the real set and a second real set, averaged over FLOOR_DRAWS
  (5) second sets, since a single draw can land near zero by chance. For `builtin:particles-cond`
  each second set is rendered afresh at the generated frames' labels (other hits and tracks, the very
  settings asked for: what an ideal generator would score); for a user's data they are random splits
  of the real set into two halves (so the floor compares half-size sets). `ratio` per label and
  statistic: the sum over bins of the differences over the sum of the floors (about 1: as far from
  the real set as real frames are; the per-bin numbers are noisier);
- label fidelity: a reader trained on the real frames to read every label from a frame (a regression
  per continuous label, a classifier per discrete one), applied to the generated frames: R²
  (continuous) / accuracy (discrete) against the labels they were asked for, beside the same reader's
  on real frames it never saw (for the built-in set: the second set, rendered at the same labels; for a
  user's data: a quarter of the real frames, held out of the reader's training). Each continuous
  label's R² also within each class of each discrete label: a label that only some classes show (the
  built-in field bends tracks, and only the `tracks` class has them) is judged where it shows. The
  reader: `--reader features` (default; `LabelReader`: a small network on `reader_features`, the
  per-frame statistics, pixel quantiles and power spectrum; seconds, and blind to shapes) or `--reader
  cnn` (eval/frame_cnn.py's FrameCNN on the pixels; minutes on a CPU, and it sees a track's curvature).
  A few hundred real frames may be too few for a reader to learn a faint label; on the built-in set
  `--reader-frames N` trains it on N frames rendered afresh at labels drawn from the real rows instead;
- per class of each discrete label: the statistics of eval/stats.py (Wasserstein-1 distances with
  their two-halves floors) between the generated and real frames of the class, with their counts;
  with `--fid` also FID and KID (Inception; slow on a CPU, and strongly biased at a few hundred
  frames per class: read KID);
- `--band NAME=LOW:HIGH` (built-in set only): frames generated with NAME spread evenly over the band,
  the other labels drawn from the training set's, against frames rendered afresh at the same labels
  (floor: a second rendered set): the statistics' means and the label read back by the reader. Made
  for a checkpoint trained with the band left out (`data.label_exclude`): do its frames between the
  seen settings show them?

Training's periodic evaluation of a conditional run logs `training_metrics` (the response ratios and
the fidelities) beside FID/KID.

`--json` prints one JSON object on the last line: {"num_generated", "num_real", "threshold", "floor",
"response": {label: {"bins": [[lo, hi], ...], "statistics": {stat: {"generated_mean": [...],
"generated_std", "real_mean", "real_std", "num_generated", "num_real", "difference", "floor",
"ratio"}}}}, "reader", "fidelity": {label: {"kind", "generated", "real", "chance", "num_real", ["by_class":
{discrete label: {class: {"generated", "real", "num_generated", "num_real"}}}]}}, "classes": {label: {class:
{"num_generated", "num_real", "stats": {eval/stats.py's report}, ["fid", "kid", "kid_std"]}}},
["band": {...}], "seconds"}; a number that is undefined (an empty bin) is null. A checkpoint trained
without labels, or bad input, is a one-line error with exit status 2.
"""

import os
import sys

if __package__ in (None, ""):
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse
import time
from types import SimpleNamespace
from typing import Callable

import numpy as np
import torch
from torch import nn

from eval.stats import (PER_FRAME, FrameStatistics, otsu_threshold, per_frame_statistics, report_command,
                        reader_features, single_channel)
from training.labels import LabelEncoding

UNREADABLE_R2 = 0.2              # below this R² on real frames (or chance + 0.1 accuracy) the fidelity says nothing
UNREADABLE_ACCURACY_GAIN = 0.1
RENDER_ARGUMENT = {"energy": "energy", "field": "field", "type": "kind"}  # label -> render_conditional_frame's
FRESH_SEED_STRIDE = 1000  # copy k of the built-in set is rendered with seed data_seed + k * FRESH_SEED_STRIDE
# The built-in set's content sets: 1 and 31-34 the floor's second sets (1 also the reader's real frames), 2-3 the
# band's, 5 the reader's training frames when rendered; benchmarks/utility.py uses 4 and 10 on.
FLOOR_COPIES = (1, 31, 32, 33, 34)
FLOOR_DRAWS = len(FLOOR_COPIES)  # second sets per floor: rendered copies, or splits into halves of a user's data
READER_COPY = 5
READERS = ("features", "cnn")


def _subset(values: dict[str, list], rows: np.ndarray) -> dict[str, list]:
    return {name: [column[i] for i in rows] for name, column in values.items()}


def _mean_std(samples: np.ndarray) -> tuple[float | None, float | None]:
    return (float(samples.mean()), float(samples.std(ddof=1))) if len(samples) >= 2 else (None, None)


# ---------------------------------------------------------------------------
# Reading the labels back from a frame

def label_loss(encoding: LabelEncoding, out: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """A reader's loss against encoded labels c: squared error on each continuous label, cross-entropy on
    each discrete one, summed."""
    total, at = 0.0, 0
    for column in encoding.columns:
        block, target = out[:, at:at + column.width], c[:, at:at + column.width]
        if column.kind == "continuous":
            total = total + ((block - target) ** 2).mean()
        else:
            total = total + nn.functional.cross_entropy(block, target.argmax(1))
        at += column.width
    return total


class LabelReader(nn.Module):
    """A small network reading every label from a frame's `reader_features`: one output per continuous
    label (its encoded value, about [-1, 1]) and one logit per class, in the encoding's order, so
    `encoding.decode` reads its output. Fast (seconds), and blind to shapes: the features are unchanged
    by rotations, so a label that only bends a track is out of its sight.

    Args:
        encoding:   the checkpoint's label encoding
        features:   the real frames' features [N, F]: their mean and spread standardize every input
        hidden:     width of the hidden layer
    """

    def __init__(self, encoding: LabelEncoding, features: np.ndarray, hidden: int = 16):
        super().__init__()
        self.encoding = encoding
        self.register_buffer("mean", torch.from_numpy(features.mean(0)).float())
        self.register_buffer("std", torch.from_numpy(features.std(0) + 1e-12).float())
        self.net = nn.Sequential(nn.Linear(features.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, encoding.c_dim))

    def forward(self, features: np.ndarray) -> torch.Tensor:
        return self.net((torch.from_numpy(np.asarray(features)).float() - self.mean) / self.std)

    def fit(self, features: np.ndarray, c: torch.Tensor, steps: int = 500) -> "LabelReader":
        """Full-batch training on the real frames' features and encoded labels c."""
        optimizer = torch.optim.Adam(self.parameters(), lr=1e-2, weight_decay=1e-2)
        self.train()
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            label_loss(self.encoding, self(features), c).backward()
            optimizer.step()
        return self.eval()

    @torch.no_grad()
    def read(self, features: np.ndarray) -> dict[str, list]:
        """The labels read from frames' features, as label values."""
        return self.encoding.decode(self(features))


class FeatureReader:
    """`--reader features`: a LabelReader on `reader_features` at the real pixels' threshold."""

    def __init__(self, encoding: LabelEncoding, threshold: float, frames: np.ndarray, c: torch.Tensor, seed: int):
        self.threshold = threshold
        features = reader_features(frames, threshold)
        with torch.random.fork_rng(devices=[]):  # the reader's initialization leaves the caller's RNG alone
            torch.manual_seed(seed)
            self.model = LabelReader(encoding, features)
        self.model.fit(features, c)

    def read(self, frames: np.ndarray) -> dict[str, list]:
        return self.model.read(reader_features(frames, self.threshold))


class CNNReader:
    """`--reader cnn`: eval/frame_cnn.py's FrameCNN reading every label from the pixels, so it sees shapes
    (a track's curvature) the features cannot. Minutes on a CPU. Trained with random flips and shifts of up
    to 1/16 of the frame where the run trained with both flips (its labels then do not depend on
    orientation), without augmentation otherwise."""

    def __init__(self, encoding: LabelEncoding, frames: np.ndarray, c: torch.Tensor, seed: int, steps: int,
                 flips: bool):
        from eval.frame_cnn import fit_frame_cnn

        self.encoding = encoding
        augment = max(1, frames.shape[-1] // 16) if flips else None
        self.model = fit_frame_cnn(frames, c, lambda out, target: label_loss(encoding, out, target),
                                   outputs=encoding.c_dim, steps=steps, seed=seed, augment_shift=augment)

    def read(self, frames: np.ndarray) -> dict[str, list]:
        from eval.frame_cnn import predict

        return self.encoding.decode(predict(self.model, frames))


def fidelity_scores(encoding: LabelEncoding, asked: dict[str, list], read: dict[str, list]) -> dict[str, float]:
    """{label: R² (continuous) or accuracy (discrete)} of labels read back against the labels asked for."""
    scores = {}
    for column in encoding.columns:
        if column.kind == "continuous":
            truth, guess = np.asarray(asked[column.name], np.float64), np.asarray(read[column.name], np.float64)
            spread = ((truth - truth.mean()) ** 2).sum()
            scores[column.name] = float(1 - ((guess - truth) ** 2).sum() / spread) if spread > 0 else None
        else:
            scores[column.name] = float(np.mean([str(a) == str(b) for a, b in zip(asked[column.name],
                                                                                   read[column.name])]))
    return scores


# ---------------------------------------------------------------------------
# The evaluation

class ConditionalEvaluation:
    """The real side of the conditional evaluation, computed once; `report` scores generated frames.

    Args:
        encoding:      the checkpoint's label encoding
        real_frames:   [N, C, H, W] or [N, H, W] in data units
        real_values:   {label: N values}, the real frames' labels
        render:        (values, copy) -> frames in data units at those labels, content set `copy` (1, 2, ...)
                       different from the real set's; None for a user's data (floor from two halves)
        bins:          bins per continuous label over its training range
        seed:          the halves, the held-out quarter, the reader's frames and its initialization
        reader:        "features" (LabelReader: seconds) or "cnn" (CNNReader: minutes, sees shapes)
        reader_frames: built-in set only: train the reader on this many frames rendered afresh (content set
                       READER_COPY) at labels drawn from the real rows, instead of on the real frames; 0: the
                       real frames
        reader_steps:  the CNN reader's training steps
        flips:         whether the run trained with both flips (the CNN reader then trains with them)
    """

    def __init__(self, encoding: LabelEncoding, real_frames, real_values: dict[str, list], *,
                 render: Callable | None = None, bins: int = 5, seed: int = 0, reader: str = "features",
                 reader_frames: int = 0, reader_steps: int = 6000, flips: bool = True):
        if not encoding.c_dim:
            raise ValueError("the conditional evaluation needs labels (an encoding with c_dim > 0)")
        if reader not in READERS:
            raise ValueError(f"reader must be one of {', '.join(READERS)}, got {reader!r}")
        if reader_frames and render is None:
            raise ValueError("--reader-frames renders the reader's training frames: it needs the built-in labelled "
                             "set (builtin:particles-cond)")
        self.encoding, self.render, self.bins, self.reader_kind = encoding, render, bins, reader
        self.real = single_channel(real_frames)
        self.real_values = {name: list(real_values[name]) for name in encoding.names}
        self.threshold = otsu_threshold(self.real)
        self.real_statistics = per_frame_statistics(self.real, self.threshold)
        if render is not None:  # the floor and the reader's test set are rendered at each report's labels
            train_rows = np.arange(len(self.real))
        else:
            order = np.random.default_rng(seed).permutation(len(self.real))
            self.floor_pairs = []  # FLOOR_DRAWS splits into two halves, the first by `order`
            for draw in range(FLOOR_DRAWS):
                split = order if draw == 0 else np.random.default_rng([seed, draw]).permutation(len(self.real))
                halves = split[:len(split) // 2], split[len(split) // 2:2 * (len(split) // 2)]
                self.floor_pairs.append(tuple((_subset(self.real_values, rows),
                                               {k: v[rows] for k, v in self.real_statistics.items()})
                                              for rows in halves))
            quarter = max(len(order) // 4, 1)
            train_rows, held_out = np.sort(order[quarter:]), np.sort(order[:quarter])
        if reader_frames:
            drawn = np.random.default_rng([seed, READER_COPY]).integers(len(self.real), size=reader_frames)
            reader_values = _subset(self.real_values, drawn)
            reader_training = single_channel(render(reader_values, READER_COPY))
        else:
            reader_values, reader_training = _subset(self.real_values, train_rows), self.real[train_rows]
        self.reader_source = (f"{reader_frames} frames rendered afresh" if reader_frames else
                              f"{len(reader_training)} real frames")
        c = encoding.encode(reader_values)
        self.reader = (FeatureReader(encoding, self.threshold, reader_training, c, seed) if reader == "features" else
                       CNNReader(encoding, reader_training, c, seed, reader_steps, flips))
        if render is None:
            self.held_out_values = _subset(self.real_values, held_out)
            self.held_out_read = self.read(self.real[held_out])

    @property
    def floor_kind(self) -> str:
        return (f"two random halves of the real set, {FLOOR_DRAWS} splits" if self.render is None else
                f"the real set against frames rendered afresh at the generated frames' labels, {FLOOR_DRAWS} sets")

    def read(self, frames: np.ndarray) -> dict[str, list]:
        """The labels the reader reads from single-channel frames [N, H, W]."""
        return self.reader.read(frames)

    def bin_edges(self, name: str) -> np.ndarray:
        column = self.encoding.columns[self.encoding.names.index(name)]
        return np.linspace(column.low, column.high, self.bins + 1)

    def _bin_of(self, name: str, values: list) -> np.ndarray:
        return np.clip(np.digitize(np.asarray(values, np.float64), self.bin_edges(name)) - 1, 0, self.bins - 1)

    def response(self, name: str, generated_values: dict, generated_statistics: dict, floor_pairs: list) -> dict:
        """The response curves of one continuous label: per bin and statistic, generated against real; the
        floor: the same difference between two real sets, averaged over `floor_pairs` (pairs of (values,
        statistics)): one draw of a difference can land near zero by chance, the mean of a few cannot."""
        edges = self.bin_edges(name)
        real_bin, generated_bin = self._bin_of(name, self.real_values[name]), self._bin_of(name,
                                                                                           generated_values[name])
        binned_pairs = [tuple((self._bin_of(name, values[name]), statistics) for values, statistics in pair)
                        for pair in floor_pairs]
        curves = {}
        for key in PER_FRAME:
            curve = {field: [] for field in ("generated_mean", "generated_std", "real_mean", "real_std",
                                             "num_generated", "num_real", "difference", "floor")}
            for b in range(self.bins):
                generated = generated_statistics[key][generated_bin == b]
                real = self.real_statistics[key][real_bin == b]
                floors = []
                for (bin_a, statistics_a), (bin_b, statistics_b) in binned_pairs:
                    a, second = statistics_a[key][bin_a == b], statistics_b[key][bin_b == b]
                    if len(a) >= 2 and len(second) >= 2:
                        floors.append(abs(float(a.mean()) - float(second.mean())))
                (g_mean, g_std), (r_mean, r_std) = _mean_std(generated), _mean_std(real)
                defined = g_mean is not None and r_mean is not None and len(floors) > 0
                curve["generated_mean"].append(g_mean)
                curve["generated_std"].append(g_std)
                curve["real_mean"].append(r_mean)
                curve["real_std"].append(r_std)
                curve["num_generated"].append(int(len(generated)))
                curve["num_real"].append(int(len(real)))
                curve["difference"].append(abs(g_mean - r_mean) if defined else None)
                curve["floor"].append(float(np.mean(floors)) if defined else None)
            pairs = [(d, f) for d, f in zip(curve["difference"], curve["floor"]) if d is not None]
            floor_sum = sum(f for _, f in pairs)
            curve["ratio"] = sum(d for d, _ in pairs) / floor_sum if pairs and floor_sum > 0 else None
            curves[key] = curve
        return {"bins": [[float(edges[b]), float(edges[b + 1])] for b in range(self.bins)], "statistics": curves}

    def per_class(self, name: str, generated: np.ndarray, generated_values: dict) -> dict:
        """eval/stats.py's statistics of each class of one discrete label, generated against real."""
        column = self.encoding.columns[self.encoding.names.index(name)]
        result = {}
        for label in column.classes:
            real_rows = np.flatnonzero([str(v) == label for v in self.real_values[name]])
            generated_rows = np.flatnonzero([str(v) == label for v in generated_values[name]])
            entry = {"num_generated": int(len(generated_rows)), "num_real": int(len(real_rows)), "stats": None}
            if len(real_rows) >= 2 and len(generated_rows) >= 1:
                statistics = FrameStatistics(self.real[real_rows], threshold=self.threshold)
                entry["stats"] = statistics.report(generated[generated_rows])
            result[label] = entry
        return result

    def report(self, generated_frames, generated_values: dict[str, list]) -> dict:
        """Generated frames (data units) asked for `generated_values`, against the real side."""
        generated = single_channel(generated_frames)
        generated_values = {name: list(generated_values[name]) for name in self.encoding.names}
        statistics = per_frame_statistics(generated, self.threshold)
        read_generated = self.read(generated)
        if self.render is not None:
            # What an ideal generator would score: real frames rendered afresh at the very labels asked for.
            rendered = [single_channel(self.render(generated_values, copy)) for copy in FLOOR_COPIES]
            floor_pairs = [((self.real_values, self.real_statistics),
                            (generated_values, per_frame_statistics(frames, self.threshold))) for frames in rendered]
            real_asked, real_read = generated_values, self.read(rendered[0])
        else:
            floor_pairs, real_asked, real_read = self.floor_pairs, self.held_out_values, self.held_out_read
        fidelity_generated = fidelity_scores(self.encoding, generated_values, read_generated)
        fidelity_real = fidelity_scores(self.encoding, real_asked, real_read)
        num_real = len(next(iter(real_asked.values())))
        report = {"num_generated": len(generated), "num_real": len(self.real), "threshold": self.threshold,
                  "floor": self.floor_kind, "reader": f"{self.reader_kind}, trained on {self.reader_source}",
                  "response": {}, "fidelity": {}, "classes": {}}
        for column in self.encoding.columns:
            if column.kind == "continuous":
                report["response"][column.name] = self.response(column.name, generated_values, statistics,
                                                                floor_pairs)
                chance = None
            else:
                report["classes"][column.name] = self.per_class(column.name, generated, generated_values)
                chance = 1 / len(column.classes)
            report["fidelity"][column.name] = {"kind": column.kind, "generated": fidelity_generated[column.name],
                                               "real": fidelity_real[column.name], "chance": chance,
                                               "num_real": num_real}
            if column.kind == "continuous":
                report["fidelity"][column.name]["by_class"] = self.fidelity_by_class(
                    column.name, (generated_values, read_generated), (real_asked, real_read))
        return report

    def fidelity_by_class(self, name: str, generated: tuple[dict, dict], real: tuple[dict, dict]) -> dict:
        """A continuous label's R² within each class of each discrete label, generated (asked, read) against
        real (asked, read): a label only some classes show (a field that bends tracks) is judged where it
        shows. {discrete label: {class: {"generated", "real", "num_generated", "num_real"}}}."""
        result = {}
        for column in self.encoding.columns:
            if column.kind != "discrete":
                continue
            result[column.name] = {}
            for label in column.classes:
                entry = result[column.name][label] = {}
                for side, (asked, read) in (("generated", generated), ("real", real)):
                    rows = np.flatnonzero([str(v) == label for v in asked[column.name]])
                    entry[side] = (fidelity_scores(self.encoding, _subset(asked, rows), _subset(read, rows))[name]
                                   if len(rows) >= 2 else None)
                    entry[f"num_{side}"] = int(len(rows))
        return result

    def band(self, name: str, low: float, high: float, generated_frames, generated_values: dict[str, list]) -> dict:
        """Generated frames asked for labels with `name` inside [low, high] against frames rendered afresh at
        the same labels (floor: a second rendered set): each statistic's mean and the label read back."""
        if self.render is None:
            raise ValueError("--band compares with frames rendered afresh: it needs the built-in labelled set "
                             "(builtin:particles-cond)")
        generated = single_channel(generated_frames)
        rendered = [single_channel(self.render(generated_values, copy)) for copy in (2, 3)]
        sets = [generated, *rendered]
        statistics = [per_frame_statistics(frames, self.threshold) for frames in sets]
        read = [np.asarray(self.read(frames)[name], np.float64) for frames in sets]
        truth = np.asarray(generated_values[name], np.float64)
        result = {"label": name, "range": [low, high], "num": len(generated), "statistics": {}}
        for key in PER_FRAME:
            means = [float(s[key].mean()) for s in statistics]
            result["statistics"][key] = {"generated_mean": means[0], "rendered_mean": means[1],
                                         "difference": abs(means[0] - means[1]), "floor": abs(means[1] - means[2])}
        result["read"] = {"generated_mean": float(read[0].mean()), "rendered_mean": float(read[1].mean()),
                          "generated_rmse": float(np.sqrt(((read[0] - truth) ** 2).mean())),
                          "rendered_rmse": float(np.sqrt(((read[1] - truth) ** 2).mean()))}
        return result


def training_metrics(evaluation: ConditionalEvaluation, sampler, normalization, num_samples: int,
                     batch_size: int = 64) -> dict:
    """The few numbers training's periodic evaluation logs for a conditional generator: per continuous
    label and statistic the response `ratio`, and per label the fidelity on generated frames beside
    real ones ({"response/<label>/<statistic>": ..., "fidelity/<label>/generated": ..., ".../real": ...})."""
    from eval.generate import generate_data_units

    indices = torch.arange(num_samples)
    values = evaluation.encoding.decode(sampler.labels_for(indices))
    report = evaluation.report(generate_data_units(sampler, indices, normalization, batch_size), values)
    metrics = {f"response/{name}/{key}": curve["ratio"] for name, response in report["response"].items()
               for key, curve in response["statistics"].items()}
    for name, entry in report["fidelity"].items():
        metrics[f"fidelity/{name}/generated"], metrics[f"fidelity/{name}/real"] = entry["generated"], entry["real"]
    return metrics

def class_fid(real_uint8: torch.Tensor, generated_uint8: torch.Tensor, real_values: dict, generated_values: dict,
              encoding: LabelEncoding, device, evaluator=None) -> dict:
    """{label: {class: {"fid", "kid", "kid_std"}}} of each discrete label's classes (Inception features of
    every frame once, then split by class); a class with fewer than 2 frames on a side is left out."""
    from eval.fid import Evaluator, compute_features, scores

    evaluator = evaluator or Evaluator(real_uint8, device, precision_recall=False)
    real_features = evaluator.real_features
    generated_features = compute_features(generated_uint8, evaluator.extractor, batch_size=evaluator.batch_size,
                                          progress="generated features")
    result = {}
    for column in encoding.columns:
        if column.kind != "discrete":
            continue
        result[column.name] = {}
        for label in column.classes:
            real_rows = [i for i, v in enumerate(real_values[column.name]) if str(v) == label]
            generated_rows = [i for i, v in enumerate(generated_values[column.name]) if str(v) == label]
            if len(real_rows) >= 2 and len(generated_rows) >= 2:
                score = scores(real_features[real_rows], generated_features[generated_rows], precision_recall=False,
                               device=device)
                result[column.name][label] = {key: score[key] for key in ("fid", "kid", "kid_std")}
    return result


# ---------------------------------------------------------------------------
# Plots

def plot_response(report: dict, out_dir: str) -> list[str]:
    """One PNG per continuous label: each statistic's mean ± spread per bin, real and generated."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for name, response in report["response"].items():
        centers = [(lo + hi) / 2 for lo, hi in response["bins"]]
        fig, axes = plt.subplots(1, len(PER_FRAME), figsize=(4 * len(PER_FRAME), 3.4))
        for ax, (key, label) in zip(axes, PER_FRAME.items()):
            curve = response["statistics"][key]
            for side, offset, style in (("real", -0.08, "o-"), ("generated", 0.08, "s--")):
                shown = [(c, m, s) for c, m, s in zip(centers, curve[f"{side}_mean"], curve[f"{side}_std"])
                         if m is not None]
                if shown:
                    width = response["bins"][0][1] - response["bins"][0][0]
                    x, mean, std = (np.array(v, np.float64) for v in zip(*shown))
                    ax.errorbar(x + offset * width, mean, yerr=std, fmt=style, capsize=3,
                                label=f"{side} ({sum(curve[f'num_{side}'])})")
            ax.set_xlabel(name)
            ax.set_ylabel(label)
            ax.legend(fontsize=8)
        fig.suptitle(f"response to {name}: mean ± standard deviation per bin")
        fig.tight_layout()
        paths.append(os.path.join(out_dir, f"response_{name}.png"))
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    return paths


# ---------------------------------------------------------------------------
# Command line

def format_report(report: dict) -> str:
    def number(value, digits=4):
        return "–" if value is None else f"{value:.{digits}g}"

    lines = [f"{report['num_generated']} generated frames at labels drawn from the training set's, "
             f"{report['num_real']} real; floor: {report['floor']}"]
    for name, response in report["response"].items():
        lines.append(f"\nresponse to {name} (per bin: |mean generated - mean real| / real-vs-real floor)")
        lines.append(f"{'statistic':22s}" + "".join(f"{f'{lo:.3g}-{hi:.3g}':>20s}" for lo, hi in response["bins"])
                     + f"{'ratio':>8s}")
        for key, label in PER_FRAME.items():
            curve = response["statistics"][key]
            cells = [f"{number(d, 3)} / {number(f, 3)}" for d, f in zip(curve["difference"], curve["floor"])]
            lines.append(f"{label:22s}" + "".join(f"{c:>20s}" for c in cells) + f"{number(curve['ratio'], 3):>8s}")
    def verdict(real, chance) -> str:
        unreadable = real is None or real < (UNREADABLE_R2 if chance is None else chance + UNREADABLE_ACCURACY_GAIN)
        return "  (the reader cannot read it from real frames either: no verdict)" if unreadable else ""

    lines.append(f"\nlabel fidelity (a reader reads the label back; reader: {report['reader']})")
    for name, entry in report["fidelity"].items():
        measure = "R²" if entry["kind"] == "continuous" else "accuracy"
        chance = f", chance {entry['chance']:.3g}" if entry["chance"] is not None else ""
        lines.append(f"  {name:10s} {measure} generated {number(entry['generated'], 3)}, real (held out, "
                     f"{entry['num_real']}) {number(entry['real'], 3)}{chance}{verdict(entry['real'], entry['chance'])}")
        for discrete, classes in entry.get("by_class", {}).items():
            for label, within in classes.items():
                lines.append(f"    within {discrete}={label}: {measure} generated {number(within['generated'], 3)} "
                             f"({within['num_generated']}), real {number(within['real'], 3)} ({within['num_real']})"
                             f"{verdict(within['real'], None)}")
    for name, classes in report["classes"].items():
        lines.append(f"\nper class of {name} (W1 generated vs real / floor of two real halves)")
        for label, entry in classes.items():
            stats = entry["stats"]
            detail = "" if stats is None else (
                f"  total {number(stats['total_w1'], 3)}/{number(stats['floor']['total_w1'], 3)}  occupancy "
                f"{number(stats['occupancy_w1'], 3)}/{number(stats['floor']['occupancy_w1'], 3)}  clusters "
                f"{number(stats['clusters_w1'], 3)}/{number(stats['floor']['clusters_w1'], 3)}")
            fid = (f"  FID {entry['fid']:.4g}  KID {entry['kid']:.4g} ± {entry['kid_std']:.2g}" if "fid" in entry
                   else "")
            lines.append(f"  {label:10s} {entry['num_generated']:5d} generated {entry['num_real']:5d} real"
                         f"{detail}{fid}")
    if "band" in report:
        band = report["band"]
        lines.append(f"\nbetween the seen settings: {band['label']} in {band['range'][0]:g}..{band['range'][1]:g}, "
                     f"{band['num']} generated against as many rendered afresh (mean generated / rendered / floor)")
        for key, label in PER_FRAME.items():
            s = band["statistics"][key]
            lines.append(f"  {label:22s} {s['generated_mean']:.4g} / {s['rendered_mean']:.4g}  |difference| "
                         f"{s['difference']:.3g}  floor {s['floor']:.3g}")
        r = band["read"]
        lines.append(f"  {band['label']} read back: mean {r['generated_mean']:.3g} generated, {r['rendered_mean']:.3g} "
                     f"rendered; RMSE {r['generated_rmse']:.3g} generated, {r['rendered_rmse']:.3g} rendered")
    lines.append(f"\n{report['seconds']:.1f} s")
    return "\n".join(lines)


def parse_band(text: str, encoding: LabelEncoding) -> tuple[str, float, float]:
    """'energy=2.5:3.5' -> ('energy', 2.5, 3.5); a ValueError (one line) otherwise."""
    name, _, bounds = text.partition("=")
    low, _, high = bounds.partition(":")
    continuous = [c.name for c in encoding.columns if c.kind == "continuous"]
    try:
        low, high = float(low), float(high)
    except ValueError:
        low = high = None
    if name not in continuous or low is None or not high > low:
        raise ValueError(f"--band {text}: expected NAME=LOW:HIGH with LOW < HIGH and NAME a continuous label "
                         f"({', '.join(continuous) or 'this checkpoint has none'})")
    return name, low, high


def builtin_renderer(data: dict) -> Callable | None:
    """(values, copy) -> frames of `builtin:particles-cond` rendered afresh at those labels; None for other data."""
    from training import particles
    from training.data import parse_builtin
    from training.labels import builtin_has_labels

    if not builtin_has_labels(data["path"]):
        return None
    data_seed, resolution = parse_builtin(data["path"])[1]["seed"], data["resolution"]

    def render(values: dict[str, list], copy: int) -> np.ndarray:
        count = len(next(iter(values.values())))
        return np.stack([particles.render_conditional_frame(
            data_seed + copy * FRESH_SEED_STRIDE, i, resolution,
            **{RENDER_ARGUMENT[name]: column[i] for name, column in values.items() if name in RENDER_ARGUMENT})
            for i in range(count)])
    return render


def conditional_encoding(checkpoint: dict, path: str, tool: str) -> LabelEncoding:
    """The label encoding of a conditional checkpoint; an EvalError (one line) for one trained without labels."""
    from eval.fid import EvalError

    encoding = LabelEncoding.from_config(checkpoint["config"].get("data", {}))
    if not encoding.c_dim or "labels" not in checkpoint:
        raise EvalError(f"{path} was trained without labels; {tool} needs a conditional checkpoint (data.labels "
                        f"or builtin:particles-cond); score this one with eval/stats.py and eval/fid.py")
    return encoding


def training_set(data: dict, encoding: LabelEncoding) -> tuple[torch.Tensor, dict[str, list]]:
    """The frames a conditional run trained on, [N, C, H, W] in data units, and their labels {name: N values}:
    a band left out of training (data.label_exclude) stays out here too."""
    from training.data import load_frames
    from training.labels import excluded_frames, read_labels

    frames, names = load_frames(data["path"], data["resolution"], data["channels"])
    table = read_labels(SimpleNamespace(path=data["path"], labels=data.get("labels", "")), names, len(frames))
    values = {name: table[name] for name in encoding.names}
    kept = ~excluded_frames(encoding, encoding.encode(values), data.get("label_exclude") or [])
    return frames[kept], {name: [v for v, keep in zip(column, kept.tolist()) if keep]
                          for name, column in values.items()}


def generate_at(checkpoint: dict, encoded: torch.Tensor, seed: int, device, truncation: float = 1.0,
                use_ema: bool = True, batch_size: int = 64) -> torch.Tensor:
    """A conditional checkpoint's frames [N, C, H, W] in data units, sample i asked for the encoded labels in
    row i: what eval/generate.py writes for the same seed and labels."""
    from eval.generate import generate_data_units
    from training.normalize import normalization_from_config
    import nets

    sampler = nets.load_sampler(checkpoint, device, seed=seed, truncation=truncation, use_ema=use_ema,
                                labels=encoded.to(device))
    return generate_data_units(sampler, torch.arange(len(encoded)), normalization_from_config(
        checkpoint["config"].get("data", {})), batch_size, progress="generate")


def evaluate_checkpoint(args) -> dict:
    from eval.fid import EvalError
    from training.checkpoint import load_checkpoint
    from training.labels import labels_for_indices
    from training.normalize import normalization_from_config

    started = time.perf_counter()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    checkpoint = load_checkpoint(args.ckpt)
    data = checkpoint["config"].get("data", {})
    encoding = conditional_encoding(checkpoint, args.ckpt, "eval/conditional.py")
    try:
        band = parse_band(args.band, encoding) if args.band else None
    except ValueError as error:
        raise EvalError(str(error)) from None
    render = builtin_renderer(data)
    if band and render is None:
        raise EvalError(f"--band compares with frames rendered afresh at the band's labels: it needs a checkpoint "
                        f"trained on builtin:particles-cond, not {data['path']}")
    frames, real_values = training_set(data, encoding)
    normalization = normalization_from_config(data)
    try:
        evaluation = ConditionalEvaluation(encoding, frames, real_values, render=render, bins=args.bins,
                                           seed=args.seed, reader=args.reader, reader_frames=args.reader_frames,
                                           reader_steps=args.reader_steps,
                                           flips=bool(data.get("hflip", True) and data.get("vflip", True)))
    except ValueError as error:
        raise EvalError(str(error)) from None

    def generate(encoded: torch.Tensor) -> torch.Tensor:
        return generate_at(checkpoint, encoded, args.seed, device, truncation=args.truncation,
                           use_ema=not args.no_ema, batch_size=args.batch_size)

    # The rows eval/generate.py draws for the same seed: sample i asks for the training row (seed, i) picks.
    encoded = labels_for_indices(checkpoint["labels"], torch.arange(args.num_samples), args.seed)
    values = encoding.decode(encoded)
    generated = generate(encoded)
    report = evaluation.report(generated, values)
    if args.fid:
        fids = class_fid(normalization.to_uint8(frames), normalization.to_uint8(generated), real_values, values,
                         encoding, device)
        for name, classes in fids.items():
            for label, score in classes.items():
                report["classes"][name][label].update(score)
    if band:
        name, low, high = band
        band_values = dict(values)
        band_values[name] = list(low + (np.arange(args.num_samples) + 0.5) / args.num_samples * (high - low))
        band_frames = generate(encoding.encode(band_values))
        report["band"] = evaluation.band(name, low, high, band_frames, band_values)
    report["seconds"] = time.perf_counter() - started
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Does a conditional checkpoint's frame show the setting it was "
                                                 "asked for: response curves, label fidelity, per-class statistics.")
    parser.add_argument("--ckpt", required=True, help="a conditional checkpoint (trained with labels)")
    parser.add_argument("--num-samples", type=int, default=1000, help="generated frames (default 1000)")
    parser.add_argument("--bins", type=int, default=5, help="bins per continuous label over its training range")
    parser.add_argument("--band", metavar="NAME=LOW:HIGH", help="built-in set: also frames generated inside this "
                        "band of a continuous label against frames rendered afresh there")
    parser.add_argument("--reader", choices=READERS, default="features", help="what reads the labels back: "
                        "'features' (per-frame statistics and spectrum: seconds, blind to shapes) or 'cnn' (a small "
                        "CNN on the pixels: minutes, sees a track's curvature)")
    parser.add_argument("--reader-frames", type=int, default=0, metavar="N", help="built-in set: train the reader "
                        "on N frames rendered afresh at labels drawn from the real rows instead of the real frames")
    parser.add_argument("--reader-steps", type=int, default=6000, help="the CNN reader's training steps")
    parser.add_argument("--fid", action="store_true", help="also FID/KID per class of each discrete label "
                        "(Inception: minutes on a CPU)")
    parser.add_argument("--seed", type=int, default=0, help="sample i depends on (seed, i); also the reader's seed")
    parser.add_argument("--truncation", type=float, default=1.0, help="truncation psi (StyleGAN2)")
    parser.add_argument("--no-ema", action="store_true", help="G, not G_ema")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", choices=["cuda", "cpu"], help="default: cuda when available")
    parser.add_argument("--plots", metavar="DIR", help="write a response-curve plot per continuous label")
    parser.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    args = parser.parse_args(argv)
    if args.num_samples < 2 or args.bins < 1 or args.batch_size < 1 or args.reader_steps < 1 or args.reader_frames < 0:
        parser.error("--num-samples must be at least 2, --bins, --batch-size and --reader-steps positive, "
                     "--reader-frames not negative")

    from eval.inception_weights import WeightsError

    def compute() -> dict:
        report = evaluate_checkpoint(args)
        if args.plots:
            plot_response(report, args.plots)
        return report

    return report_command(compute, format_report, args.json, args.plots, errors=(WeightsError,))


if __name__ == "__main__":
    sys.exit(main())
