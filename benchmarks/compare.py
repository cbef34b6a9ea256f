"""Compare models on one data set: train them with the same budget, write one report.

    python benchmarks/compare.py --data builtin:particles --kimg 200 --out runs/compare
    python benchmarks/compare.py --kimg 4 --config sagan=configs/sagan_tiny.yaml \
        --config stylegan2=configs/stylegan2_tiny.yaml --set data.resolution=32   # a CPU-sized run
    python benchmarks/compare.py --runs runs/sagan-a runs/small300-b --out runs/compare

The first form trains SAGAN and StyleGAN2 (configs/sagan.yaml, configs/small300.yaml)
with the same data, kimg and evaluation settings, each on `--processes` processes
(torchrun on CPU, accelerate on GPUs), then builds the report; the second builds
it from existing run folders (config.yaml, metrics.jsonl, tb/, samples/,
checkpoints/last.pt) without training.

The report (report.md + PNG figures) holds FID and KID against kimg, sample
grids beside real images, throughput, peak GPU memory, parameter counts, the
training wall-clock needed to reach FID thresholds and the physics statistics
in data units (eval/stats.py) beside their real-vs-real floors.
"""

import argparse
import json
import math
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np
import torch
import yaml

MODELS = {"sagan": ("train_sagan.py", "configs/sagan.yaml"),
          "stylegan2": ("train_stylegan2.py", "configs/small300.yaml")}
FID_THRESHOLDS = (100, 50, 40)


# ---------------------------------------------------------------------------
# Training

def launcher(processes: int) -> list[str]:
    if processes == 1:
        return [sys.executable]
    if torch.cuda.is_available():
        return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes)]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes)]


def train_models(args) -> list[str]:
    run_dirs = []
    for name in args.models:
        script, config = MODELS[name][0], args.configs.get(name, MODELS[name][1])
        out_dir = os.path.join(args.out, name)
        command = [*launcher(args.processes), script, "--config", config, "--resume", "auto",
                   f"data.path={args.data}", f"train.kimg={args.kimg}", f"out_dir={out_dir}",
                   f"eval.every_kimg={args.eval_every_kimg}", f"eval.num_samples={args.eval_samples}", *args.set]
        print("$ " + " ".join(command), flush=True)
        subprocess.run(command, cwd=ROOT, check=True)
        run_dirs.append(out_dir)
    return run_dirs


# ---------------------------------------------------------------------------
# Reading run folders

def read_run(run_dir: str) -> dict:
    """Everything the report needs from one run folder."""
    with open(os.path.join(run_dir, "config.yaml")) as f:
        config = yaml.safe_load(f)
    metrics_path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(metrics_path):
        raise SystemExit(f"error: {run_dir} has no metrics.jsonl; it needs evaluations (eval.every_kimg > 0)")
    with open(metrics_path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    checkpoint = torch.load(os.path.join(run_dir, "checkpoints", "last.pt"), map_location="cpu", weights_only=True)
    samples = sorted(f for f in os.listdir(os.path.join(run_dir, "samples")) if f.endswith(".png"))
    return {"dir": run_dir, "name": checkpoint["model"], "config": config, "records": records,
            "params": checkpoint.get("params", {}), "kimg": checkpoint["kimg"],
            "throughput": read_throughput(os.path.join(run_dir, "tb")),
            "last_samples": os.path.join(run_dir, "samples", samples[-1]) if samples else None}


def read_throughput(tb_dir: str) -> dict:
    """Median img/s and sec/kimg, and the peak GPU memory, from the run's TensorBoard scalars."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(tb_dir, size_guidance={"scalars": 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])

    def values(tag):
        return sorted(e.value for e in events.Scalars(tag)) if tag in tags else []

    def median(xs):
        return xs[len(xs) // 2] if xs else None

    memory = values("Resources/peak_gpu_mem_mb")
    return {"img_per_s": median(values("Progress/img_per_s")),
            "sec_per_kimg": median(values("Progress/sec_per_kimg")),
            "peak_gpu_mem_mb": max(memory) if memory else None}


def time_to_fid(records: list[dict], threshold: float) -> float | None:
    """Training seconds until the first evaluation at or below `threshold`."""
    for record in records:
        if record["fid"] <= threshold:
            return record.get("wallclock_s")
    return None


# ---------------------------------------------------------------------------
# The report

def label(run: dict) -> str:
    return f"{run['name']} ({os.path.basename(os.path.normpath(run['dir']))})"


def plot_metric(runs: list[dict], key: str, ylabel: str, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for run in runs:
        ax.plot([r["kimg"] for r in run["records"]], [r[key] for r in run["records"]], marker="o", label=label(run))
    ax.set_xlabel("kimg (thousands of real images shown)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_samples(runs: list[dict], path: str) -> None:
    """Real images beside each run's newest sample grid."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from training.data import load_images
    from training.images import make_grid
    from training.normalize import normalization_from_config

    data = runs[0]["config"]["data"]
    real = normalization_from_config(data).to_uint8(load_images(data["path"], data["resolution"], data["channels"]))
    panels = [("real", make_grid(real[torch.randperm(len(real), generator=torch.Generator().manual_seed(0))[:64]]))]
    panels += [(label(run), np.asarray(Image.open(run["last_samples"])))
               for run in runs if run["last_samples"]]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4.3))
    for ax, (title, image) in zip(axes, panels):
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fmt(value, digits: int = 1, scale: float = 1.0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value * scale:,.{digits}f}"


def stats_section(runs: list[dict]) -> list[str]:
    """The physics statistics (eval/stats.py) of each run's last evaluation, each beside its real-vs-real floor."""
    from eval.stats import STATISTICS
    finals = [(run, run["records"][-1]["stats"]) for run in runs if "stats" in run["records"][-1]]
    if not finals:
        return []
    lines = ["## Statistics in data units", "",
             "| statistic, last evaluation (real-vs-real floor) | " + " | ".join(label(r) for r, _ in finals) + " |",
             "|" + " --- |" * (1 + len(finals))]
    lines += [f"| {name} | " + " | ".join(f"{fmt(stats[key], 3)} ({fmt(stats['floor'][key], 3)})"
                                        for _, stats in finals) + " |" for key, name in STATISTICS.items()]
    return lines + ["", "Lower is better; a value near its floor means the samples differ from the real frames no "
                        "more than two halves of the real frames differ from each other (docs/data.md).", ""]


def write_report(runs: list[dict], out_dir: str) -> str:
    os.makedirs(out_dir, exist_ok=True)
    plot_metric(runs, "fid", "FID (lower is better)", os.path.join(out_dir, "fid.png"))
    plot_metric(runs, "kid", "KID (lower is better)", os.path.join(out_dir, "kid.png"))
    plot_samples(runs, os.path.join(out_dir, "samples.png"))

    data = runs[0]["config"]["data"]
    lines = ["# Model comparison", "",
             f"Data: `{data['path']}` at {data['resolution']}x{data['resolution']}, {data['channels']} channel(s). "
             f"Evaluation: FID/KID of {runs[0]['records'][-1].get('num_fake', '?')} generated images against "
             f"{runs[0]['records'][-1].get('num_real', '?')} real ones.", "",
             "| run | params G | params D | kimg | best FID (at kimg) | final FID | final KID ×10³ | img/s | "
             "s/kimg | peak GPU MiB | " + " | ".join(f"time to FID ≤ {t}" for t in FID_THRESHOLDS) + " |",
             "|" + " --- |" * (10 + len(FID_THRESHOLDS))]
    for run in runs:
        records, throughput = run["records"], run["throughput"]
        best = min(records, key=lambda r: r["fid"])
        final = records[-1]
        times = [time_to_fid(records, t) for t in FID_THRESHOLDS]
        lines.append(
            f"| {label(run)} | {fmt(run['params'].get('G'), 0)} | {fmt(run['params'].get('D'), 0)} | {fmt(run['kimg'], 2)} "
            f"| {fmt(best['fid'], 2)} ({fmt(best['kimg'], 2)}) | {fmt(final['fid'], 2)} | {fmt(final['kid'], 2, 1e3)} "
            f"| {fmt(throughput['img_per_s'])} | {fmt(throughput['sec_per_kimg'], 2)} "
            f"| {fmt(throughput['peak_gpu_mem_mb'], 0)} | "
            + " | ".join("not reached" if t is None else f"{t / 60:.1f} min" for t in times) + " |")
    lines += ["", *stats_section(runs), "![FID against kimg](fid.png)", "", "![KID against kimg](kid.png)", "",
              "![Real images and samples](samples.png)", "",
              "Times are training wall-clock (evaluation included) to the first evaluation at or below the "
              "threshold. img/s and s/kimg are medians over the run's logging windows. With ~300 real images "
              "FID is biased upwards; KID is unbiased and the better number to compare small runs with.", ""]
    path = os.path.join(out_dir, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", help="existing run folders: build the report only")
    parser.add_argument("--data", default="builtin:particles", help="data.path for training both models")
    parser.add_argument("--kimg", type=float, help="training length for every model")
    parser.add_argument("--out", default="runs/compare", help="folder for the runs and the report")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--processes", type=int, default=1, help="processes per training run")
    parser.add_argument("--eval-every-kimg", type=float, default=10.0)
    parser.add_argument("--eval-samples", type=int, default=2000)
    parser.add_argument("--config", action="append", default=[], metavar="MODEL=YAML",
                        help="another config for a model, e.g. stylegan2=configs/stylegan2_tiny.yaml")
    parser.add_argument("--set", nargs="*", default=[], metavar="key=value",
                        help="extra config overrides given to every model")
    args = parser.parse_args(argv)
    args.configs = dict(item.split("=", 1) for item in args.config)
    unknown = set(args.configs) - set(MODELS)
    if unknown:
        parser.error(f"--config: unknown model {', '.join(sorted(unknown))} (models: {', '.join(MODELS)})")
    if args.runs:
        run_dirs = args.runs
    elif args.kimg is None:
        parser.error("give --kimg to train, or --runs to report on existing runs")
    else:
        run_dirs = train_models(args)
    for run_dir in run_dirs:
        if not os.path.isfile(os.path.join(run_dir, "config.yaml")):
            raise SystemExit(f"error: {run_dir} is not a run folder (no config.yaml)")
    report = write_report([read_run(d) for d in run_dirs], args.out)
    print(f"report: {report}")


if __name__ == "__main__":
    main()
