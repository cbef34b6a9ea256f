"""eval/fid.py and eval/generate.py: pytorch-fid equality, quantization, cache, sharding, CLIs.

Tests about plumbing use a pixel-statistics stand-in for Inception and a toy
sampler; the tests about numbers use the real network on 20 small images.
"""

import json
import os
import subprocess
import sys
import types
import warnings
from unittest import mock

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import nets
from eval import fid, generate
from eval.inception_weights import WeightsError, weights_present
from training.checkpoint import save_checkpoint
from training.images import to_uint8

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class PixelFeatures:
    """Stand-in for Inception: pooled pixel values and their squares (24-d), in milliseconds."""

    dims, name, device = 24, "test-pixel-features", torch.device("cpu")

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        pooled = F.adaptive_avg_pool2d(x, 2).flatten(1)
        return torch.cat([pooled, pooled.square()], 1)


def toy_sampler(seed: int = 0, scale: float = 1.0, channels: int = 3, resolution: int = 32):
    """Sample i is a function of (seed, i): smooth random blobs in [-1, 1]."""
    def sample(indices: torch.Tensor) -> torch.Tensor:
        images = []
        for i in indices.tolist():
            g = torch.Generator().manual_seed(seed * 1_000_003 + i)
            coarse = torch.rand(1, channels, 4, 4, generator=g) * 2 - 1
            images.append(F.interpolate(coarse, size=resolution, mode="bilinear", align_corners=False)[0])
        return torch.stack(images) * scale
    sample.channels, sample.resolution = channels, resolution
    return sample


# A model kind "toy" that nets.load_sampler can rebuild from a checkpoint: G holds a scale.
toy_module = types.ModuleType("eval_test_toy_model")
toy_module.sampler_from_checkpoint = lambda checkpoint, device, seed=0, truncation=1.0, use_ema=True: toy_sampler(
    seed, float(checkpoint["G_ema" if use_ema and "G_ema" in checkpoint else "G"]["scale"]) * truncation,
    checkpoint["config"]["data"]["channels"], checkpoint["config"]["data"]["resolution"])


@pytest.fixture
def toy_model(monkeypatch):
    monkeypatch.setitem(sys.modules, toy_module.__name__, toy_module)
    monkeypatch.setitem(nets.MODELS, "toy", toy_module.__name__)


def write_pngs(folder, count: int, seed: int, shift: float = 0.0, size: int = 64, gray: bool = False) -> str:
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    for i in range(count):
        image = np.zeros((size, size, 3))
        for k in range(3):
            cx, cy, r = *rng.uniform(0.15 * size, 0.85 * size, 2), rng.uniform(0.06, 0.2) * size
            image[..., k] = 200 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
        image = np.clip(image + rng.normal(shift, 10, image.shape), 0, 255).astype(np.uint8)
        Image.fromarray(image[..., 0] if gray else image).save(os.path.join(folder, f"{i:03d}.png"))
    return str(folder)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[str, str]:
    base = tmp_path_factory.mktemp("folders")
    return write_pngs(base / "real", 12, seed=0), write_pngs(base / "fake", 12, seed=1, shift=30)


@pytest.fixture(scope="module")
def inception():
    # The test command provisions the weights first; without them these tests fail rather than skip.
    assert weights_present(), "no Inception weights: run python eval/inception_weights.py"
    return fid.feature_extractor("cpu")


@pytest.fixture(scope="module")
def folder_scores(folders, inception) -> dict:
    """Our one-process scores of the two folders (batch 8: a full batch and a ragged one).

    One thread, like each torchrun worker: oneDNN's float rounding may depend on the thread count.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        real = fid.compute_features(fid.ImageFiles(folders[0]), inception, batch_size=8)
        fake = fid.compute_features(fid.ImageFiles(folders[1]), inception, batch_size=8)
    finally:
        torch.set_num_threads(threads)
    return {"real": real, "fake": fake, **fid.scores(real, fake)}


@pytest.fixture
def pytorch_fid_weights():
    """pytorch-fid's own loader reads the provisioned file (it has no classifier, which FID never uses)."""
    from pytorch_fid import inception as pytorch_fid_inception

    from eval.inception_weights import load_inception_state_dict

    with mock.patch.object(pytorch_fid_inception, "load_state_dict_from_url",
                           lambda *args, **kwargs: load_inception_state_dict()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# ---------------------------------------------------------------------------
# Numbers

def test_folder_features_equal_pytorch_fid(folders, folder_scores, pytorch_fid_weights):
    # pytorch-fid's own pipeline (PIL per image in a DataLoader, ToTensor, InceptionV3) on the same
    # folders gives the same features, up to the float32 rounding of our folded batch norms.
    from pytorch_fid.fid_score import IMAGE_EXTENSIONS, get_activations
    from pytorch_fid.inception import InceptionV3

    model = InceptionV3([3])
    theirs = []
    for folder in folders:
        files = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.split(".")[-1] in IMAGE_EXTENSIONS)
        theirs.append(get_activations(files, model, batch_size=50, device="cpu", num_workers=0))
    for ours, reference in zip((folder_scores["real"], folder_scores["fake"]), theirs):
        assert ours.shape == reference.shape == (12, 2048)
        assert np.abs(ours - reference).max() < 1e-4
    assert folder_scores["fid"] == pytest.approx(fid.frechet_distance_features(*theirs), abs=1e-3)
    assert abs(fid.frechet_distance_features(folder_scores["real"], folder_scores["real"])) < 1e-6


def test_folder_fid_equals_calculate_fid_given_paths(folders, folder_scores, pytorch_fid_weights):
    # End to end (its 2048-d scipy sqrtm takes ~15 s on two idle cores).
    from pytorch_fid.fid_score import calculate_fid_given_paths

    reference = calculate_fid_given_paths(list(folders), 50, "cpu", 2048, num_workers=0)
    assert folder_scores["fid"] == pytest.approx(reference, abs=1e-3)


def test_grayscale_counts_as_replicated_rgb(tmp_path, inception):
    gray = write_pngs(tmp_path / "gray", 1, seed=3, gray=True)
    rgb = tmp_path / "rgb"
    rgb.mkdir()
    for name in sorted(os.listdir(gray)):
        Image.open(os.path.join(gray, name)).convert("RGB").save(rgb / name)
    gray_images = fid.ImageFiles(gray)
    assert gray_images.decode(0).shape == (1, 64, 64)
    np.testing.assert_array_equal(fid.compute_features(gray_images, inception),
                                  fid.compute_features(fid.ImageFiles(str(rgb)), inception))


def test_earlier_blocks_keep_pytorch_fids_list_of_maps(inception):
    # SIFID (eval/sifid.py) takes block 1 at the image's own size from the same extractor.
    maps = fid.feature_extractor("cpu", blocks=(1,), resize=False)(torch.zeros(2, 1, 64, 64, dtype=torch.uint8))
    assert isinstance(maps, list) and maps[0].shape == (2, 192, 5, 5)


def test_scoring_in_memory_equals_scoring_saved_pngs(tmp_path, toy_model):
    # generate.py writes what the Evaluator scores: the same uint8 pixels, so the same features.
    checkpoint = str(tmp_path / "toy.pt")
    save_checkpoint({"model": "toy", "config": {"data": {"path": "unused", "resolution": 32, "channels": 3}},
                     "G": {"scale": torch.tensor(0.9)}}, checkpoint)
    assert generate.main(["--ckpt", checkpoint, "--num", "7", "--out", str(tmp_path / "png"), "--seed", "5",
                          "--batch-size", "3"]) == 0
    extractor = PixelFeatures()
    in_memory = fid.compute_features(toy_sampler(seed=5, scale=0.9), extractor, num_images=7, batch_size=4)
    from_files = fid.compute_features(fid.ImageFiles(str(tmp_path / "png")), extractor, batch_size=4)
    np.testing.assert_array_equal(in_memory, from_files)


# ---------------------------------------------------------------------------
# Cache

def test_cache_hit_gives_the_same_scores(tmp_path):
    real = to_uint8(toy_sampler(seed=9)(torch.arange(30)))
    options = dict(batch_size=8, kid_subsets=10, kid_subset_size=20, cache_dir=str(tmp_path))
    first = fid.Evaluator(real, "cpu", extractor=PixelFeatures(), **options)
    scores = first.evaluate(toy_sampler(seed=1), 12)
    assert first.cache_hit is False
    [cached] = os.listdir(tmp_path)
    with np.load(tmp_path / cached) as stats:  # also a pytorch-fid statistics file
        assert stats["mu"].shape == (24,) and stats["sigma"].shape == (24, 24) and stats["features"].shape == (30, 24)

    second = fid.Evaluator(real, "cpu", extractor=PixelFeatures(), **options)
    assert second.evaluate(toy_sampler(seed=1), 12) == scores
    assert second.cache_hit is True

    other = fid.Evaluator(real[:-1], "cpu", extractor=PixelFeatures(), **options)
    other.evaluate(toy_sampler(seed=1), 12)
    assert other.cache_hit is False and len(os.listdir(tmp_path)) == 2


# ---------------------------------------------------------------------------
# Distributed

WORKER = r'''
import json, os, sys
sys.path[:0] = [{root!r}, {tests!r}]
import numpy as np, torch, torch.distributed as dist
from accelerate import Accelerator
from test_eval_fid import PixelFeatures, toy_sampler
from eval import fid
from training.images import to_uint8

accelerator = Accelerator(cpu=True)  # as inside training: Accelerate initializes torch.distributed (gloo)
rank = accelerator.process_index
assert dist.is_initialized() and dist.get_world_size() == 2
real = to_uint8(toy_sampler(seed=9)(torch.arange(23)))
evaluator = fid.Evaluator(real, "cpu", batch_size=4, kid_subsets=10, kid_subset_size=10, cache=False,
                          extractor=PixelFeatures())
result = evaluator.evaluate(toy_sampler(seed=1), 17)
features = fid.compute_features(toy_sampler(seed=1), PixelFeatures(), num_images=17, batch_size=4)
np.save(os.path.join({out!r}, f"features{{rank}}.npy"), features)
with open(os.path.join({out!r}, f"result{{rank}}.json"), "w") as f:
    json.dump(result, f)
dist.barrier()
fid.main(["--real", {real_dir!r}, "--fake", {fake_dir!r}, "--json", "--no-cache", "--batch-size", "8"])
accelerator.end_training()
if dist.is_initialized():  # as training/loop.py ends: a group left to the interpreter's exit can abort it
    dist.destroy_process_group()
'''


def test_two_processes_equal_one(tmp_path, folders, folder_scores):
    # torchrun + Accelerate, as in a training run: Evaluator, then the CLI inside the same process group.
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(root=ROOT, tests=os.path.join(ROOT, "tests"), out=str(tmp_path),
                                    real_dir=folders[0], fake_dir=folders[1]))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(script)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.strip().splitlines()

    # Evaluator: 23 real images in batches of 4 over 2 processes (uneven), 17 samples.
    one = fid.Evaluator(to_uint8(toy_sampler(seed=9)(torch.arange(23))), "cpu", batch_size=4, kid_subsets=10,
                        kid_subset_size=10, cache=False, extractor=PixelFeatures()).evaluate(toy_sampler(seed=1), 17)
    ranks = [json.loads((tmp_path / f"result{rank}.json").read_text()) for rank in range(2)]
    assert ranks[0] == ranks[1]
    assert ranks[0]["num_real"] == 23 and ranks[0]["num_fake"] == 17
    for key in ("fid", "kid", "kid_std"):
        assert ranks[0][key] == pytest.approx(one[key], rel=1e-6, abs=1e-12)
    expected = fid.compute_features(toy_sampler(seed=1), PixelFeatures(), num_images=17, batch_size=4)
    for rank in range(2):  # every image exactly once, in order, on every process
        np.testing.assert_array_equal(np.load(tmp_path / f"features{rank}.npy"), expected)

    # The CLI with Inception under torchrun prints the one-process number.
    cli = json.loads(lines[-1])
    assert cli["num_real"] == cli["num_fake"] == 12
    for key in ("fid", "kid"):
        assert cli[key] == pytest.approx(folder_scores[key], rel=1e-6, abs=1e-9)


# ---------------------------------------------------------------------------
# Command lines

def run_main(argv, capsys, main=None) -> tuple[int, str, str]:
    """Run a CLI's main() in-process: (exit status, stdout, stderr); eval/fid.py unless `main` is given."""
    try:
        code = (main or fid.main)(argv)
    except SystemExit as exit_:  # argparse errors
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_errors_are_one_line_and_exit_2(tmp_path, capsys, folders):
    empty = tmp_path / "empty"
    empty.mkdir()
    single = write_pngs(tmp_path / "single", 1, seed=0)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    cases = [
        ["--real", str(tmp_path / "missing"), "--fake", folders[1]],
        ["--real", folders[0], "--fake", str(empty)],
        ["--real", single, "--fake", folders[1]],
        ["--ckpt", str(tmp_path / "missing.pt")],
        ["--ckpt", str(corrupt)],
    ]
    for argv in cases:
        code, out, err = run_main(argv + ["--json"], capsys)
        assert code == 2, argv
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), (argv, err)
    code, _, err = run_main(["--real", folders[0]], capsys)
    assert code == 2 and "--real and --fake" in err

    for command in (["eval/fid.py"], ["-m", "eval.fid"]):  # both ways of running it; no traceback
        run = subprocess.run([sys.executable, *command, "--real", single, "--fake", folders[1]], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 2 and run.stderr.strip().count("\n") == 0 and "at least 2" in run.stderr


def test_missing_weights_error_names_the_command(tmp_path, monkeypatch, capsys, folders):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-weights"))
    with pytest.raises(WeightsError, match="python eval/inception_weights.py"):
        fid.feature_extractor("cpu")
    code, _, err = run_main(["--real", folders[0], "--fake", folders[1], "--no-cache"], capsys)
    assert code == 2 and "python eval/inception_weights.py" in err and len(err.strip().splitlines()) == 1


def test_checkpoint_cli_scores_g_ema_against_its_own_data(tmp_path, monkeypatch, capsys, folders, toy_model):
    monkeypatch.setattr(fid, "feature_extractor", lambda device: PixelFeatures())
    checkpoint = str(tmp_path / "toy.pt")
    config = {"data": {"path": folders[0], "resolution": 32, "channels": 3}, "eval": {"num_samples": 9}}
    save_checkpoint({"model": "toy", "config": config, "G": {"scale": torch.tensor(0.2)},
                     "G_ema": {"scale": torch.tensor(1.0)}}, checkpoint)
    common = ["--ckpt", checkpoint, "--json", "--cache-dir", str(tmp_path / "cache")]

    code, out, _ = run_main(common, capsys)
    ema = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and set(ema) >= {"fid", "kid", "num_real", "num_fake"}
    assert ema["num_real"] == 12 and ema["num_fake"] == 9

    code, out, _ = run_main(common + ["--no-ema", "--num-samples", "11"], capsys)
    raw = json.loads(out.strip().splitlines()[-1])
    assert raw["num_fake"] == 11 and raw["fid"] != pytest.approx(ema["fid"])

    other = write_pngs(tmp_path / "other", 5, seed=4)
    code, out, _ = run_main(common + ["--data", other], capsys)
    assert json.loads(out.strip().splitlines()[-1])["num_real"] == 5


def test_generate_is_seeded_and_writes_a_grid(tmp_path, toy_model):
    checkpoint = str(tmp_path / "toy.pt")
    save_checkpoint({"model": "toy", "config": {"data": {"path": "unused", "resolution": 16, "channels": 1}},
                     "G": {"scale": torch.tensor(1.0)}}, checkpoint)

    def pixels(folder):
        return [np.asarray(Image.open(os.path.join(folder, name))) for name in sorted(os.listdir(folder))]

    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        assert generate.main(["--ckpt", checkpoint, "--num", "5", "--out", str(tmp_path / name),
                              "--seed", str(seed), "--batch-size", "2"]) == 0
    a, b, c = pixels(tmp_path / "a"), pixels(tmp_path / "b"), pixels(tmp_path / "c")
    assert sorted(os.listdir(tmp_path / "a")) == [f"{i:06d}.png" for i in range(5)]
    assert a[0].shape == (16, 16) and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not any(np.array_equal(x, y) for x, y in zip(a, c))

    assert generate.main(["--ckpt", checkpoint, "--num", "5", "--out", str(tmp_path / "grid.png"), "--grid"]) == 0
    grid = np.asarray(Image.open(tmp_path / "grid.png"))
    assert grid.shape == (2 * 16, 3 * 16)
    np.testing.assert_array_equal(grid[16:32, 0:16], a[3])

    assert generate.main(["--ckpt", str(tmp_path / "missing.pt"), "--num", "1", "--out", str(tmp_path / "x")]) == 2
