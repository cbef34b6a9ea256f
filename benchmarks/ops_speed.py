"""Speed of the ops at the shapes StyleGAN2 uses for 64x64 images.

Times forward + backward of upfirdn2d (upsample2d, downsample2d, filter2d
with a 4-tap filter) and bias_act (lrelu) at batch 32, 32-256 channels and
4-64 px. On a GPU it compares the CUDA kernels with the PyTorch reference; on
the CPU it compares the reference with a straightforward conv2d formulation
(zero insertion + pad + depthwise conv2d + strided slicing), which the
reference must not be slower than. Prints one JSON object.

Run: python benchmarks/ops_speed.py [--device cpu|cuda] [--reps N] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import ops  # noqa: E402

# (channels, input resolution) of each resampling step in a 64x64 StyleGAN2
# with channels 256 at 4-8 px halving per octave down to 32 at 64 px.
UP_LEVELS = [(256, 4), (256, 8), (128, 16), (64, 32)]  # G: R -> 2R
DOWN_LEVELS = [(32, 64), (64, 32), (128, 16), (256, 8)]  # D: R -> R/2
ACT_LEVELS = [(256, 4), (256, 8), (128, 16), (64, 32), (32, 64)]
BATCH = 32


def baseline_upfirdn2d(x, f, up, down, padding, gain):
    """The literal formulation: zero insertion, pad, depthwise conv2d, slice."""
    n, c, h, w = x.shape
    if f.ndim == 1:
        f = torch.outer(f, f)
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1]).reshape(n, c, h * up, w * up)
    x = F.pad(x, padding)
    weight = (f.flip([0, 1]) * gain).to(x.dtype)[None, None].repeat(c, 1, 1, 1)
    x = F.conv2d(x, weight, groups=c)
    return x[:, :, ::down, ::down]


def time_fwd_bwd(fn, x, reps, device):
    """Forward + backward time in ms after one warm-up call.

    On a GPU: the median wall time. On the CPU: the fastest process CPU time,
    which (with one thread) measures the work done and not how busy the
    machine is; shared CI boxes make wall times swing by 10x.
    """
    clock = time.perf_counter if device == "cuda" else time.process_time
    times = []
    for i in range(reps + 1):
        xi = x.detach().requires_grad_()
        if device == "cuda":
            torch.cuda.synchronize()
        start = clock()
        y = fn(xi)
        y.backward(torch.ones_like(y))
        if device == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append((clock() - start) * 1e3)
    return statistics.median(times) if device == "cuda" else min(times)


def cases(device, dtype):
    """(name, input, {variant: fn}) for every measured shape."""
    f2d = ops.setup_filter([1, 3, 3, 1], device=device)  # what the networks use
    f1d = ops.setup_filter([1, 3, 3, 1], device=device, separable=True)
    gen = torch.Generator(device=device).manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=gen, device=device, dtype=dtype)

    for c, r in UP_LEVELS:
        yield f"upsample2d c{c} {r}->{2 * r}", rand(BATCH, c, r, r), {
            "ref": lambda t: ops.upsample2d(t, f2d, impl="ref"),
            "ref_separable": lambda t: ops.upsample2d(t, f1d, impl="ref"),
            "cuda": lambda t: ops.upsample2d(t, f2d, impl="cuda"),
            "baseline": lambda t: baseline_upfirdn2d(t, f2d, 2, 1, [2, 1, 2, 1], 4),
        }
    for c, r in DOWN_LEVELS:
        yield f"downsample2d c{c} {r}->{r // 2}", rand(BATCH, c, r, r), {
            "ref": lambda t: ops.downsample2d(t, f2d, impl="ref"),
            "ref_separable": lambda t: ops.downsample2d(t, f1d, impl="ref"),
            "cuda": lambda t: ops.downsample2d(t, f2d, impl="cuda"),
            "baseline": lambda t: baseline_upfirdn2d(t, f2d, 1, 2, [1, 1, 1, 1], 1),
        }
    for c, r in DOWN_LEVELS:
        # The blur before a strided convolution in D (conv2d_resample, 3x3, down 2).
        yield f"filter2d c{c} {r}", rand(BATCH, c, r, r), {
            "ref": lambda t: ops.upfirdn2d(t, f2d, padding=2, impl="ref"),
            "ref_separable": lambda t: ops.upfirdn2d(t, f1d, padding=2, impl="ref"),
            "cuda": lambda t: ops.upfirdn2d(t, f2d, padding=2, impl="cuda"),
            "baseline": lambda t: baseline_upfirdn2d(t, f2d, 1, 1, [2, 2, 2, 2], 1),
        }
    for c, r in ACT_LEVELS:
        b = rand(c)
        yield f"bias_act lrelu c{c} {r}", rand(BATCH, c, r, r), {
            "ref": lambda t, b=b: ops.bias_act(t, b, act="lrelu", impl="ref"),
            "cuda": lambda t, b=b: ops.bias_act(t, b, act="lrelu", impl="cuda"),
        }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0 = leave as is)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    on_gpu = args.device == "cuda"
    if on_gpu:
        from ops import _dispatch

        if not _dispatch.use_cuda(torch.zeros(1, device="cuda"), "cuda"):
            sys.exit("the CUDA extension is not available; see the warning above")

    results = []
    for name, x, variants in cases(args.device, dtype):
        wanted = ["cuda", "ref"] if on_gpu else ["ref", "ref_separable", "baseline"]
        row = {"case": name, "shape": list(x.shape)}
        for variant in wanted:
            if variant in variants:
                row[f"{variant}_ms"] = round(time_fwd_bwd(variants[variant], x, args.reps, args.device), 3)
        if on_gpu:
            row["speedup_cuda_vs_ref"] = round(row["ref_ms"] / row["cuda_ms"], 2)
        elif "baseline_ms" in row:
            row["speedup_ref_vs_baseline"] = round(row["baseline_ms"] / row["ref_ms"], 2)
            row["speedup_ref_separable_vs_baseline"] = round(row["baseline_ms"] / row["ref_separable_ms"], 2)
        results.append(row)

    def total(key):
        return round(sum(r[key] for r in results if key in r), 3)

    summary = {"ref_ms": total("ref_ms")}
    if on_gpu:
        summary["cuda_ms"] = total("cuda_ms")
        summary["speedup_cuda_vs_ref"] = round(summary["ref_ms"] / summary["cuda_ms"], 2)
    else:
        upfirdn = [r for r in results if "baseline_ms" in r]
        base = sum(r["baseline_ms"] for r in upfirdn)
        summary["upfirdn2d_ref_ms"] = round(sum(r["ref_ms"] for r in upfirdn), 3)
        summary["upfirdn2d_ref_separable_ms"] = round(sum(r["ref_separable_ms"] for r in upfirdn), 3)
        summary["upfirdn2d_baseline_ms"] = round(base, 3)
        summary["speedup_ref_vs_baseline"] = round(base / summary["upfirdn2d_ref_ms"], 2)
        summary["speedup_ref_separable_vs_baseline"] = round(base / summary["upfirdn2d_ref_separable_ms"], 2)
    report = {
        "device": torch.cuda.get_device_name() if on_gpu else platform.processor() or platform.machine(),
        "dtype": args.dtype,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch": BATCH,
        "reps": args.reps,
        "timing": "median wall time" if on_gpu else "fastest process CPU time",
        "forward_backward": True,
        "cases": results,
        "summary": summary,
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
