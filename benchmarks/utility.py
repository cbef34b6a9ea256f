"""Does adding generated frames help a downstream model? One small network trained several ways, tested on real frames.

    python benchmarks/utility.py --ckpt CKPT [--label energy] [--seeds 5] [--num-generated 300,1000,3000]
                                 [--test-frames 2000] [--holdout 0.25] [--steps 600] [--ideal] [--json] [--plot FILE]

The downstream model is eval/frame_cnn.py's FrameCNN reading one label of a conditional checkpoint from a
frame in data units (default: energy, the quantity an analysis of these frames measures). A continuous
label is regressed and scored by the RMSE on the test set in the label's own units (the resolution an
analysis quotes, comparable between test sets; lower is better), beside the no-skill RMSE of always
answering the training frames' mean; a discrete label is classified and scored by accuracy, beside the
share of the training frames' most common class. The network is trained, for the same number of Adam
steps of the same batch size, on

- real:       the frames the checkpoint trained on, with their labels;
- real+N:     those and N generated frames for each N of --num-generated, asked for labels drawn from the
              training set's exactly as `eval/generate.py --seed S` draws them (the first N of one draw
              per seed), each with the label it was asked for;
- generated:  generated frames only, as many as there are real ones ("train on synthetic, test on real");
- augmented:  the real frames with classical augmentation only (random flips and shifts of up to
              resolution/16 pixels): the honest baseline;
- augmented+N: the real frames and the largest N of generated ones, all with that augmentation: do
              generated frames help on top of what augmentation gives for free?

Equal steps, not equal epochs: every setting gets the same compute, so a difference is the data's and not
more training (equal epochs would train real+3000 eleven times as long as real, and cost as much).

The test set: for `builtin:particles-cond`, --test-frames frames rendered afresh (content set TEST_COPY of
the renderer: none is a training frame) at labels drawn from the training frames'; for a user's data, a
fraction (--holdout) of the real frames, held out of every setting's training; the generator saw them in
its own training, which the report says. Every setting and seed is tested on the same frames.

Seeds 0..S-1: seed s sets the network's initialization and batch order and the generated frames' draw.
Per setting: the mean and standard deviation over seeds. The verdict compares real+N and augmented+N with
real and with augmented; a difference counts ("beyond the seed spread") when the means differ by more than the larger
of the two settings' standard deviations.

--ideal (built-in set only): the "generated" frames are rendered afresh at the very labels the generator
would be asked for (content set IDEAL_COPY + s): the ceiling a perfect generator would reach.

--json prints one JSON object on the last line: {"checkpoint", "model", "kimg", "label", "kind", "metric",
"lower_is_better", "no_skill", "ideal", "num_real", "num_test", "test_set", "training": {"steps",
"batch_size", "width", "augment_shift"}, "seeds", "settings": {name: {"num_real", "num_generated",
"augmented", "scores" (one per seed), "mean", "std"}}, "verdict": {"real+N" and "augmented+N": {"vs_real", "vs_augmented":
{"gain", "spread", "verdict"}}}, "helped", "helped_beyond_augmentation", "threads", "loadavg", "seconds"}.
--plot FILE writes one figure: the metric per setting, mean ± std over seeds. Bad input (a checkpoint trained
without labels, a SinGAN checkpoint, an unknown label, a missing file) is a one-line error, exit status 2.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse
import time

import numpy as np
import torch
from torch.nn import functional as F

from eval.conditional import FRESH_SEED_STRIDE, builtin_renderer, conditional_encoding, generate_at, training_set
from eval.frame_cnn import fit_frame_cnn, predict
from eval.stats import report_command, single_channel
from training.labels import LabelColumn, LabelEncoding, labels_for_indices

DEFAULT_LABEL = "energy"
TEST_COPY = 4     # built-in set: the test frames are the renderer's content set 4 (eval/conditional.py renders 1-3 and 5)
IDEAL_COPY = 10   # --ideal: seed s's "generated" frames are content set 10 + s
HOLDOUT_SEED = 0  # a user's data: which frames are held out as the test set (the same for every seed)


class Target:
    """One label as the downstream model's target: its encoding (continuous: the checkpoint's range to [-1, 1];
    discrete: one-hot), the training loss and the test score."""

    def __init__(self, column: LabelColumn):
        self.name, self.kind = column.name, column.kind
        self.encoding = LabelEncoding([column])
        self.outputs = column.width
        self.metric = "rmse" if column.kind == "continuous" else "accuracy"
        self.lower_is_better = column.kind == "continuous"

    def encode(self, values: list) -> torch.Tensor:
        return self.encoding.encode({self.name: values})

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.kind == "continuous":
            return F.mse_loss(outputs, targets)
        return F.cross_entropy(outputs, targets.argmax(1))

    def score(self, outputs: torch.Tensor, values: list) -> float:
        """RMSE in label units (continuous) or accuracy (discrete) of the network's outputs against the truth."""
        read = self.encoding.decode(outputs)[self.name]
        if self.kind == "continuous":
            return float(np.sqrt(np.mean((np.asarray(read) - np.asarray(values, np.float64)) ** 2)))
        return float(np.mean([str(a) == str(b) for a, b in zip(read, values)]))

    def no_skill(self, train_values: list, test_values: list) -> float:
        """The score of ignoring the frame: the training mean (continuous) or most common class (discrete)."""
        if self.kind == "continuous":
            truth = np.asarray(test_values, np.float64)
            return float(np.sqrt(np.mean((truth - np.mean(np.asarray(train_values, np.float64))) ** 2)))
        names = [str(v) for v in train_values]
        common = max(set(names), key=names.count)
        return float(np.mean([str(v) == common for v in test_values]))


def _rows(values: dict[str, list], rows) -> dict[str, list]:
    return {name: [column[i] for i in rows] for name, column in values.items()}


class UtilityBenchmark:
    """The real training frames, the test frames and the generated frames of one conditional checkpoint.

    Args:
        checkpoint:   a loaded conditional checkpoint (StyleGAN2 or SAGAN)
        path:         its file (for messages)
        label:        the label the downstream model reads
        test_frames:  built-in set: how many test frames to render
        holdout:      a user's data: the fraction of the real frames held out as the test set
        ideal:        built-in set: "generated" frames rendered afresh at the asked labels
        device:       where the generator runs
    """

    def __init__(self, checkpoint: dict, path: str, label: str, test_frames: int = 2000, holdout: float = 0.25,
                 ideal: bool = False, device="cpu"):
        from eval.fid import EvalError

        if checkpoint["model"] == "singan":
            raise EvalError(f"{path} is a SinGAN checkpoint (one image, no labels); the utility benchmark needs a "
                            f"conditional StyleGAN2 or SAGAN checkpoint")
        self.checkpoint, self.device, self.ideal = checkpoint, device, ideal
        self.encoding = conditional_encoding(checkpoint, path, "benchmarks/utility.py")
        data = checkpoint["config"]["data"]
        if label not in self.encoding.names:
            raise EvalError(f"--label {label}: not a label of {path}; its labels: {', '.join(self.encoding.names)}")
        self.target = Target(self.encoding.columns[self.encoding.names.index(label)])
        self.render = builtin_renderer(data)
        if ideal and self.render is None:
            raise EvalError(f"--ideal renders frames afresh at the asked labels: it needs a checkpoint trained on "
                            f"builtin:particles-cond, not {data['path']}")
        frames, values = training_set(data, self.encoding)
        frames = single_channel(frames).astype(np.float32)
        if self.render is not None:
            self.real, self.real_values = frames, values
            # Labels drawn from the training frames', content no training frame has.
            rows = np.random.default_rng(TEST_COPY).integers(len(frames), size=test_frames)
            self.test_values = _rows(values, rows)
            self.test = self.render(self.test_values, TEST_COPY).astype(np.float32)
            self.test_set = (f"{test_frames} frames of {data['path']} rendered afresh (content seed "
                             f"+{TEST_COPY * FRESH_SEED_STRIDE}) at labels drawn from the training frames'")
        else:
            order = np.random.default_rng(HOLDOUT_SEED).permutation(len(frames))
            held_out = int(round(holdout * len(frames)))
            if held_out < 2 or len(frames) - held_out < 2:
                raise EvalError(f"--holdout {holdout}: {len(frames)} real frames leave {held_out} to test and "
                                f"{len(frames) - held_out} to train; both need at least 2")
            test_rows, train_rows = np.sort(order[:held_out]), np.sort(order[held_out:])
            self.real, self.real_values = frames[train_rows], _rows(values, train_rows)
            self.test, self.test_values = frames[test_rows], _rows(values, test_rows)
            self.test_set = (f"{held_out} of the {len(frames)} real frames ({holdout:g}) held out of every setting's "
                             f"training; the generator trained on all {len(frames)}, these included")

    def generated(self, count: int, seed: int) -> tuple[np.ndarray, dict[str, list]]:
        """Frames [count, H, W] (data units) and the labels each was asked for: sample i asks for the training
        row (seed, i) picks, as `eval/generate.py --seed SEED` draws them; with --ideal, rendered there afresh."""
        values = self.encoding.decode(labels_for_indices(self.checkpoint["labels"], torch.arange(count), seed))
        if self.ideal:
            return self.render(values, IDEAL_COPY + seed).astype(np.float32), values
        frames = generate_at(self.checkpoint, self.encoding.encode(values), seed, self.device)
        return single_channel(frames).astype(np.float32), values

    def run(self, seeds: list[int], num_generated: list[int], steps: int, batch_size: int = 64,
            width: int = 16) -> dict:
        """Every setting trained for every seed and scored on the test frames."""
        from training.progress import Progress

        target, num_real = self.target, len(self.real)
        real_targets = target.encode(self.real_values[target.name])
        shift = max(self.real.shape[-1] // 16, 1)
        settings = {"real": {"num_real": num_real, "num_generated": 0, "augmented": False}}
        settings |= {f"real+{n}": {"num_real": num_real, "num_generated": n, "augmented": False}
                     for n in num_generated}
        settings["generated"] = {"num_real": 0, "num_generated": num_real, "augmented": False}
        settings["augmented"] = {"num_real": num_real, "num_generated": 0, "augmented": True}
        most = max(num_generated)
        settings[f"augmented+{most}"] = {"num_real": num_real, "num_generated": most, "augmented": True}
        for setting in settings.values():
            setting["scores"] = []
        with Progress("train", total=len(seeds) * len(settings), unit="networks") as bar:
            for seed in seeds:
                frames, values = self.generated(max([*num_generated, num_real]), seed)
                generated_targets = target.encode(values[target.name])
                for setting in settings.values():
                    n, m = setting["num_generated"], setting["num_real"]
                    model = fit_frame_cnn(np.concatenate([self.real[:m], frames[:n]]),
                                          torch.cat([real_targets[:m], generated_targets[:n]]), target.loss,
                                          target.outputs, steps, seed, batch_size=batch_size, width=width,
                                          augment_shift=shift if setting["augmented"] else None)
                    setting["scores"].append(target.score(predict(model, self.test), self.test_values[target.name]))
                    bar.update(1)
        for setting in settings.values():
            setting["mean"], setting["std"] = float(np.mean(setting["scores"])), float(np.std(setting["scores"],
                                                                                                ddof=1))
        verdict = {name: {"vs_real": compare(settings["real"], setting, target.lower_is_better),
                          "vs_augmented": compare(settings["augmented"], setting, target.lower_is_better)}
                   for name, setting in settings.items() if "+" in name}
        data = self.checkpoint["config"]["data"]
        return {"model": self.checkpoint["model"], "kimg": self.checkpoint.get("kimg"), "label": target.name,
                "kind": target.kind, "metric": target.metric, "lower_is_better": target.lower_is_better,
                "no_skill": target.no_skill(self.real_values[target.name], self.test_values[target.name]),
                "ideal": self.ideal, "data": data["path"], "resolution": data["resolution"], "num_real": num_real,
                "num_test": len(self.test), "test_set": self.test_set,
                "training": {"steps": steps, "batch_size": batch_size, "width": width, "augment_shift": shift},
                "seeds": list(seeds), "settings": settings, "verdict": verdict,
                "helped": any(v["vs_real"]["verdict"] == "better" for v in verdict.values()),
                "helped_beyond_augmentation": any(v["vs_augmented"]["verdict"] == "better" for v in verdict.values())}


def compare(baseline: dict, setting: dict, lower_is_better: bool) -> dict:
    """`setting` against `baseline`: gain (how much better its mean is; negative: worse), spread (the larger of
    the two standard deviations over seeds) and the verdict: better or worse beyond the spread, or within it."""
    gain = (baseline["mean"] - setting["mean"]) * (1 if lower_is_better else -1)
    spread = max(baseline["std"], setting["std"])
    verdict = "better" if gain > spread else "worse" if gain < -spread else "within the seed spread"
    return {"gain": gain, "spread": spread, "verdict": verdict}


# ---------------------------------------------------------------------------
# Report

def setting_description(name: str, report: dict) -> str:
    made = "rendered (ideal)" if report["ideal"] else "generated"
    if name == "real":
        return "real"
    if name == "generated":
        return f"{made} only"
    if name == "augmented":
        return f"real, flips + shifts <= {report['training']['augment_shift']} px"
    if name.startswith("augmented+"):
        return f"real + {name[10:]} {made}, flips + shifts"
    return f"real + {name[5:]} {made}"


def format_report(report: dict) -> str:
    metric = "RMSE in label units, lower is better" if report["metric"] == "rmse" else "accuracy, higher is better"
    task = "regressing" if report["kind"] == "continuous" else "classifying"
    made = "frames rendered afresh (an ideal generator)" if report["ideal"] else "generated frames"
    training = report["training"]
    lines = [f"utility of {made} for a FrameCNN {task} {report['label']} ({metric})",
             f"checkpoint {report['checkpoint']} ({report['model']}, {report['kimg']} kimg), {report['num_real']} "
             f"real training frames of {report['data']} at {report['resolution']} px",
             f"test set: {report['test_set']}",
             f"every setting: width {training['width']}, {training['steps']} Adam steps of {training['batch_size']} "
             f"frames; seeds {', '.join(map(str, report['seeds']))}; no skill (ignoring the frame): "
             f"{report['no_skill']:.4g}", "",
             f"{'setting':34s}{'real':>6s}{'gen.':>6s}{report['metric'] + ' mean ± std':>22s}   per seed"]
    for name, setting in report["settings"].items():
        lines.append(f"{setting_description(name, report):34s}{setting['num_real']:6d}{setting['num_generated']:6d}"
                     f"{setting['mean']:>13.4g} ± {setting['std']:<6.2g}   "
                     + " ".join(f"{s:.4g}" for s in setting["scores"]))
    lines += ["", "verdict (a difference counts when it exceeds the larger standard deviation of the two settings):"]
    for name, entry in report["verdict"].items():
        parts = []
        for against, key in (("real", "vs_real"), ("augmented", "vs_augmented")):
            c = entry[key]
            parts.append(f"{c['verdict']} than {against}" if c["verdict"] != "within the seed spread" else
                         f"within the seed spread of {against}")
            parts[-1] += f" (gain {c['gain']:+.3g}, spread {c['spread']:.2g})"
        lines.append(f"  {setting_description(name, report)}: {'; '.join(parts)}")
    helped, beyond = ([setting_description(name, report) for name, entry in report["verdict"].items()
                       if entry[against]["verdict"] == "better"] for against in ("vs_real", "vs_augmented"))
    lines.append(f"\n{made[0].upper() + made[1:]} helped beyond the seed spread: "
                 + (f"yes, over the real frames alone ({', '.join(helped)})" if helped else
                    "no, not over the real frames alone")
                 + ("; and over classical augmentation (" + ", ".join(beyond) + ")" if beyond else
                    "; not over classical augmentation"))
    lines.append(f"\n{report['seconds']:.0f} s on {report['threads']} threads, load average "
                 f"{' '.join(f'{x:.2f}' for x in report['loadavg'])}")
    return "\n".join(lines)


def plot(report: dict, path: str) -> None:
    """The metric per setting, mean ± standard deviation over seeds, with the no-skill level."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from training.images import write_atomically

    names = list(report["settings"])
    fig, ax = plt.subplots(figsize=(1.3 * len(names) + 2, 4))
    means = [report["settings"][n]["mean"] for n in names]
    stds = [report["settings"][n]["std"] for n in names]
    ax.errorbar(range(len(names)), means, yerr=stds, fmt="o", capsize=4)
    ax.axhline(report["no_skill"], color="gray", linestyle=":", label="no skill")
    ax.axhspan(means[0] - stds[0], means[0] + stds[0], color="C0", alpha=0.12, label="real ± std")
    ax.set_xticks(range(len(names)), [setting_description(n, report).replace(", ", ",\n").replace(" + ", " +\n")
                                      for n in names], fontsize=8)
    ax.set_ylabel(report["metric"] + (" (" + report["label"] + ")" if report["metric"] == "rmse" else ""))
    ax.set_title(f"reading {report['label']}: {len(report['seeds'])} seeds, test on {report['num_test']} real frames"
                 + (" (ideal generator)" if report["ideal"] else ""), fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    write_atomically(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100), ".png")
    plt.close(fig)


def parse_counts(text: str) -> list[int]:
    counts = [int(part) for part in text.split(",") if part.strip()]
    if not counts or min(counts) < 1:
        raise ValueError(text)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Does adding a conditional checkpoint's generated frames to the real "
                                                 "ones help a small network read a label from real frames?")
    parser.add_argument("--ckpt", required=True, help="a conditional checkpoint (trained with labels)")
    parser.add_argument("--label", default=DEFAULT_LABEL, help=f"the label to read (default {DEFAULT_LABEL})")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..S-1 (default 5; at least 2)")
    parser.add_argument("--num-generated", default="300,1000,3000", help="N of the real+N settings")
    parser.add_argument("--test-frames", type=int, default=2000, help="built-in set: test frames rendered afresh")
    parser.add_argument("--holdout", type=float, default=0.25,
                        help="a user's data: the fraction of the real frames held out as the test set")
    parser.add_argument("--steps", type=int, default=600, help="Adam steps of every setting's network")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--width", type=int, default=16, help="the FrameCNN's first width")
    parser.add_argument("--ideal", action="store_true", help="built-in set: frames rendered afresh at the asked "
                        "labels instead of generated ones (a perfect generator's ceiling)")
    parser.add_argument("--plot", metavar="FILE", help="write the figure (PNG)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    args = parser.parse_args(argv)
    try:
        num_generated = parse_counts(args.num_generated)
    except ValueError:
        parser.error(f"--num-generated {args.num_generated}: expected positive counts separated by commas")
    if args.seeds < 2 or args.test_frames < 2 or args.steps < 1 or args.batch_size < 1 or args.width < 1:
        parser.error("--seeds and --test-frames must be at least 2 (a spread needs two), --steps, --batch-size "
                     "and --width positive")
    if not 0 < args.holdout < 1:
        parser.error("--holdout is a fraction between 0 and 1")

    from training.checkpoint import load_checkpoint

    def compute() -> dict:
        started = time.perf_counter()
        benchmark = UtilityBenchmark(load_checkpoint(args.ckpt), args.ckpt, args.label, args.test_frames,
                                     args.holdout, args.ideal, "cuda" if torch.cuda.is_available() else "cpu")
        report = {"checkpoint": args.ckpt, **benchmark.run(list(range(args.seeds)), num_generated, args.steps,
                                                           args.batch_size, args.width)}
        report |= {"threads": torch.get_num_threads(), "loadavg": list(os.getloadavg()),
                   "seconds": time.perf_counter() - started}
        if args.plot:
            plot(report, args.plot)
        return report

    return report_command(compute, format_report, args.json, args.plot)


if __name__ == "__main__":
    sys.exit(main())
