"""Export a checkpoint's generator as one ONNX or TorchScript file: latents in, frames in data units out.

    python eval/export.py --ckpt runs/x/checkpoints/best.pt --format onnx --out G.onnx [--noise seed|const]
    python eval/export.py --ckpt CKPT --format torchscript --out G.pt [--no-ema]

The file runs without this project (ONNX Runtime, or torch.jit.load): G_ema
(G with --no-ema) from latent to frame, the checkpoint's `data.normalize`
mapping inverted inside, so frames come out in the units of the training data
(counts, photo-electrons), exactly what `eval/generate.py --format npy` writes
for the same latents. Every input and the output have the batch first; any
batch size works.

Inputs:
  z           float32 [B, z_dim]  latents, standard normal (generate.py draws sample i's from (seed, i))
  labels      float32 [B, K]      conditional models only (trained with labels): one column per label in
                                  the metadata's `label_columns` order, in the units the data gave
                                  (energy 3.5 is 3.5); a discrete label as its class's index in that
                                  column's `classes` (0, 1, ...). The file encodes them as training did.
  truncation  float32 [B]         psi per sample: 1 = none, 0 = the mean. StyleGAN2 moves w towards
                                  the mean w stored in the file; SAGAN scales z (its mean is 0)
  seed        int64 [B]           StyleGAN2 with --noise seed (the default): sample b's noise maps are
                                  drawn inside the file from seed[b] (`seeded_normal`), so frame b depends
                                  on (z[b], truncation[b], seed[b]) alone. With --noise const the file
                                  uses the generator's fixed noise maps and has no seed input.
Output:
  frames      float32 [B, C, R, R] in data units

Metadata (ONNX metadata_props; TorchScript extra file `metadata.json`, see
`metadata`): model, resolution, channels, z_dim, the data mapping, kimg
trained, noise, inputs, project version, and for a conditional model
`label_columns`: each label's name, kind, training range or classes. The CUDA ops are exported
through their PyTorch reference (plain convolutions): the generator is moved
to the CPU first, where the ops always take the reference path. Errors are
one line, exit status 2.
"""

import os
import sys

if __package__ in (None, ""):
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse
import json
import subprocess
import warnings

import torch
from torch import nn

from eval.fid import checkpoint_sampler
from training.labels import LabelEncoding
from training.normalize import Normalization, normalization_from_config

FORMATS = ("onnx", "torchscript")
MODELS = ("stylegan2", "sagan")
NOISE_MODES = ("seed", "const")
ONNX_OPSET = 17
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The in-file noise generator: a counter-based hash in exact int64 arithmetic modulo the prime 2^31 - 1
# (every product stays below 2^62, so ONNX Runtime, TorchScript and eager PyTorch agree bit for bit),
# then Box-Muller. Quadratic rounds make it non-linear in (seed, counter); linear ones alone would
# make seed s + 1's numbers a shifted copy of seed s's.
_PRIME = 2**31 - 1
_ROUNDS = ((48271, 1013904223), (69621, 1664525), (16807, 2147483587))


def _hash(seed: torch.Tensor, counter: torch.Tensor) -> torch.Tensor:
    """int64 values in [0, 2^31 - 1) for every (seed [B, 1], counter [1, N]) pair."""
    key = torch.remainder(seed, _PRIME)
    high = torch.remainder(torch.div(seed, _PRIME, rounding_mode="floor"), _PRIME)  # seeds beyond the prime
    h = torch.remainder(key * 40692 + counter, _PRIME)
    for multiplier, constant in _ROUNDS:
        h = torch.remainder(h * multiplier + key + high, _PRIME)
        h = torch.remainder(h * h + constant, _PRIME)
    return h


def seeded_normal(seed: torch.Tensor, count: int) -> torch.Tensor:
    """[B, count] standard normal numbers, row b a function of seed[b] (int64 [B]) alone."""
    counter = torch.arange(2 * count, dtype=torch.int64, device=seed.device)[None]
    uniform = (_hash(seed.to(torch.int64)[:, None], counter).float() + 0.5) / _PRIME  # in (0, 1]
    radius = torch.sqrt(-2 * torch.log(uniform[:, :count]))
    return radius * torch.cos(2 * torch.pi * uniform[:, count:])


class LabelInput(nn.Module):
    """Labels in the data's units (discrete ones as class indices) [B, K] -> the encoded c [B, c_dim],
    as training.labels.LabelEncoding encodes them, in operations every runtime has."""

    def __init__(self, encoding: LabelEncoding):
        super().__init__()
        self.kinds = [(column.kind, column.width) for column in encoding.columns]
        self.register_buffer("low", torch.tensor([column.low for column in encoding.columns]))
        self.register_buffer("high", torch.tensor([column.high for column in encoding.columns]))

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        parts = []
        for i, (kind, width) in enumerate(self.kinds):
            x = labels[:, i:i + 1]
            if kind == "continuous":
                parts.append((x - self.low[i]) / (self.high[i] - self.low[i]) * 2 - 1)
            else:  # one-hot of the class index
                parts.append((x.round() == torch.arange(width, device=x.device, dtype=x.dtype)).to(x.dtype))
        return torch.cat(parts, dim=1)


class StyleGAN2Frames(nn.Module):
    """(z, truncation[, seed]) -> frames in data units, through G's non-fused (shared-weight) convolutions."""

    def __init__(self, G, normalization: Normalization, noise: str):
        super().__init__()
        self.G, self.normalization, self.noise = G, normalization, noise

    def forward(self, z: torch.Tensor, truncation: torch.Tensor, seed: torch.Tensor | None = None) -> torch.Tensor:
        G = self.G
        w = G.mapping.w_avg.lerp(G.mapping(z), truncation[:, None])
        ws = w[:, None].expand(-1, G.num_ws, -1)
        noise = G.noise_from_flat(seeded_normal(seed, G.noise_numel)) if self.noise == "seed" else None
        images = G.synthesis(ws, noise=noise, noise_mode="const", fused=False)
        return self.normalization.inverse(images.float().clamp(-1, 1))


class ConditionalStyleGAN2Frames(StyleGAN2Frames):
    """(z, labels, truncation[, seed]) -> frames in data units."""

    def __init__(self, G, normalization: Normalization, noise: str, encoding: LabelEncoding):
        super().__init__(G, normalization, noise)
        self.label_input = LabelInput(encoding)

    def forward(self, z: torch.Tensor, labels: torch.Tensor, truncation: torch.Tensor,
                seed: torch.Tensor | None = None) -> torch.Tensor:
        G = self.G
        w = G.mapping.w_avg.lerp(G.mapping(z, self.label_input(labels)), truncation[:, None])
        ws = w[:, None].expand(-1, G.num_ws, -1)
        noise = G.noise_from_flat(seeded_normal(seed, G.noise_numel)) if self.noise == "seed" else None
        images = G.synthesis(ws, noise=noise, noise_mode="const", fused=False)
        return self.normalization.inverse(images.float().clamp(-1, 1))


class SAGANFrames(nn.Module):
    """(z, truncation) -> frames in data units."""

    def __init__(self, G, normalization: Normalization):
        super().__init__()
        self.G, self.normalization = G, normalization

    def forward(self, z: torch.Tensor, truncation: torch.Tensor) -> torch.Tensor:
        return self.normalization.inverse(self.G(z * truncation[:, None]).float().clamp(-1, 1))


class ConditionalSAGANFrames(SAGANFrames):
    """(z, labels, truncation) -> frames in data units."""

    def __init__(self, G, normalization: Normalization, encoding: LabelEncoding):
        super().__init__(G, normalization)
        self.label_input = LabelInput(encoding)

    def forward(self, z: torch.Tensor, labels: torch.Tensor, truncation: torch.Tensor) -> torch.Tensor:
        images = self.G(z * truncation[:, None], self.label_input(labels))
        return self.normalization.inverse(images.float().clamp(-1, 1))


def project_version() -> str:
    """The commit of this checkout (with -dirty for uncommitted changes), or 'unknown' outside git."""
    try:
        result = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"], capture_output=True,
                                text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 and result.stdout.strip() else "unknown"


def metadata(checkpoint: dict, normalization: Normalization, inputs: dict, noise: str | None,
             use_ema: bool) -> dict[str, str]:
    """What a user of the file needs to know, as string key/value pairs (ONNX metadata_props)."""
    data = checkpoint["config"]["data"]
    mapping = {
        "linear": "x = low + (y + 1) / 2 * (high - low)",
        "log1p": "x = scale * expm1(t), t = log1p(low/scale) + (y + 1) / 2 * (log1p(high/scale) - log1p(low/scale))",
        "asinh": "x = scale * sinh(t), t = asinh(low/scale) + (y + 1) / 2 * (asinh(high/scale) - asinh(low/scale))",
    }[normalization.kind]
    return {
        "model": checkpoint["model"],
        "generator": "G_ema" if use_ema and "G_ema" in checkpoint else "G",
        "resolution": str(data["resolution"]),
        "channels": str(data["channels"]),
        "z_dim": str(inputs["z"][1]),
        "data_normalize": normalization.kind,
        "data_range": json.dumps([normalization.low, normalization.high]),
        "data_scale": repr(normalization.scale),
        "data_mapping": f"network output y in [-1, 1] (clamped) -> data units x: {mapping}",
        "kimg": repr(float(checkpoint.get("kimg", 0.0))),
        "noise": noise or "none",
        "inputs": json.dumps({name: shape for name, shape in inputs.items()}),
        "outputs": json.dumps({"frames": ["batch", data["channels"], data["resolution"], data["resolution"]]}),
        "label_columns": json.dumps([{"name": c.name, "kind": c.kind, **({"range": [c.low, c.high]}
                                     if c.kind == "continuous" else {"classes": list(c.classes)})}
                                    for c in LabelEncoding.from_config(data).columns]),
        "project": "smallgan",
        "project_version": project_version(),
    }


def exportable(checkpoint: dict, sampler, noise: str | None) -> tuple[nn.Module, dict]:
    """The module to export and its inputs' shapes ('batch' for the free dimension), in argument order."""
    data = checkpoint["config"].get("data", {})
    normalization, encoding = normalization_from_config(data), LabelEncoding.from_config(data)
    inputs = {"z": ["batch", sampler.G.z_dim]}
    if encoding.c_dim:
        inputs["labels"] = ["batch", len(encoding.columns)]
    inputs["truncation"] = ["batch"]
    if checkpoint["model"] == "stylegan2":
        if noise == "seed":
            inputs["seed"] = ["batch"]
        module = (ConditionalStyleGAN2Frames(sampler.G, normalization, noise, encoding) if encoding.c_dim
                  else StyleGAN2Frames(sampler.G, normalization, noise))
    else:
        module = (ConditionalSAGANFrames(sampler.G, normalization, encoding) if encoding.c_dim
                  else SAGANFrames(sampler.G, normalization))
    return module.eval(), inputs


def example_inputs(inputs: dict, batch: int = 2) -> tuple[torch.Tensor, ...]:
    """Inputs of the given shapes with `batch` samples (what tracing runs the module on)."""
    generator = torch.Generator().manual_seed(0)
    tensors = {"z": torch.randn(batch, inputs["z"][1], generator=generator),
               "labels": torch.zeros(batch, inputs.get("labels", [0, 0])[1]),  # class 0, or the low end mapped
               "truncation": torch.full([batch], 0.7), "seed": torch.arange(batch, dtype=torch.int64)}
    return tuple(tensors[name] for name in inputs)


def write_onnx(module: nn.Module, inputs: dict, info: dict, path: str) -> None:
    import onnx

    # Normalization.inverse of log1p data uses expm1, which the ONNX opset lacks: exp(x) - 1 in its place.
    torch.onnx.register_custom_op_symbolic(
        "aten::expm1", lambda g, x: g.op("Sub", g.op("Exp", x), g.op("Constant", value_t=torch.tensor(1.0))),
        ONNX_OPSET)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        torch.onnx.export(module, example_inputs(inputs), tmp, dynamo=False, opset_version=ONNX_OPSET,
                          input_names=list(inputs), output_names=["frames"],
                          dynamic_axes={name: {0: "batch"} for name in [*inputs, "frames"]})
        model = onnx.load(tmp)
        model.producer_name = "smallgan eval/export.py"
        for key, value in info.items():
            model.metadata_props.add(key=key, value=value)
        onnx.save(model, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_torchscript(module: nn.Module, inputs: dict, info: dict, path: str) -> None:
    traced = torch.jit.trace(module, example_inputs(inputs), check_trace=False)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        torch.jit.save(traced, tmp, _extra_files={"metadata.json": json.dumps(info)})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Export a checkpoint's generator (latents -> frames in data "
                                                 "units) as ONNX or TorchScript.")
    parser.add_argument("--ckpt", required=True, help="training checkpoint (.pt) of a StyleGAN2 or SAGAN run")
    parser.add_argument("--format", choices=FORMATS, required=True)
    parser.add_argument("--out", required=True, help="the file to write")
    parser.add_argument("--noise", choices=NOISE_MODES,
                        help="StyleGAN2: noise maps drawn from a seed input (default) or the fixed maps")
    parser.add_argument("--no-ema", action="store_true", help="export G, not G_ema")
    args = parser.parse_args(argv)

    from training.checkpoint import CheckpointError, load_checkpoint
    from training.config import ConfigError

    try:
        stored = load_checkpoint(args.ckpt)
        if stored["model"] not in MODELS:
            raise CheckpointError(f"{args.ckpt} is a {stored['model']} checkpoint; eval/export.py exports "
                                  f"StyleGAN2 and SAGAN generators")
        checkpoint, sampler = checkpoint_sampler(args.ckpt, "cpu", use_ema=not args.no_ema)
        if checkpoint["model"] == "sagan" and args.noise:
            raise CheckpointError("SAGAN has no noise inputs; leave out --noise")
        noise = (args.noise or "seed") if checkpoint["model"] == "stylegan2" else None
        module, inputs = exportable(checkpoint, sampler, noise)
    except (CheckpointError, ConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.format == "onnx":
        try:
            import onnx  # noqa: F401
        except ImportError:
            print("error: --format onnx needs the onnx package: pip install onnx", file=sys.stderr)
            return 2
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    info = metadata(checkpoint, module.normalization, inputs, noise, use_ema=not args.no_ema)
    with warnings.catch_warnings():  # both exporters announce their successors; the files are what we test
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding")  # the weight flip's Slice; harmless
        with torch.no_grad():
            (write_onnx if args.format == "onnx" else write_torchscript)(module, inputs, info, args.out)
    print(f"wrote {args.out} ({args.format}, {checkpoint['model']}, inputs {', '.join(inputs)} -> frames in "
          f"data units)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
