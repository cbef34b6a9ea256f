"""Generation speed: frames/s against batch size for PyTorch eager, TorchScript and ONNX Runtime.

    OMP_NUM_THREADS=1 python benchmarks/gen_speed.py [--configs stylegan2_cpu32 small300] [--batches 1 16 256]
                                                     [--threads 1] [--device cpu|cuda] [--reps 3]

For each StyleGAN2 config's generator (random weights: speed does not depend on them), at each batch size:
  - eager:           eval/generate.py's path (nets.stylegan2.Sampler on sample indices: per-index latents
                     and noise, the inference path nets.stylegan2.inference_path picks for the device,
                     the data-unit mapping), and the same with the whole batch in one forward and each
                     kind of modulated convolution forced: eager_grouped_whole_batch (one grouped conv2d
                     per layer with per-sample weights: generate.py's path before inference_path) and
                     eager_shared_whole_batch (modulated activations, one shared-weight conv2d, demodulation);
  - torchscript:     the module eval/export.py writes (noise drawn from a seed input), traced;
  - onnxruntime:     the file eval/export.py writes, in an InferenceSession (CPU provider; CUDA's when
                     --device cuda and onnxruntime has it);
  - plain_conv:      every convolution the generator runs (recorded from one forward: 3x3 convolutions,
                     transposed ones for upsampling, the FIR filters, toRGB), replayed as bare
                     F.conv2d / F.conv_transpose2d calls of the same shapes on random tensors, and
                     main_conv: the largest of them alone.
GFLOP/s of every path counts the same FLOPs: those of the recorded convolutions
(torch.utils.flop_counter), so a path's `of_plain_conv` is the share of its time
that is convolution at plain-call speed. CPU times are the fastest of --reps of the
process CPU time (with one thread: the work done, not how busy a shared machine is);
CUDA times are wall times after synchronizing. Prints one JSON object.
"""

import os
import sys

if __package__ in (None, ""):
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse
import json
import platform
import tempfile
import time
import warnings

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from eval import export
from nets.stylegan2 import Sampler, build_generator
from train_stylegan2 import StyleGAN2Config
from training.config import build_config, to_dict
from training.normalize import normalization_from_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class RecordConvolutions(TorchDispatchMode):
    """Collects (input shape, weight shape, stride, padding, transposed, output_padding, groups) of every
    convolution run inside it."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.convolution.default:
            x, weight, _, stride, padding, _, transposed, output_padding, groups = args
            self.calls.append((tuple(x.shape), tuple(weight.shape), tuple(stride), tuple(padding), transposed,
                               tuple(output_padding), groups))
        return func(*args, **(kwargs or {}))


def plain_convolutions(calls, device) -> list:
    """One closure per recorded convolution: the bare F.conv2d / F.conv_transpose2d call on random tensors."""
    closures = []
    for x_shape, w_shape, stride, padding, transposed, output_padding, groups in calls:
        x, w = torch.randn(x_shape, device=device), torch.randn(w_shape, device=device)
        if transposed:
            closures.append(lambda x=x, w=w, s=stride, p=padding, o=output_padding, g=groups:
                            F.conv_transpose2d(x, w, stride=s, padding=p, output_padding=o, groups=g))
        else:
            closures.append(lambda x=x, w=w, s=stride, p=padding, g=groups: F.conv2d(x, w, stride=s, padding=p,
                                                                                      groups=g))
    return closures


def flops_of(closures) -> int:
    with FlopCounterMode(display=False) as counter:
        for run in closures:
            run()
    return counter.get_total_flops()


def best_seconds(run, reps: int, device: str) -> float:
    """Fastest of `reps` timed calls after one warm-up call."""
    run()
    times = []
    for _ in range(reps):
        if device == "cuda":
            torch.cuda.synchronize()
            start = time.perf_counter()
            run()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        else:
            start = time.process_time()
            run()
            times.append(time.process_time() - start)
    return min(times)


def onnx_session(module, inputs: dict, device: str, threads: int, folder: str):
    import onnxruntime

    path = os.path.join(folder, "G.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export.write_onnx(module, inputs, {}, path)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    providers = ["CPUExecutionProvider"]
    if device == "cuda" and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    session = onnxruntime.InferenceSession(path, options, providers=providers)
    return session, session.get_providers()[0]


def measure(config_name: str, batches: list[int], device: str, threads: int, reps: int, folder: str) -> dict:
    config = to_dict(build_config(StyleGAN2Config, os.path.join(ROOT, "configs", f"{config_name}.yaml"), []))
    torch.manual_seed(0)
    G = build_generator(config).eval().requires_grad_(False).to(device)
    normalization = normalization_from_config(config["data"])
    module = export.StyleGAN2Frames(G, normalization, noise="seed").eval()
    inputs = {"z": ["batch", G.z_dim], "truncation": ["batch"], "seed": ["batch"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, tuple(t.to(device) for t in export.example_inputs(inputs)),
                                 check_trace=False)
    session, provider = onnx_session(module.cpu(), inputs, device, threads, folder)
    module.to(device)
    result = {"resolution": G.resolution, "channels": [b.convs[-1].weight.shape[0] for b in G.synthesis.blocks],
              "onnxruntime_provider": provider, "batches": {}}
    for batch in batches:
        indices = torch.arange(batch)
        z, psi = torch.randn(batch, G.z_dim), torch.ones(batch)
        seed = torch.arange(batch, dtype=torch.int64)
        feeds = {"z": z.numpy(), "truncation": psi.numpy(), "seed": seed.numpy()}
        z, psi, seed = z.to(device), psi.to(device), seed.to(device)
        with RecordConvolutions() as recorder, torch.no_grad():
            G(z, noise_mode="const")
        convolutions = plain_convolutions(recorder.calls, device)
        flops = flops_of(convolutions)
        main = max(convolutions, key=lambda run: flops_of([run]))

        def eager(fused=None, frames_per_forward=None):
            sampler = Sampler(G, seed=0, fused=fused, frames_per_forward=frames_per_forward)
            return lambda: normalization.inverse(sampler(indices))

        paths = {"eager": eager(), "eager_grouped_whole_batch": eager(True, batch),
                 "eager_shared_whole_batch": eager(False, batch),
                 "torchscript": lambda: traced(z, psi, seed), "onnxruntime": lambda: session.run(["frames"], feeds),
                 "plain_conv": lambda: [run() for run in convolutions]}
        row = {"conv_gflop_per_frame": round(flops / batch / 1e9, 6),
               "main_conv_gflop_s": round(flops_of([main]) / best_seconds(main, reps, device) / 1e9, 2)}
        with torch.no_grad():
            for name, run in paths.items():
                seconds = best_seconds(run, reps, device)
                row[name] = {"frames_s": round(batch / seconds, 2), "gflop_s": round(flops / seconds / 1e9, 2)}
        for name in paths:
            row[name]["of_plain_conv"] = round(row[name]["gflop_s"] / row["plain_conv"]["gflop_s"], 3)
        row["onnxruntime_vs_eager"] = round(row["onnxruntime"]["frames_s"] / row["eager"]["frames_s"], 3)
        result["batches"][str(batch)] = row
        print(f"{config_name} batch {batch}: " + ", ".join(f"{k} {v['frames_s']}" for k, v in row.items()
                                                           if isinstance(v, dict)), file=sys.stderr)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["stylegan2_cpu32", "small300"])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 256])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import onnxruntime

    with tempfile.TemporaryDirectory() as folder:
        results = {config: measure(config, args.batches, args.device, args.threads, args.reps, folder)
                   for config in args.configs}
    print(json.dumps({
        "device": args.device, "threads": args.threads, "reps": args.reps,
        "load_average": os.getloadavg(), "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "configs": results,
    }, indent=1))


if __name__ == "__main__":
    main()
