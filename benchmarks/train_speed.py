"""Training speed of any model's script: images/s, seconds per kimg, peak memory, parameter counts.

    python benchmarks/train_speed.py --config configs/small300.yaml [--steps 32] [--warmup 4] [key=value ...]
    python benchmarks/train_speed.py --config configs/sagan.yaml --steps 20 train.batch_size=64
    torchrun --nproc_per_node 2 benchmarks/train_speed.py --config configs/stylegan2_tiny.yaml

The training script is the one named by --script, else the train_<model>.py
whose model name appears in the config's file name, else the one whose config
class accepts the YAML. Its task is built exactly as the script builds it
(same config class, data and GANTask) and `--warmup` untimed steps run before
`--steps` timed ones. A timed step is everything `task.train_step` does (for
StyleGAN2: D, lazy R1, G, lazy path length, EMA), so use a multiple of the
lazy intervals. Prints one JSON object on the last line of stdout:

    {"img_per_s", "sec_per_kimg", "peak_mem_mb", "params_G", "params_D", "losses_finite",
     "host_to_device_per_step", "syncs_per_step", ...context}

peak_mem_mb is the peak CUDA memory allocated on a GPU and the peak resident
memory of the process on a CPU (`peak_mem_kind` says which). losses_finite
says whether the losses last logged (the lazy penalties' at their last step)
were all finite (fp16 overflow shows there); on a GPU, ops_impl says whether the custom ops ran their CUDA kernels
or fell back to the reference (SMALLGAN_OPS_IMPL=ref, failed build or check).
host_to_device_per_step and syncs_per_step are counted by training.transfers over
PROFILED_STEPS untimed steps after the timed ones (one process's; a whole lazy
cycle when the intervals allow), the counter also running through the warm-up so
that it knows the optimizers' host-side state.
"""

import os
import sys

if __package__ in (None, ""):
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse
import contextlib
import dataclasses
import glob
import importlib
import inspect
import json
import resource
import shutil
import tempfile
import time

import torch

from training.config import BaseConfig, ConfigError, build_config, exit_with_error

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROFILED_STEPS = 4


def script_module(path: str):
    """Import a training script (train_x.py, or a path to one) as a module without running it."""
    name = os.path.splitext(os.path.basename(path))[0]
    if not os.path.isfile(os.path.join(ROOT, f"{name}.py")):
        raise ConfigError(f"--script: no training script {name}.py in {ROOT}")
    return importlib.import_module(name)


def config_class(module):
    """The BaseConfig dataclass the script defines (the one no other of its configs contains)."""
    found = [v for v in vars(module).values() if inspect.isclass(v) and issubclass(v, BaseConfig)
             and v is not BaseConfig and v.__module__ == module.__name__]
    if not found:
        raise ConfigError(f"{module.__name__}.py defines no config class derived from BaseConfig")
    return max(found, key=lambda c: len(dataclasses.fields(c)))


def task_class(module):
    """The GANTask class the script defines (a class with train_step and sampler)."""
    found = [v for v in vars(module).values() if inspect.isclass(v) and v.__module__ == module.__name__
             and callable(getattr(v, "train_step", None)) and callable(getattr(v, "sampler", None))]
    if len(found) != 1:
        raise ConfigError(f"{module.__name__}.py: expected one GANTask class (train_step(real, step) and sampler) "
                          f"for the shared loop, found {[c.__name__ for c in found]}")
    return found[0]


def find_script(config_path: str, overrides: list[str]) -> str:
    scripts = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "train_*.py")))
    models = {s[len("train_"):-len(".py")]: s for s in scripts}
    base = os.path.basename(config_path).lower()
    named = [m for m in models if m in base]
    if named:
        return models[max(named, key=len)]
    accepting = []
    for model, script in models.items():
        try:
            build_config(config_class(script_module(script)), config_path, overrides)
            accepting.append(script)
        except ConfigError:
            pass
    if len(accepting) != 1:
        raise ConfigError(f"--config: cannot tell which training script {config_path} is for "
                          f"(candidates: {accepting or scripts}); pass --script train_<model>.py")
    return accepting[0]


def count_parameters(task, accelerator) -> dict[str, int]:
    """Trainable parameters of G and D as the checkpoints report them; from the state dicts
    (buffers included) for a task without G and D modules."""
    from training.loop import parameter_counts
    try:
        return parameter_counts(task, accelerator)
    except AttributeError:
        state = task.state_dict()
        return {name: sum(t.numel() for t in state.get(name, {}).values()
                          if isinstance(t, torch.Tensor) and t.is_floating_point()) for name in ("G", "D")}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="the training config (YAML)")
    parser.add_argument("--script", help="training script, e.g. train_stylegan2.py (default: inferred)")
    parser.add_argument("--steps", type=int, default=32, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=4, help="untimed steps first (allocation, compilation)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        exit_with_error("--steps must be >= 1 and --warmup >= 0")
    try:
        module = script_module(args.script or find_script(args.config, args.overrides))
        result = measure(module, args.config, args.overrides, args.steps, args.warmup)
    except ConfigError as e:
        exit_with_error(str(e))
    if result is not None:
        print(json.dumps(result))


def measure(module, config_path: str, overrides: list[str], steps: int, warmup: int) -> dict | None:
    """Build `module`'s task from the config exactly as its script does and time it (time_steps);
    the result on the main process, None on the others. Any number of calls share one process
    (benchmarks/gpu_check.py times every variant in one)."""
    task_cls, config_cls = task_class(module), config_class(module)
    from training.loop import setup, user_errors

    out_dir = tempfile.mkdtemp(prefix="train_speed-")
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    try:
        # Everything but the result goes to stderr, so stdout is one JSON line.
        with contextlib.redirect_stdout(sys.stderr):
            ctx = setup(config_cls, module.__doc__, ["--config", config_path, *overrides, f"out_dir={out_dir}"])
            with user_errors():
                task = task_cls(ctx)
            result = time_steps(ctx, task, steps, warmup)
        main_process = ctx.accelerator.is_main_process
        ctx.accelerator.wait_for_everyone()
        ctx.run.close()
        ctx.accelerator.end_training()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        return result if main_process else None
    finally:
        if int(os.environ.get("RANK", "0")) == 0:
            shutil.rmtree(out_dir, ignore_errors=True)


def time_steps(ctx, task, steps: int, warmup: int) -> dict:
    accelerator, config = ctx.accelerator, ctx.config
    rank, world = accelerator.process_index, accelerator.num_processes
    cuda = accelerator.device.type == "cuda"

    from training.transfers import HostTransfers
    last_logs = {}
    transfers = HostTransfers(accelerator.device)

    def run(step: int) -> None:
        last_logs.update(task.train_step(ctx.data.batch(step, rank, world), step) or {})

    with transfers:
        for step in range(warmup):
            run(step)
    if cuda:
        torch.cuda.synchronize()
    accelerator.wait_for_everyone()
    start = time.perf_counter()
    for step in range(warmup, warmup + steps):
        run(step)
    if cuda:
        torch.cuda.synchronize()
    accelerator.wait_for_everyone()
    seconds = time.perf_counter() - start
    counted_before = len(transfers.events)
    with transfers:
        for step in range(warmup + steps, warmup + steps + PROFILED_STEPS):
            run(step)
    counted = transfers.events[counted_before:]

    images = steps * config.train.batch_size
    params = count_parameters(task, accelerator)
    if cuda:
        peak_mb, kind = torch.cuda.max_memory_allocated() / 2**20, "cuda_allocated"
    else:
        peak_mb, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "cpu_rss"
    losses = [torch.as_tensor(v, dtype=torch.float32) for k, v in last_logs.items() if k.startswith("Loss/")]
    extra = {}
    if cuda:
        from ops import _dispatch
        extra["ops_impl"] = "cuda" if _dispatch.use_cuda(torch.empty(0, device=accelerator.device), None) else "ref"
    return {
        "img_per_s": round(images / seconds, 3),
        "sec_per_kimg": round(seconds * 1000 / images, 3),
        "peak_mem_mb": round(peak_mb, 1),
        "params_G": params["G"],
        "params_D": params["D"],
        "losses_finite": bool(all(torch.isfinite(v).all() for v in losses)),
        "host_to_device_per_step": sum(kind == "to_device" for kind, _, _ in counted) / PROFILED_STEPS,
        "syncs_per_step": sum(kind == "sync" for kind, _, _ in counted) / PROFILED_STEPS,
        **extra,
        "peak_mem_kind": kind,
        "model": task.name,
        "device": torch.cuda.get_device_name() if cuda else f"cpu ({torch.get_num_threads()} threads)",
        "processes": world,
        "batch_size": config.train.batch_size,
        "resolution": config.data.resolution,
        "precision": config.precision,
        "steps": steps,
        "warmup": warmup,
    }


if __name__ == "__main__":
    main()
