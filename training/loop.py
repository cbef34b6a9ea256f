"""The training loop the GAN scripts share.

A model plugs in as a `GANTask` (networks, optimizers, one training step, a
sampler for its averaged generator). This loop owns everything around it:
command line, Accelerate, data, kimg bookkeeping, logging, sample grids,
periodic FID/KID with best.pt, checkpoints and deterministic resume.

    config, task = ...                   # see train_stylegan2.py
    ctx = setup(MyConfig, __doc__)
    train(ctx, MyTask(ctx))
"""

import math
import os
import sys
import time
from dataclasses import dataclass, is_dataclass
from typing import Callable, Protocol

import torch

from training.checkpoint import CheckpointError, load_checkpoint, resolve_resume
from training.config import ConfigError, exit_with_error, parse_command_line, to_dict
from training.data import DataError, ImageBatches, load_frames
from training.labels import excluded_frames, has_labels, load_labels
from training.distributed import (join_restarted_group, process_group_kwargs, restart_count, stop_watching,
                                  watch_peers)
from training.images import to_uint8
from training.normalize import fit_normalization, normalization_from_config
from training.progress import Progress, describe_duration, write
from training.run import Run
from training.seeding import rng_state, seed_everything, set_rng_state

GRID_SAMPLES = 64  # fixed sample indices shown in every grid

Sampler = Callable[[torch.Tensor], torch.Tensor]  # sample indices -> images in [-1, 1]


class GANTask(Protocol):
    """What a model provides to the loop."""

    name: str  # stored as checkpoint["model"]; nets.load_sampler dispatches on it
    G: torch.nn.Module  # the trained networks (possibly DDP-wrapped), for parameter counts
    D: torch.nn.Module

    def train_step(self, real: torch.Tensor, step: int) -> dict[str, torch.Tensor | float]:
        """One optimization step on this process's share of the batch (float, [-1, 1]).

        Returns scalars to log (this process's values; the loop averages them
        over processes), named like 'Loss/G/adv'. Every process must return the
        same names at the same step.
        """

    def sampler(self) -> Sampler:
        """The generator used for samples and metrics (the EMA one), unwrapped from DDP.

        It runs on one process alone for sample grids, so it must not
        communicate with the other processes.
        """

    def state_dict(self) -> dict:
        """Networks, optimizers and any training state, as tensors and JSON-able values."""

    def load_state_dict(self, state: dict) -> None: ...

    # Optional: `eval_due(step, done) -> bool`, whether to evaluate after `step` completed
    # steps (`done`: the last one). It replaces the every-`eval.every_kimg` schedule, e.g. for
    # SAGAN's schedule in epochs.


@dataclass
class Context:
    config: object
    accelerator: object
    run: Run
    data: ImageBatches
    resume_path: str | None

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def local_batch(self) -> int:
        return self.config.train.batch_size // self.accelerator.num_processes


def start(config_cls, description: str, argv: list[str] | None = None):
    """Command line, Accelerate and run folder: (config, accelerator, run, resume_path).

    For scripts that load their data themselves (SinGAN's single image); the
    others call `setup`.
    """
    from accelerate import Accelerator

    config, args = parse_command_line(config_cls, description, argv)
    precision = {"fp32": "no", "fp16": "fp16", "bf16": "bf16"}[config.precision]
    join_restarted_group(config.train.collective_timeout_s)
    accelerator = Accelerator(mixed_precision=precision, cpu=not torch.cuda.is_available(),
                              kwargs_handlers=[process_group_kwargs(config.train.collective_timeout_s)])
    watch_peers(accelerator.process_index, accelerator.num_processes, config.train.collective_timeout_s)
    restarted = args.resume is None and restart_count() > 0  # torchrun restarted the group after a failure
    resume = "auto" if restarted else args.resume
    with user_errors():
        if restarted and not config.out_dir:
            raise ConfigError("out_dir: torchrun restarted the workers, but without out_dir the first attempt's "
                              "run folder is unknown; set out_dir= for runs under torchrun --max-restarts, and "
                              "continue this one with --resume auto out_dir=<its folder>")
        if config.train.batch_size % accelerator.num_processes:
            raise ConfigError(f"train.batch_size: expected a multiple of the {accelerator.num_processes} "
                              f"processes, got {config.train.batch_size}")
        if accelerator.device.type == "cpu" and config.precision == "fp16":
            raise ConfigError("precision: fp16 needs a GPU; use fp32 or bf16 on the CPU")
        seed_everything(config.seed)
        run = Run(config, accelerator, args.config)
        resume_path = resolve_resume(resume, config.out_dir)
    if restarted:
        accelerator.print(f"torchrun restart {restart_count()}: " + (f"continuing from {resume_path}" if resume_path
                          else "no checkpoint was written yet; starting again"))
    return config, accelerator, run, resume_path


def setup(config_cls, description: str, argv: list[str] | None = None) -> Context:
    """Command line, Accelerate, run folder and the image set, with bad input turned into one-line errors."""
    config, accelerator, run, resume_path = start(config_cls, description, argv)
    labels = None
    with user_errors():
        images, names = load_frames(config.data.path, config.data.resolution, config.data.channels)
        if has_labels(config.data):
            encoding, labels = load_labels(config.data, names, len(images))  # records its fit in config.data
            accelerator.print(f"labels: {', '.join(encoding.to_config()['label_columns'])} (c_dim {encoding.c_dim})")
            excluded = excluded_frames(encoding, labels, config.data.label_exclude)
            if excluded.any():
                images, labels = images[~excluded], labels[~excluded]
                accelerator.print(f"data.label_exclude: {int(excluded.sum())} frames left out, {len(images)} kept")
        elif config.data.label_exclude:
            raise ConfigError("data.label_exclude: the data have no labels (data.labels)")
        normalization = fit_normalization(images, config.data)
    config.data.range = [normalization.low, normalization.high]  # the fitted mapping goes into config.yaml and
    run.save_config()                                             # every checkpoint
    accelerator.print(f"{len(images)} images from {config.data.path} at {config.data.resolution}px, "
                      f"{accelerator.num_processes} process(es) on {accelerator.device}, run folder {config.out_dir}")
    data = ImageBatches(images, config.train.batch_size, config.seed, hflip=config.data.hflip,
                        vflip=config.data.vflip, device=accelerator.device, normalization=normalization,
                        labels=labels)
    return Context(config, accelerator, run, data, resume_path)


class user_errors:
    """Config, data and checkpoint problems end the process with one line and status 2."""

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if isinstance(error, (ConfigError, DataError, CheckpointError)):
            if int(os.environ.get("RANK", "0")) != 0:
                sys.exit(2)  # every process hits the same error; one line is enough
            exit_with_error(str(error))
        return False


def crossed(previous_kimg: float, kimg: float, every_kimg: float) -> bool:
    """Did training pass a multiple of `every_kimg` between the two counters?"""
    return every_kimg > 0 and math.floor(kimg / every_kimg + 1e-9) > math.floor(previous_kimg / every_kimg + 1e-9)


class ScalarAverager:
    """Sums step scalars where they are, tensors on the device and Python numbers on the host (no
    per-step sync or copy), and averages them over steps and processes when popped."""

    def __init__(self, accelerator):
        self.accelerator = accelerator
        self.sums, self.counts = {}, {}

    def add(self, scalars: dict) -> None:
        for name, value in scalars.items():
            if isinstance(value, torch.Tensor):
                value = value.detach().float()
            self.sums[name] = self.sums.get(name, 0) + value
            self.counts[name] = self.counts.get(name, 0) + 1

    def pop(self) -> dict[str, float]:
        names = sorted(self.sums)
        if not names:
            return {}
        device = self.accelerator.device
        means = torch.stack([torch.as_tensor(self.sums[n] / self.counts[n], dtype=torch.float32, device=device)
                             for n in names])
        if self.accelerator.num_processes > 1:
            means = self.accelerator.reduce(means, reduction="mean")
        self.sums, self.counts = {}, {}
        return dict(zip(names, means.tolist()))


class SpeedProbe:
    """Seconds per kimg over the first few steps after the first one (which holds the warm-up)."""

    # Four steps hold one of StyleGAN2's lazy path-length steps (pl_interval 4); very slow steps stop it earlier.
    MIN_STEPS, MIN_SECONDS = 4, 180.0  # whichever comes first

    def __init__(self):
        self.start = None  # (kimg, time) at the end of the first step
        self.sec_per_kimg = None

    def step_done(self, kimg: float) -> bool:
        """Record a finished step; True once, when the measurement is ready."""
        now = time.perf_counter()
        if self.start is None:
            self.start, self.steps = (kimg, now), 0
            return False
        self.steps += 1
        if self.steps < self.MIN_STEPS and now - self.start[1] < self.MIN_SECONDS:
            return False
        self.sec_per_kimg = (now - self.start[1]) / (kimg - self.start[0])
        return True


def cpu_speed_notice(config, model: str, sec_per_kimg: float, resumed_at_kimg: float = 0.0) -> str:
    """What the measured CPU speed means for train.kimg, naming a CPU-sized config when the wait is long."""
    kimg = config.train.kimg - resumed_at_kimg
    seconds = sec_per_kimg * kimg
    rate = f"{sec_per_kimg:.0f}" if sec_per_kimg >= 10 else f"{sec_per_kimg:.2g}"
    what = f"the remaining {kimg:g} kimg" if resumed_at_kimg else f"{config.train.kimg:g} kimg"
    line = f"{config.data.resolution} px on CPU: ~{rate} s/kimg, {what} would take {describe_duration(seconds)}"
    smaller = f"configs/{model}_cpu32.yaml"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if seconds > 3600 and config.data.resolution > 32 and os.path.isfile(os.path.join(root, smaller)):
        line += f"; {smaller} runs in minutes"
    return line


def parameter_counts(task: GANTask, accelerator) -> dict[str, int]:
    """Trainable parameters of G and D, as reported in checkpoints, benchmarks and the comparison report."""
    return {name: sum(p.numel() for p in accelerator.unwrap_model(getattr(task, name)).parameters())
            for name in ("G", "D")}


def model_differences(saved: dict, config) -> list[tuple[str, object, object]]:
    """("model.<key>", checkpoint's value, config's value) for every model key of a checkpoint's saved config.

    A model key added after the checkpoint was written counts as its default: the networks the run trained.
    """
    model = getattr(config, "model", None)
    defaults = to_dict(type(model)()) if is_dataclass(model) else {}
    saved_model, current_model = {**defaults, **(saved.get("model") or {})}, to_dict(config).get("model") or {}
    return [(f"model.{key}", saved_model.get(key), current_model.get(key))
            for key in sorted(set(saved_model) | set(current_model))]


def check_resumable(checkpoint: dict, config, name: str) -> None:
    """Refuse a checkpoint whose networks the current config would not rebuild."""
    if checkpoint["model"] != name:
        raise CheckpointError(f"--resume: checkpoint is a {checkpoint['model']} run, not {name}")
    saved, current = checkpoint["config"], to_dict(config)
    compared = model_differences(saved, config) + [(f"data.{key}", (saved.get("data") or {}).get(key),
                                                    current["data"].get(key)) for key in ("resolution", "channels")]
    # The labels' encoding shapes both networks (a checkpoint from before labels existed has none).
    compared += [(f"data.{key}", (saved.get("data") or {}).get(key) or [], current["data"].get(key) or [])
                 for key in ("label_columns", "label_ranges", "label_classes")]
    for where, a, b in compared:
        if a != b:
            raise CheckpointError(f"--resume: the checkpoint was trained with {where}={a}, the config says {b}; "
                                  f"use the run's own config.yaml")
    saved, current = normalization_from_config(saved.get("data", {})), normalization_from_config(current["data"])
    if saved != current:
        raise CheckpointError(f"--resume: the checkpoint maps data to [-1, 1] with {saved}, the data now give "
                              f"{current}; use the run's own config.yaml")


def train(ctx: Context, task: GANTask) -> None:
    """Run `task` from its start (or the resume checkpoint) to config.train.kimg."""
    config, accelerator, run, data = ctx.config, ctx.accelerator, ctx.run, ctx.data
    batch = config.train.batch_size
    total_steps = math.ceil(config.train.kimg * 1000 / batch)
    step, best_fid, previous_seconds = 0, float("inf"), 0.0
    if ctx.resume_path:
        with user_errors():
            checkpoint = load_checkpoint(ctx.resume_path)
            check_resumable(checkpoint, config, task.name)
        task.load_state_dict(checkpoint)
        step, best_fid, previous_seconds = checkpoint["step"], checkpoint["best_fid"], checkpoint["wallclock_s"]
        set_rng_state(checkpoint["rng"])
        accelerator.print(f"resumed from {ctx.resume_path} at step {step} ({step * batch / 1000:.2f} kimg)")

    started = time.perf_counter()

    def wallclock() -> float:
        """Seconds of training so far, across resumes (what 'time to reach FID x' is measured in)."""
        return previous_seconds + time.perf_counter() - started

    def checkpoint_state() -> dict:
        return {"model": task.name, "config": to_dict(config), "step": step, "kimg": step * batch / 1000,
                "best_fid": best_fid, "wallclock_s": wallclock(), "params": parameter_counts(task, accelerator),
                "rng": rng_state(), **task.state_dict()}

    evaluator, conditional = None, None

    def evaluate(kimg: float, final: bool) -> None:
        nonlocal evaluator, conditional, best_fid
        from eval.fid import Evaluator
        if evaluator is None:
            from eval.physics import PhysicsTests, independent_real_frames
            from eval.stats import FrameStatistics
            stats, physics = None, None
            if config.eval.stats:
                stats = FrameStatistics(data.images, data.normalization)
                second_real = independent_real_frames(config.data.path, data.images.shape[-1],
                                                      config.eval.num_samples, config.data.label_exclude)
                physics = PhysicsTests(data.images, second_real, data.normalization)
            evaluator = Evaluator(data.images_uint8(), accelerator.device, batch_size=config.eval.batch_size,
                                  kid_subsets=config.eval.kid_subsets, kid_subset_size=config.eval.kid_subset_size,
                                  precision_recall=config.eval.precision_recall, stats=stats, physics=physics)
        metrics = evaluator.evaluate(task.sampler(), config.eval.num_samples)
        if final and config.eval.physics_final and evaluator.physics is not None and run.is_main:
            from eval.generate import generate_data_units
            generated = generate_data_units(task.sampler(), torch.arange(config.eval.num_samples), data.normalization,
                                            config.eval.batch_size)
            metrics["classifier"] = evaluator.physics.classifier_report(generated)
        if data.labels is not None and config.eval.stats and run.is_main:  # does a frame show its label?
            from eval.conditional import ConditionalEvaluation, builtin_renderer, training_metrics
            from training.labels import LabelEncoding
            if conditional is None:
                encoding = LabelEncoding.from_config(to_dict(config.data))
                conditional = ConditionalEvaluation(encoding, data.images, encoding.decode(data.labels),
                                                    render=builtin_renderer(to_dict(config.data)))
            metrics["conditional"] = training_metrics(conditional, task.sampler(), data.normalization,
                                                      config.eval.num_samples, config.eval.batch_size)
        run.log_metrics({"step": step, "kimg": round(kimg, 3), "wallclock_s": round(wallclock(), 2), **metrics}, kimg)
        write(f"kimg {kimg:.2f}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float)))
        if metrics["fid"] < best_fid:
            best_fid = metrics["fid"]
            run.save_checkpoint(checkpoint_state(), "best.pt")

    def save_grid(kimg: float) -> None:
        if run.is_main:
            with torch.no_grad():
                images = task.sampler()(torch.arange(GRID_SAMPLES))
            run.save_samples(to_uint8(images), kimg)

    averager = ScalarAverager(accelerator)
    if step == 0:
        save_grid(0.0)
    # Advances every step with Python numbers only (no device sync); the losses join it every log_every_kimg.
    progress = Progress("train", total=total_steps * batch / 1000, unit="kimg", done=step * batch / 1000,
                        rate_unit="img/s", rate_scale=1000, enabled=run.is_main)
    speed_probe = SpeedProbe() if accelerator.device.type == "cpu" else None
    window_start, window_images = time.perf_counter(), 0
    rank, world = accelerator.process_index, accelerator.num_processes
    while step < total_steps:
        real = data.batch(step, rank, world)
        averager.add(task.train_step(real, step))
        previous_kimg, step = step * batch / 1000, step + 1
        kimg, done = step * batch / 1000, step == total_steps
        window_images += batch
        progress.set(kimg)
        if speed_probe is not None and speed_probe.step_done(kimg):
            write(cpu_speed_notice(config, task.name, speed_probe.sec_per_kimg, progress.initial), file=sys.stderr)
            speed_probe = None

        if crossed(previous_kimg, kimg, config.train.log_every_kimg) or done:
            seconds = time.perf_counter() - window_start
            scalars = averager.pop()
            scalars["Progress/img_per_s"] = window_images / max(seconds, 1e-9)
            scalars["Progress/sec_per_kimg"] = seconds * 1000 / window_images
            scalars["Progress/kimg"] = kimg
            if torch.cuda.is_available():
                scalars["Resources/peak_gpu_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
            run.log_scalars(scalars, kimg)
            progress.set_postfix({k.split("/", 1)[-1]: v for k, v in scalars.items() if k.startswith("Loss/")})
        if crossed(previous_kimg, kimg, config.train.sample_every_kimg) or done:
            save_grid(kimg)
        if hasattr(task, "eval_due"):
            evaluate_now = task.eval_due(step, done)
        else:
            evaluate_now = crossed(previous_kimg, kimg, config.eval.every_kimg) or (done and config.eval.every_kimg > 0)
        if evaluate_now:
            with progress.paused():  # its own bars; img/s and the ETA count training alone
                evaluate(kimg, final=done)
        if crossed(previous_kimg, kimg, config.train.checkpoint_every_kimg) or done:
            run.save_checkpoint(checkpoint_state(), "last.pt")
        if crossed(previous_kimg, kimg, config.train.log_every_kimg) or done:
            window_start, window_images = time.perf_counter(), 0  # throughput excludes evaluation and saving

    progress.close()
    check_replicas_in_sync(accelerator, task.state_dict())
    finish(ctx)


def check_replicas_in_sync(accelerator, state: dict) -> None:
    """Raise if the processes' networks have drifted apart (a DDP bug would show here, not in a hang)."""
    if accelerator.num_processes == 1:
        return
    tensors = [t for name in ("G", "G_ema", "D") if name in state for t in state[name].values()
               if isinstance(t, torch.Tensor) and t.is_floating_point()]
    flat = torch.cat([t.detach().double().flatten() for t in tensors])
    weights = torch.arange(1, len(flat) + 1, dtype=torch.float64, device=flat.device)
    fingerprint = torch.stack([flat.sum(), (flat * weights).sum()]).to(accelerator.device)
    everyone = accelerator.gather(fingerprint[None])
    if not torch.equal(everyone.min(0).values, everyone.max(0).values):
        raise RuntimeError(f"networks differ between processes after training: {everyone.tolist()}")


def finish(ctx: Context) -> None:
    """Close files and leave the process group so every process exits 0 together."""
    ctx.run.close()
    ctx.accelerator.wait_for_everyone()
    stop_watching()
    ctx.accelerator.end_training()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
