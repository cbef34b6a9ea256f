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
training wall-clock needed to reach FID thresholds, the physics statistics
in data units (eval/stats.py) and the physics tests (eval/physics.py: separation
powers, FPD/KPD, classifier AUCs where present) beside their real-vs-real floors,
and for conditional runs each label's fidelity (its figure against kimg) and
response ratios (eval/conditional.py).
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

from training.progress import Progress

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
    for number, name in enumerate(args.models, 1):
        script, config = MODELS[name][0], args.configs.get(name, MODELS[name][1])
        out_dir = os.path.join(args.out, name)
        command = [*launcher(args.processes), script, "--config", config, "--resume", "auto",
                   f"data.path={args.data}", f"train.kimg={args.kimg}", f"out_dir={out_dir}",
                   f"eval.every_kimg={args.eval_every_kimg}", f"eval.num_samples={args.eval_samples}", *args.set]
        # Each training shows its own progress bar (stderr); this line says which of the runs it is.
        print(f"[{number}/{len(args.models)}] $ " + " ".join(command), flush=True)
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
            "throughput": read_throughput(os.path.join(run_dir, "tb")), "copy_rate": read_copy_rate(run_dir),
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


def copy_check_path(run_dir: str) -> str:
    """Where a run's eval/memorization.py report is kept (benchmarks/study.py writes it there)."""
    return os.path.join(run_dir, "memorization", "report.json")


def read_copy_rate(run_dir: str) -> dict | None:
    """Copy rates from the run's eval/memorization.py report, when it has been run."""
    path = copy_check_path(run_dir)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        report = json.load(f)
    return {space: report[space]["copy_rate"] for space in ("pixel", "inception")}


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


X_AXES = {"kimg": ("kimg (thousands of real images shown)", 1.0),
          "wallclock_s": ("training wall-clock, hours (evaluation included)", 1 / 3600)}


def metric(record: dict, key: str | tuple[str, str]):
    """An evaluation's number: record[key], or record[section][name] for a key (section, name)."""
    return record.get(key) if isinstance(key, str) else record.get(key[0], {}).get(key[1])


def plot_metric(runs: list[dict], key: str | tuple[str, str], ylabel: str, path: str, x: str = "kimg") -> None:
    """`key` (see `metric`) of every run's evaluations against kimg or against training wall-clock."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    xlabel, scale = X_AXES[x]
    fig, ax = plt.subplots(figsize=(6, 4))
    for run in runs:
        records = [r for r in run["records"] if r.get(x) is not None and metric(r, key) is not None]
        ax.plot([r[x] * scale for r in records], [metric(r, key) for r in records], marker="o", markersize=3,
                label=label(run))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
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
    columns = min(len(panels), 4)
    rows = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 4.3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title, image) in zip(axes.flat, panels):
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        ax.set_title(title, fontsize=9)
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


def physics_section(runs: list[dict]) -> list[str]:
    """eval/physics.py's tests of each run's last evaluation beside their real-vs-real floors: separation
    powers, FPD and KPD, and the classifier AUCs where the run computed them (eval.physics_final)."""
    from eval.physics import CLASSIFIERS, DISTRIBUTIONS
    finals = [(run, run["records"][-1]) for run in runs if "physics" in run["records"][-1]]
    if not finals:
        return []

    def with_error(found, key):
        return f"{fmt(found[key], 3)} ± {fmt(found[key + '_error'], 3)}"

    def auc(found):
        return f"{found['auc']:.3f} [{found['auc_low']:.3f}, {found['auc_high']:.3f}]"

    lines = ["## Physics tests", "",
             "| test, last evaluation (real-vs-real floor) | " + " | ".join(label(r) for r, _ in finals) + " |",
             "|" + " --- |" * (1 + len(finals))]
    lines += [f"| separation power, {name} | " + " | ".join(
        f"{fmt(record['physics']['separation_power'][key], 4)} "
        f"({fmt(record['physics']['floor']['separation_power'][key], 4)})" for _, record in finals) + " |"
        for key, name in DISTRIBUTIONS.items()]
    lines += [f"| {name} | " + " | ".join(f"{with_error(record['physics'], key)} "
                                          f"({with_error(record['physics']['floor'], key)})"
                                          for _, record in finals) + " |" for key, name in (("fpd", "FPD"),
                                                                                             ("kpd", "KPD"))]
    lines += [f"| classifier AUC, {name} | " + " | ".join(
        f"{auc(record['classifier'][key])} ({auc(record['classifier']['floor'][key])})" if "classifier" in record
        else "–" for _, record in finals) + " |" for key, name in CLASSIFIERS.items()]
    return lines + ["", "Separation power 0: the same histogram, 1: none shared; FPD and KPD on per-frame features "
                        "standardized by the real set (± their errors); classifier AUC 0.5: generated frames not told "
                        "from real ones, with a 95 % bootstrap interval (eval.physics_final; "
                        "docs/physics.md).", ""]


def conditional_labels(runs: list[dict]) -> list[str]:
    """The labels whose fidelity the conditional runs' last evaluations logged (training/loop.py)."""
    names = []
    for run in runs:
        for key in run["records"][-1].get("conditional", {}):
            if key.startswith("fidelity/") and key.split("/")[1] not in names:
                names.append(key.split("/")[1])
    return names


def conditional_section(runs: list[dict]) -> list[str]:
    """Conditional runs (eval/conditional.py's numbers logged at each evaluation): each label's fidelity on
    generated frames beside the same reader's on real ones, and each response ratio, at the last evaluation."""
    finals = [(run, run["records"][-1]["conditional"]) for run in runs if "conditional" in run["records"][-1]]
    if not finals:
        return []
    lines = ["## Labels: does a frame show its setting?", "",
             "| last evaluation | " + " | ".join(label(r) for r, _ in finals) + " |",
             "|" + " --- |" * (1 + len(finals))]
    lines += [f"| fidelity, {name}: generated (real) | " + " | ".join(
        f"{fmt(found.get(f'fidelity/{name}/generated'), 3)} ({fmt(found.get(f'fidelity/{name}/real'), 3)})"
        for _, found in finals) + " |" for name in conditional_labels(runs)]
    responses = []
    for _, found in finals:
        responses += [key for key in found if key.startswith("response/") and key not in responses]
    lines += [f"| response ratio, {key.split('/')[1]}: {key.split('/')[2]} | " + " | ".join(
        fmt(found.get(key), 2) for _, found in finals) + " |" for key in responses]
    return lines + ["", "Fidelity: R² (continuous label) or accuracy (discrete) of the label a reader trained on "
                        "real frames reads back from generated frames asked for it, beside its score on real "
                        "frames; response ratio: how far each statistic's per-bin means sit from the real ones, "
                        "over the real-vs-real floor (about 1 for an ideal generator). eval/conditional.py and "
                        "docs/conditional.md.", ""]


def real_frames_phrase(runs: list[dict]) -> str:
    """What the runs' last evaluations scored against: '300 real ones', or, where a run trained on fewer
    frames (a band left out), 'the 232 or 300 real ones each run trained on'."""
    counts = sorted({run["records"][-1].get("num_real", "?") for run in runs}, key=str)
    if len(counts) == 1:
        return f"{counts[0]} real ones"
    return f"the {' or '.join(map(str, counts))} real ones each run trained on"


def write_report(runs: list[dict], out_dir: str, title: str = "Model comparison") -> str:
    os.makedirs(out_dir, exist_ok=True)
    figures = [("fid.png", "FID against kimg"), ("fid_wallclock.png", "FID against training wall-clock"),
               ("kid.png", "KID against kimg")]
    plot_metric(runs, "fid", "FID (lower is better)", os.path.join(out_dir, "fid.png"))
    plot_metric(runs, "fid", "FID (lower is better)", os.path.join(out_dir, "fid_wallclock.png"), x="wallclock_s")
    plot_metric(runs, "kid", "KID (lower is better)", os.path.join(out_dir, "kid.png"))
    if any("recall" in r for run in runs for r in run["records"]):
        plot_metric(runs, "precision", "precision (higher: samples look real)", os.path.join(out_dir, "precision.png"))
        plot_metric(runs, "recall", "recall (higher: samples cover the data)", os.path.join(out_dir, "recall.png"))
        figures += [("precision.png", "precision against kimg"), ("recall.png", "recall against kimg")]
    for name in conditional_labels(runs):
        plot_metric(runs, ("conditional", f"fidelity/{name}/generated"),
                    f"fidelity of {name} on generated frames", os.path.join(out_dir, f"fidelity_{name}.png"))
        figures.append((f"fidelity_{name}.png", f"fidelity of {name} (R² or accuracy) against kimg"))
    plot_samples(runs, os.path.join(out_dir, "samples.png"))
    figures.append(("samples.png", "Real images and each run's newest samples"))

    data = runs[0]["config"]["data"]
    lines = [f"# {title}", "",
             f"Data: `{data['path']}` at {data['resolution']}x{data['resolution']}, {data['channels']} channel(s). "
             f"Evaluation: FID/KID of {runs[0]['records'][-1].get('num_fake', '?')} generated images against "
             f"{real_frames_phrase(runs)}.", "",
             "| run | params G | params D | kimg | best FID (at kimg) | final FID | final KID ×10³ | img/s | "
             "s/kimg | peak GPU MiB | " + " | ".join(f"time to FID ≤ {t}" for t in FID_THRESHOLDS) +
             " | best KID ×10³ (at kimg) | final precision | final recall | copy rate pixel / Inception |",
             "|" + " --- |" * (14 + len(FID_THRESHOLDS))]
    for run in runs:
        records, throughput = run["records"], run["throughput"]
        best, best_kid = min(records, key=lambda r: r["fid"]), min(records, key=lambda r: r["kid"])
        final = records[-1]
        times = [time_to_fid(records, t) for t in FID_THRESHOLDS]
        copies = run.get("copy_rate")
        lines.append(
            f"| {label(run)} | {fmt(run['params'].get('G'), 0)} | {fmt(run['params'].get('D'), 0)} | {fmt(run['kimg'], 2)} "
            f"| {fmt(best['fid'], 2)} ({fmt(best['kimg'], 2)}) | {fmt(final['fid'], 2)} | {fmt(final['kid'], 2, 1e3)} "
            f"| {fmt(throughput['img_per_s'])} | {fmt(throughput['sec_per_kimg'], 2)} "
            f"| {fmt(throughput['peak_gpu_mem_mb'], 0)} | "
            + " | ".join("not reached" if t is None else f"{t / 60:.1f} min" for t in times)
            + f" | {fmt(best_kid['kid'], 2, 1e3)} ({fmt(best_kid['kimg'], 2)}) | {fmt(final.get('precision'), 3)} "
              f"| {fmt(final.get('recall'), 3)} | "
            + (f"{copies['pixel']:.3f} / {copies['inception']:.3f}" if copies else "–") + " |")
    lines += ["", *stats_section(runs), *physics_section(runs), *conditional_section(runs)]
    for name, caption in figures:
        lines += ["", f"![{caption}]({name})"]
    lines += ["", "Times are training wall-clock (evaluation included) to the first evaluation at or below the "
              "threshold. img/s and s/kimg are medians over the run's logging windows. With ~300 real images "
              "FID is biased upwards; KID is unbiased and the better number to compare small runs with. "
              "Copy rate: eval/memorization.py on the final networks (share of samples closer to a training "
              "image than 95% of training images are to any other; about 0.05 for new images, 1 for copies).", ""]
    path = os.path.join(out_dir, "report.md")
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write("\n".join(lines))
    os.replace(tmp, path)
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
    runs = []
    with Progress("read runs", total=len(run_dirs), unit="run") as bar:  # TensorBoard files of long runs are big
        for run_dir in run_dirs:
            runs.append(read_run(run_dir))
            bar.update()
    report = write_report(runs, args.out)
    print(f"report: {report}")


if __name__ == "__main__":
    main()
