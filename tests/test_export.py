"""eval/export.py: exported generators (ONNX, TorchScript) run in a process without our code and give
eval/generate.py's frames in data units; the in-file noise generator; one-line errors.

    python -m pytest tests/test_export.py -q
"""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from plumbing import ROOT, run_script

sys.path.insert(0, ROOT)

import nets  # noqa: E402
from eval import export  # noqa: E402
from eval.generate import generate_data_units  # noqa: E402
from nets.stylegan2 import build_generator as build_stylegan2  # noqa: E402
from nets.sagan import SAGANModel, build_generator as build_sagan  # noqa: E402
from train_sagan import SAGANConfig  # noqa: E402
from train_stylegan2 import StyleGAN2Config  # noqa: E402
from training.config import build_config, from_dict, to_dict  # noqa: E402
from training.normalize import normalization_from_config  # noqa: E402
from training.seeding import latents_for_indices  # noqa: E402

# Frames of a log1p-mapped set spanning 0..5000 counts: the inverse mapping's exp amplifies float errors
# most at the top of the range, so this is the hard case. Tolerance: 1e-4 of the data range (0.5 counts).
DATA = ["data.normalize=log1p", "data.range=[0,5000]", "data.scale=20"]
TOLERANCE = 1e-4 * 5000

# Runs an exported file with onnxruntime or torch.jit alone, in a fresh process outside the repository.
RUNNER = """
import json, sys
import numpy as np
fmt, model_path, inputs_path, out_path = sys.argv[1:]
inputs = dict(np.load(inputs_path))
if fmt == "onnx":
    import onnxruntime
    session = onnxruntime.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    frames = session.run(["frames"], inputs)[0]
    info = session.get_modelmeta().custom_metadata_map
    names = [i.name for i in session.get_inputs()]
else:
    import torch
    extra = {"metadata.json": ""}
    module = torch.jit.load(model_path, _extra_files=extra)
    names = [n for n in ("z", "labels", "truncation", "seed") if n in inputs]
    frames = module(*[torch.from_numpy(inputs[n]) for n in names]).numpy()
    info = json.loads(extra["metadata.json"])
ours = sorted(m for m in sys.modules if m.split(".")[0] in ("nets", "ops", "training", "eval", "plumbing"))
assert not ours, f"the project was imported: {ours}"
np.save(out_path, frames)
print(json.dumps({"inputs": names, "metadata": info}))
"""


def run_exported(tmp_path, fmt: str, model_path, inputs: dict) -> tuple[np.ndarray, dict]:
    runner, inputs_path, out_path = tmp_path / "runner.py", tmp_path / "inputs.npz", tmp_path / "frames.npy"
    runner.write_text(RUNNER)
    np.savez(inputs_path, **{k: v.numpy() for k, v in inputs.items()})
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, str(runner), fmt, str(model_path), str(inputs_path), str(out_path)],
                            cwd=tmp_path, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return np.load(out_path), json.loads(result.stdout.strip().splitlines()[-1])


def randomized(module: torch.nn.Module) -> torch.nn.Module:
    """Non-zero everything a fresh network leaves at zero (mean w, noise strengths, biases, BatchNorm
    statistics), so truncation, noise and the mapping all show in the frames."""
    torch.manual_seed(3)
    with torch.no_grad():
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
            if name.endswith(("noise_strength", "bias", "w_avg", "running_mean")):
                tensor.copy_(torch.randn_like(tensor) * 0.3)
            elif name.endswith("running_var"):
                tensor.copy_(torch.rand_like(tensor) + 0.5)
    return module


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict:
    """Tiny StyleGAN2 and SAGAN checkpoints as training writes them (model, config, G_ema, kimg)."""
    folder = tmp_path_factory.mktemp("export")
    paths = {}
    config = to_dict(build_config(StyleGAN2Config, os.path.join(ROOT, "configs", "stylegan2_tiny.yaml"), DATA))
    paths["stylegan2"] = folder / "stylegan2.pt"
    torch.save({"model": "stylegan2", "config": config, "kimg": 1.5,
                "G_ema": randomized(build_stylegan2(config)).state_dict()}, paths["stylegan2"])
    config = to_dict(build_config(SAGANConfig, os.path.join(ROOT, "configs", "sagan_tiny.yaml"), DATA))
    G = build_sagan(from_dict(SAGANModel, config["model"], "model."), 16, 1)
    paths["sagan"] = folder / "sagan.pt"
    torch.save({"model": "sagan", "config": config, "kimg": 2.0, "G_ema": randomized(G).state_dict()},
               paths["sagan"])
    return paths


def export_file(path, fmt: str, out, *extra) -> None:
    assert export.main(["--ckpt", str(path), "--format", fmt, "--out", str(out), *extra]) == 0


@pytest.mark.parametrize("fmt", export.FORMATS)
@pytest.mark.parametrize("model", ["stylegan2", "sagan"])
def test_exported_file_gives_generate_py_frames_without_our_code(checkpoints, tmp_path, model, fmt):
    path = tmp_path / f"G.{fmt}"
    export_file(checkpoints[model], fmt, path, *(["--noise", "const"] if model == "stylegan2" else []))
    checkpoint = torch.load(checkpoints[model], weights_only=True)
    normalization = normalization_from_config(checkpoint["config"]["data"])
    indices, seed, psi = torch.arange(5), 7, 0.6  # 5 samples: the file was traced with 2
    options = {"noise_mode": "const"} if model == "stylegan2" else {}
    expected = generate_data_units(nets.load_sampler(checkpoint, "cpu", seed=seed, truncation=psi, **options),
                                   indices, normalization).numpy()
    z = latents_for_indices(indices, checkpoint["config"]["model"]["z_dim"], seed)
    frames, report = run_exported(tmp_path, fmt, path, {"z": z, "truncation": torch.full([5], psi)})
    assert frames.shape == expected.shape == (5, 1, 16, 16)
    assert expected.max() - expected.min() > 100  # frames span a good part of the 0..5000 range
    assert np.abs(frames - expected).max() <= TOLERANCE
    assert report["inputs"] == ["z", "truncation"]
    info = report["metadata"]
    assert (info["model"], info["resolution"], info["channels"], info["noise"]) == (
        model, "16", "1", "const" if model == "stylegan2" else "none")
    assert (info["data_normalize"], json.loads(info["data_range"]), float(info["data_scale"])) == (
        "log1p", [0.0, 5000.0], 20.0)
    assert float(info["kimg"]) == checkpoint["kimg"] and info["project_version"] != ""
    assert json.loads(info["inputs"])["z"] == ["batch", checkpoint["config"]["model"]["z_dim"]]


def test_seeded_noise_files_agree_and_depend_on_seed_alone(checkpoints, tmp_path):
    checkpoint = torch.load(checkpoints["stylegan2"], weights_only=True)
    sampler = nets.load_sampler(checkpoint, "cpu")
    frames_module = export.StyleGAN2Frames(sampler.G, normalization_from_config(checkpoint["config"]["data"]),
                                           noise="seed")
    z = latents_for_indices(torch.arange(4), sampler.G.z_dim, 0)
    inputs = {"z": z, "truncation": torch.ones(4), "seed": torch.tensor([11, -12, 11, 2**40], dtype=torch.int64)}
    with torch.no_grad():
        eager = frames_module(*inputs.values()).numpy()
    for fmt in export.FORMATS:
        path = tmp_path / f"G.{fmt}"
        export_file(checkpoints["stylegan2"], fmt, path)  # --noise seed is the default
        frames, report = run_exported(tmp_path, fmt, path, inputs)
        assert report["inputs"] == ["z", "truncation", "seed"] and report["metadata"]["noise"] == "seed"
        assert np.abs(frames - eager).max() <= TOLERANCE, fmt
    # Each frame follows its own (z, seed): a lone sample is the frame it was in the batch ...
    with torch.no_grad():
        alone = frames_module(z[1:2], torch.ones(1), inputs["seed"][1:2]).numpy()
        other_seed = frames_module(z, torch.ones(4), inputs["seed"] + 1).numpy()
    np.testing.assert_allclose(alone[0], eager[1], rtol=0, atol=TOLERANCE)
    # ... and another seed moves every frame by more than float noise (the noise reaches the output).
    assert all(np.abs(other_seed[i] - eager[i]).max() > 100 * TOLERANCE for i in range(4))


def test_seeded_normal_is_standard_normal_and_uncorrelated():
    from scipy import stats

    draws = export.seeded_normal(torch.arange(16, dtype=torch.int64), 4096).double()
    assert draws.shape == (16, 4096)
    torch.testing.assert_close(export.seeded_normal(torch.tensor([3]), 4096)[0], draws[3].float())
    flat = draws.flatten().numpy()
    assert abs(flat.mean()) < 4 / math.sqrt(flat.size) and abs(flat.std() - 1) < 0.01
    assert stats.kstest(flat, "norm").pvalue > 1e-3
    # Neighbouring counters (pixels) and neighbouring seeds (samples) are uncorrelated.
    bound = 4 / math.sqrt(draws.numel())
    assert abs(float((draws[:, 1:] * draws[:, :-1]).mean())) < bound
    assert abs(float((draws[1:] * draws[:-1]).mean())) < bound
    # Seeds far apart, and negative ones, are valid too and give other numbers.
    wide = export.seeded_normal(torch.tensor([-5, 0, 2**31 - 1, 2**31, 2**62], dtype=torch.int64), 64)
    assert torch.isfinite(wide).all() and len({tuple(row.tolist()) for row in wide}) == 5


def test_bad_checkpoint_and_unsupported_model_are_one_line_errors(tmp_path, capsys):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    singan = tmp_path / "singan.pt"
    torch.save({"model": "singan", "config": {}}, singan)
    incomplete = tmp_path / "incomplete.pt"  # a config that describes no generator
    torch.save({"model": "stylegan2", "config": {"data": {"labels": "labels.csv"}}}, incomplete)
    for path, message in ((garbage, "damaged or not a checkpoint"), (tmp_path / "missing.pt", "not found"),
                          (singan, "exports StyleGAN2 and SAGAN"), (incomplete, "cannot rebuild the generator")):
        out = tmp_path / "G.onnx"
        assert export.main(["--ckpt", str(path), "--format", "onnx", "--out", str(out)]) == 2
        error = capsys.readouterr().err
        assert len(error.strip().splitlines()) == 1 and message in error, error
        assert not out.exists()


def test_documented_numpy_example_runs_on_an_exported_file(checkpoints, tmp_path):
    with open(os.path.join(ROOT, "docs", "export.md")) as f:
        doc = f.read()
    section = doc[doc.index("### Frames with ONNX Runtime and numpy alone"):]
    example = section[section.index("```python\n") + len("```python\n"):section.index("```\n", 10)]
    assert len(example.strip().splitlines()) <= 16
    (tmp_path / "example.py").write_text(example)
    export_file(checkpoints["stylegan2"], "onnx", tmp_path / "G.onnx")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, env={**env, "OMP_NUM_THREADS": "1"},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    frames = np.load(tmp_path / "frames.npy")
    assert frames.shape == (100, 1, 16, 16) and 0 <= frames.min() < frames.max() <= 5000 + TOLERANCE


def test_gen_speed_benchmark_times_every_path():
    result = run_script("benchmarks/gen_speed.py",
                        ["--configs", "stylegan2_tiny", "--batches", "1", "3", "--reps", "1"])
    report = json.loads(result.stdout)
    assert report["threads"] == 1 and len(report["load_average"]) == 3
    batches = report["configs"]["stylegan2_tiny"]["batches"]
    paths = ("eager", "eager_grouped_whole_batch", "eager_shared_whole_batch", "torchscript", "onnxruntime",
             "plain_conv")
    for row in batches.values():
        assert all(row[path]["frames_s"] > 0 and row[path]["gflop_s"] > 0 for path in paths)
        assert row["plain_conv"]["of_plain_conv"] == 1.0 and row["onnxruntime_vs_eager"] > 0
    # FLOPs are counted from the convolutions each batch runs: the same per frame at any batch size.
    assert batches["1"]["conv_gflop_per_frame"] == batches["3"]["conv_gflop_per_frame"] > 0


# A conditional model's labels: energy (continuous, trained over 1..5) and type (three classes).
LABELS = ["data.label_columns=[energy:continuous,type:discrete]", "data.label_ranges=[[1.0,5.0],[]]",
          "data.label_classes=[[],[hits,shower,tracks]]"]


@pytest.mark.parametrize("fmt", export.FORMATS)
@pytest.mark.parametrize("model", ["stylegan2", "sagan"])
def test_conditional_generator_takes_labels_in_the_data_units(tmp_path, model, fmt):
    from training.labels import LabelEncoding
    if model == "stylegan2":
        config = to_dict(build_config(StyleGAN2Config, os.path.join(ROOT, "configs", "stylegan2_tiny.yaml"),
                                      DATA + LABELS))
        G = randomized(build_stylegan2(config))
    else:
        config = to_dict(build_config(SAGANConfig, os.path.join(ROOT, "configs", "sagan_tiny.yaml"), DATA + LABELS))
        G = randomized(build_sagan(from_dict(SAGANModel, config["model"], "model."), 16, 1, c_dim=4))
    encoding = LabelEncoding.from_config(config["data"])
    values = {"energy": [3.5, 1.0, 6.0, 2.25], "type": ["shower", "hits", "tracks", "tracks"]}
    table = encoding.encode(values)
    with torch.no_grad():  # the label must matter: give the label layers weight
        for name, tensor in G.named_parameters():
            if "embed" in name or "gain" in name or "shift" in name:
                tensor.copy_(torch.randn_like(tensor))
    path = tmp_path / "cond.pt"
    torch.save({"model": model, "config": config, "kimg": 1.0, "G_ema": G.state_dict(), "labels": table}, path)
    export_file(path, fmt, tmp_path / f"G.{fmt}", *(["--noise", "const"] if model == "stylegan2" else []))
    checkpoint = torch.load(path, weights_only=True)
    options = {"noise_mode": "const"} if model == "stylegan2" else {}
    sampler = nets.load_sampler(checkpoint, "cpu", seed=2, truncation=0.8, labels=table, **options)
    expected = generate_data_units(sampler, torch.arange(4), normalization_from_config(config["data"])).numpy()
    z = latents_for_indices(torch.arange(4), config["model"]["z_dim"], 2)
    raw = torch.tensor([[3.5, 1], [1.0, 0], [6.0, 2], [2.25, 2]])  # type as its class index
    frames, info = run_exported(tmp_path, fmt, tmp_path / f"G.{fmt}",
                                {"z": z, "labels": raw, "truncation": torch.full([4], 0.8)})
    assert np.abs(frames - expected).max() <= TOLERANCE
    assert info["inputs"] == ["z", "labels", "truncation"]
    columns = json.loads(info["metadata"]["label_columns"])
    assert columns == [{"name": "energy", "kind": "continuous", "range": [1.0, 5.0]},
                       {"name": "type", "kind": "discrete", "classes": ["hits", "shower", "tracks"]}]
    other = run_exported(tmp_path, fmt, tmp_path / f"G.{fmt}",
                         {"z": z, "labels": raw.flip(0), "truncation": torch.full([4], 0.8)})[0]
    assert np.abs(other - frames).max() > 100 * TOLERANCE  # the labels change the frames
