"""Precision/recall (k-NN manifolds) and the memorization check (eval/memorization.py).

The k-NN math is checked against brute force with scipy's cdist and against
a hand-computed case; the memorization check against a "generator" that
returns training images (copy rate 1, precision 1) and one that returns
noise (copy rate 0, precision 0). Plumbing tests use the pixel-statistics
stand-in for Inception from test_eval_fid; one test runs the real network.
"""

import csv
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.spatial.distance import cdist

import nets
from eval import fid, memorization, precision_recall as pr
from plumbing import ROOT, TINY_DATA, run_script
from test_eval_fid import PixelFeatures, run_main, toy_model, toy_sampler  # noqa: F401 (toy_model is a fixture)
from training.checkpoint import save_checkpoint
from training.data import load_images
from training.images import to_float, to_uint8

TINY_PATH, TINY_RESOLUTION = TINY_DATA[0].split("=", 1)[1], int(TINY_DATA[1].split("=")[1])


# ---------------------------------------------------------------------------
# Brute force, written from the paper's definitions with scipy

def brute_radii(points: np.ndarray, k: int) -> np.ndarray:
    distances = cdist(points, points)
    np.fill_diagonal(distances, np.inf)
    return np.sort(distances, axis=1)[:, k - 1]


def brute_precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    real, fake = real.astype(np.float64), fake.astype(np.float64)
    fake_to_real = cdist(fake, real)
    precision = (fake_to_real <= brute_radii(real, k)[None]).any(1).mean()
    recall = (fake_to_real.T <= brute_radii(fake, k)[None]).any(1).mean()
    return float(precision), float(recall)


@pytest.fixture
def small_blocks(monkeypatch):
    """Distances in blocks of a few rows, so the block bookkeeping is exercised."""
    monkeypatch.setattr(pr, "BLOCK_ELEMENTS", 1000)


# ---------------------------------------------------------------------------
# Precision and recall

@pytest.mark.parametrize("blocks", ["whole", "small"])
def test_precision_recall_equals_brute_force(request, blocks):
    if blocks == "small":
        request.getfixturevalue("small_blocks")
    rng = np.random.default_rng(0)
    cases = [(120, 90, 16, 0.3, 1.3), (60, 150, 64, 0.0, 0.85), (50, 50, 2048, 0.02, 1.02), (40, 80, 8, 1.0, 1.0),
             (200, 100, 2, 0.5, 0.5)]  # (real, generated, dimensions, shift, scale of the generated set)
    for n_real, n_fake, dims, shift, scale in cases:
        real = rng.normal(size=(n_real, dims)).astype(np.float32)
        fake = (rng.normal(size=(n_fake, dims)) * scale + shift).astype(np.float32)
        ours = pr.precision_recall(real, fake, k=3)
        theirs = brute_precision_recall(real, fake, k=3)
        assert ours == pytest.approx(theirs, abs=1e-12), (n_real, n_fake, dims)
        assert 0 < ours[0] < 1 or 0 < ours[1] < 1  # a case where the comparison means something
        for k in (1, 3, 5):
            np.testing.assert_allclose(pr.knn_radii(real, k).numpy(), brute_radii(real.astype(np.float64), k),
                                       rtol=1e-10)


def test_nearest_with_excluded_groups_equals_brute_force(small_blocks):
    rng = np.random.default_rng(1)
    queries, references = rng.normal(size=(30, 12)), rng.normal(size=(70, 12))
    query_groups, reference_groups = rng.integers(0, 5, 30), rng.integers(0, 5, 70)
    distances, indices = pr.nearest(queries, references, 4, query_groups=query_groups,
                                    reference_groups=reference_groups)
    full = cdist(queries, references)
    full[query_groups[:, None] == reference_groups[None]] = np.inf
    expected = np.argsort(full, axis=1)[:, :4]
    np.testing.assert_array_equal(indices.numpy(), expected)
    np.testing.assert_allclose(distances.numpy(), np.take_along_axis(full, expected, 1), rtol=1e-10)
    with pytest.raises(ValueError, match="eligible"):
        pr.nearest(queries, references, 4, query_groups=np.zeros(30), reference_groups=np.zeros(70))


def test_precision_recall_known_cases():
    rng = np.random.default_rng(2)
    real = rng.normal(size=(50, 32))
    assert pr.precision_recall(real, real) == (1.0, 1.0)
    assert pr.precision_recall(real, real + 100) == (0.0, 0.0)
    # Mode collapse: samples are 10 real images repeated -> all realistic, a fraction of the data covered.
    precision, recall = pr.precision_recall(real, np.repeat(real[:10], 3, axis=0))
    assert precision == 1.0 and 0.2 <= recall < 1.0
    # By hand, on a line with k=3: real {0,1,2,3} have radii {3,2,2,3}; of the samples {1.5, 6.5, 10, 20}
    # only 1.5 lies in a real ball (6.5 is 3.5 from 3); the samples' radii {18.5, 13.5, 10, 18.5} cover all reals.
    line_real, line_fake = np.array([[0.0], [1], [2], [3]]), np.array([[1.5], [6.5], [10], [20]])
    np.testing.assert_allclose(pr.knn_radii(line_real, 3).numpy(), [3, 2, 2, 3])
    assert pr.precision_recall(line_real, line_fake) == (0.25, 1.0)
    with pytest.raises(ValueError, match="more than 3"):
        pr.knn_radii(line_real[:3], 3)


def test_scores_report_precision_recall_when_asked():
    rng = np.random.default_rng(3)
    real, fake = rng.normal(size=(40, 24)), rng.normal(size=(30, 24)) + 0.2
    result = fid.scores(real, fake, kid_subsets=5, kid_subset_size=10)
    assert (result["precision"], result["recall"]) == pr.precision_recall(real, fake)
    assert list(result) == ["fid", "kid", "kid_std", "precision", "recall", "num_real", "num_fake"]
    assert "precision" not in fid.scores(real, fake, kid_subsets=5, kid_subset_size=10, precision_recall=False)
    with pytest.raises(fid.EvalError, match="at least 4 generated"):
        fid.scores(real, fake[:3], kid_subsets=5, kid_subset_size=2)
    assert "fid" in fid.scores(real, fake[:3], kid_subsets=5, kid_subset_size=2, precision_recall=False)


def test_fid_cli_json_has_precision_and_recall(tmp_path, monkeypatch, capsys, toy_model):
    monkeypatch.setattr(fid, "feature_extractor", lambda device: PixelFeatures())
    data = tmp_path / "data"
    data.mkdir()
    for i, image in enumerate(to_uint8(toy_sampler(seed=7)(torch.arange(12)))):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(data / f"{i:02d}.png")
    checkpoint = str(tmp_path / "toy.pt")
    save_checkpoint({"model": "toy", "config": {"data": {"path": str(data), "resolution": 32, "channels": 3}},
                     "G": {"scale": torch.tensor(0.8)}}, checkpoint)
    common = ["--ckpt", checkpoint, "--num-samples", "10", "--cache-dir", str(tmp_path / "cache"), "--json"]

    assert fid.main(common) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    real = fid.compute_features(load_images(str(data), 32, 3), PixelFeatures())
    fake = fid.compute_features(toy_sampler(seed=0, scale=0.8), PixelFeatures(), num_images=10)
    assert (result["precision"], result["recall"]) == pytest.approx(pr.precision_recall(real, fake), abs=1e-12)
    assert fid.main(common + ["--no-precision-recall"]) == 0
    assert "precision" not in json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert fid.main(common[:-1]) == 0  # the text line names them too
    assert "precision" in capsys.readouterr().out


# ---------------------------------------------------------------------------
# Memorization: the math

def test_nearest_training_equals_brute_force(small_blocks):
    rng = np.random.default_rng(4)
    real = torch.from_numpy(rng.integers(0, 256, (20, 1, 6, 6), dtype=np.uint8))
    generated = torch.from_numpy(rng.integers(0, 256, (15, 1, 6, 6), dtype=np.uint8))
    generated[3] = real[7].flip(1)  # a vertically flipped copy
    variants, names = memorization.flip_variants(real, hflip=True, vflip=True)
    assert names == ["none", "h", "v", "hv"]
    torch.testing.assert_close(variants[2 * 20 + 7], real[7].flip(1))  # variant-major; "v" flips rows
    result = memorization.nearest_training(memorization.pixel_points(generated), memorization.pixel_points(real),
                                           memorization.pixel_points(variants), threshold_quantile=0.1)

    def rms(a, b):
        return cdist(to_float(a).flatten(1).double().numpy(), to_float(b).flatten(1).double().numpy()) / 6

    to_variants = rms(generated, variants)
    np.testing.assert_allclose(result["distance"].numpy(), to_variants.min(1), rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(result["train"].numpy(), to_variants.argmin(1) % 20)
    np.testing.assert_array_equal(result["flip"].numpy(), to_variants.argmin(1) // 20)
    assert (int(result["train"][3]), names[int(result["flip"][3])], float(result["distance"][3])) == (7, "v", 0.0)
    real_to_variants = rms(real, variants)
    real_to_variants[np.arange(20)[:, None] == np.arange(80)[None] % 20] = np.inf  # its own flips are not "other"
    real_distance = real_to_variants.min(1)
    np.testing.assert_allclose(result["real_distance"].numpy(), real_distance, rtol=1e-10)
    threshold = np.quantile(real_distance, 0.1)
    assert result["threshold"] == pytest.approx(threshold, rel=1e-12)
    assert result["copy_rate"] == np.mean(to_variants.min(1) < threshold) >= 1 / 15
    np.testing.assert_allclose(result["ratio"].numpy(), to_variants.min(1) / real_distance[to_variants.argmin(1) % 20],
                               rtol=1e-10)


# ---------------------------------------------------------------------------
# Memorization: trivial generators through the command line

def trivial_sampler_from_checkpoint(checkpoint, device, seed=0, truncation=1.0, use_ema=True):
    """kind "copy": sample i is training image i mod N, flipped (h, v, hv) in later rounds when "flipped"; "noise"."""
    data = checkpoint["config"]["data"]
    images = to_float(load_images(data["path"], data["resolution"], data["channels"]))
    kind = checkpoint["G"]["kind"]

    def sample(indices: torch.Tensor) -> torch.Tensor:
        out = []
        for i in indices.tolist():
            if kind == "noise":
                g = torch.Generator().manual_seed(seed * 7919 + i)
                out.append(torch.rand(images.shape[1:], generator=g) * 2 - 1)
                continue
            image, variant = images[i % len(images)], (i // len(images)) % 4 if kind == "flipped" else 0
            out.append(image.flip([[], [2], [1], [1, 2]][variant]) if variant else image)
        return torch.stack(out)
    sample.channels, sample.resolution = data["channels"], data["resolution"]
    return sample


trivial_module = types.ModuleType("memorization_test_trivial_model")
trivial_module.sampler_from_checkpoint = trivial_sampler_from_checkpoint


@pytest.fixture
def trivial_checkpoints(tmp_path, monkeypatch) -> dict:
    monkeypatch.setitem(sys.modules, trivial_module.__name__, trivial_module)
    monkeypatch.setitem(nets.MODELS, "trivial", trivial_module.__name__)
    paths = {}
    for kind in ("copy", "flipped", "noise"):
        paths[kind] = str(tmp_path / f"{kind}.pt")
        config = {"data": {"path": TINY_PATH, "resolution": TINY_RESOLUTION, "channels": 1, "hflip": True,
                           "vflip": True}}
        save_checkpoint({"model": "trivial", "config": config, "G": {"kind": kind}}, paths[kind])
    return paths


def run_memorization(argv, capsys) -> tuple[int, str, str]:
    return run_main(argv, capsys, memorization.main)


def test_copier_and_noise_generators(tmp_path, monkeypatch, capsys, trivial_checkpoints):
    monkeypatch.setattr(fid, "feature_extractor", lambda device: PixelFeatures())
    real = load_images(TINY_PATH, TINY_RESOLUTION, 1)  # 32 frames
    reports = {}
    for kind, num in (("copy", 32), ("flipped", 128), ("noise", 40)):
        out = tmp_path / f"out-{kind}"
        code, stdout, _ = run_memorization(["--ckpt", trivial_checkpoints[kind], "--num", str(num), "--out", str(out),
                                            "--json", "--cache-dir", str(tmp_path / "cache")], capsys)
        assert code == 0
        reports[kind] = report = json.loads(stdout.strip().splitlines()[-1])
        assert report == json.loads((out / "report.json").read_text())
        assert report["num_real"] == 32 and report["num_fake"] == num and report["flips"] == ["none", "h", "v", "hv"]
        for space in ("pixel", "inception"):
            yardstick = report[space]["real_to_nearest_other_real"]
            assert report[space]["threshold"] == pytest.approx(yardstick["q05"]) and yardstick["q00"] > 0
        with open(out / "nearest.csv") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == num and rows[0]["sample"] == "0"

        # The grid: most suspicious pairs first, 8 pairs of (16 + 1 + 16) px plus 4 px gaps per row.
        grid = np.asarray(Image.open(out / "nearest_pixel.png"))
        assert grid.shape == (4 * (16 + 4) - 4, 8 * (33 + 4) - 4)
        first = report["pixel"]["most_suspicious"][0]
        sample = to_uint8(trivial_sampler_from_checkpoint(torch.load(trivial_checkpoints[kind], weights_only=True), "cpu")(
            torch.tensor([first["sample"]])))[0, 0]
        variant = {"none": [], "h": [1], "v": [0], "hv": [0, 1]}[first["flip"]]
        neighbour = real[first["train"], 0].flip(variant) if variant else real[first["train"], 0]
        np.testing.assert_array_equal(grid[:16, :16], sample.numpy())
        np.testing.assert_array_equal(grid[:16, 17:33], neighbour.numpy())
        assert (grid[:16, 16] == 128).all() and (grid[16:20] == 255).all()

    copy, flipped, noise = reports["copy"], reports["flipped"], reports["noise"]
    for space in ("pixel", "inception"):
        assert copy[space]["copy_rate"] == flipped[space]["copy_rate"] == 1.0
        assert copy[space]["generated_to_nearest_train"]["q100"] < 1e-6
        assert noise[space]["copy_rate"] == 0.0
        assert noise[space]["ratio"]["q00"] > 2  # twice as far as any real image from its nearest other
    assert copy["precision"] == copy["recall"] == 1.0 and copy["fid"] == pytest.approx(0, abs=1e-4)
    assert noise["precision"] == noise["recall"] == 0.0
    for entry in copy["pixel"]["most_suspicious"]:
        assert entry == {"sample": entry["sample"], "train": entry["sample"], "flip": "none", "distance": 0.0,
                         "ratio": 0.0}
    with open(tmp_path / "out-flipped" / "nearest.csv") as f:  # every flipped copy matched to its own flip
        rows = list(csv.DictReader(f))
    assert [row["pixel_flip"] for row in rows] == [flip for flip in ("none", "h", "v", "hv") for _ in range(32)]
    for space in ("pixel", "inception"):
        assert [int(row[f"{space}_train"]) for row in rows] == list(range(32)) * 4
        assert all(float(row[f"{space}_distance"]) == 0 for row in rows)

    # Without flips, flipped copies of asymmetric frames are no longer all copies in pixel space.
    code, stdout, _ = run_memorization(["--ckpt", trivial_checkpoints["flipped"], "--num", "128", "--no-flips",
                                        "--out", str(tmp_path / "no-flips"), "--json", "--no-cache"], capsys)
    no_flips = json.loads(stdout.strip().splitlines()[-1])
    assert code == 0 and no_flips["flips"] == ["none"]
    assert 0.25 <= no_flips["pixel"]["copy_rate"] < 1.0  # the unflipped quarter, and symmetric frames

    code, stdout, _ = run_memorization(["--ckpt", trivial_checkpoints["copy"], "--num", "8",
                                        "--out", str(tmp_path / "text"), "--no-cache"], capsys)
    assert code == 0 and "copy rate" in stdout and "precision 1.000" in stdout


def test_copier_and_noise_in_inception_space():
    # The real network on 8 frames: copies (flipped too) sit on their training image, noise far away.
    real = load_images("builtin:particles?count=8", 16, 1)
    variants, names = memorization.flip_variants(real, hflip=True, vflip=False)
    copies = torch.cat([real[:4], real[4:].flip(3)])
    noise = to_uint8(torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    extractor = fid.feature_extractor("cpu")
    features = fid.compute_features(torch.cat([variants, copies, noise]), extractor, batch_size=32)
    real_variants, copy_features, noise_features = features[:16], features[16:24], features[24:]
    copy = memorization.nearest_training(copy_features, real_variants[:8], real_variants)
    far = memorization.nearest_training(noise_features, real_variants[:8], real_variants)
    assert copy["copy_rate"] == 1.0 and copy["train"].tolist() == list(range(8))
    assert [names[f] for f in copy["flip"].tolist()] == ["none"] * 4 + ["h"] * 4
    assert float(copy["distance"].max()) < 1e-3 * copy["threshold"]
    assert far["copy_rate"] == 0.0 and float(far["ratio"].min()) > 1
    assert pr.precision_recall(real_variants[:8], copy_features)[0] == 1.0
    assert pr.precision_recall(real_variants[:8], noise_features)[0] == 0.0


def test_nearest_patches_tells_copies_in_place_from_moved_ones_and_new_ones():
    """SinGAN's check on a noise image: itself, itself with its halves swapped, and another noise image."""
    g = torch.Generator().manual_seed(3)
    real = torch.randint(0, 256, (1, 24, 24), generator=g, dtype=torch.uint8)
    other = torch.randint(0, 256, (1, 24, 24), generator=g, dtype=torch.uint8)
    samples = torch.stack([real, real.roll(12, dims=2), other])
    result = memorization.nearest_patches(samples, real, patch=6, stride=3)

    # 7x7 grid patches against every real patch (19x19 corners), brute force: overlapping ones (corners less
    # than 6 px apart) and the others; the yardstick is the real grid patches' distance to the others.
    def rms(a, b):
        return float((a - b).pow(2).mean().sqrt())

    def nearest(patch, y, x, overlapping):
        return min(rms(patch, q) for (v, u), q in real_patches.items() if (max(abs(v - y), abs(u - x)) < 6) == overlapping)

    real_float = to_float(real).double()
    real_patches = {(y, x): real_float[:, y:y + 6, x:x + 6] for y in range(19) for x in range(19)}
    corners = [(y, x) for y in range(0, 19, 3) for x in range(0, 19, 3)]
    assert result["corners"].tolist() == [list(c) for c in corners]
    for s, sample in enumerate(to_float(samples).double()):
        for p, (y, x) in enumerate(corners):
            patch = sample[:, y:y + 6, x:x + 6]
            assert float(result["near"][s, p]) == pytest.approx(nearest(patch, y, x, True), abs=1e-6)
            assert float(result["far"][s, p]) == pytest.approx(nearest(patch, y, x, False), abs=1e-6)
    yardstick = [nearest(real_patches[c], *c, False) for c in corners]
    assert result["real_distance"].tolist() == pytest.approx(yardstick, abs=1e-6)
    assert result["threshold"] == pytest.approx(float(np.quantile(yardstick, 0.05)), abs=1e-6)

    # What the shares mean, on a larger image so that the yardstick's quantile is well measured. Itself: every
    # patch copied in place. Swapped halves: the 14 of 15 patch columns that do not cross the seam are copies
    # from 32 px away. New noise images: copied from elsewhere about as often as the quantile (0.05) says,
    # since the search is the same as the real image's against itself; hardly ever in place.
    big = torch.randint(0, 256, (1, 64, 64), generator=g, dtype=torch.uint8)
    new = torch.randint(0, 256, (8, 1, 64, 64), generator=g, dtype=torch.uint8)
    shares = memorization.nearest_patches(torch.cat([big[None], big.roll(32, dims=2)[None], new]), big, patch=8,
                                          stride=4)
    assert float(shares["in_place"][0]) == 1.0 and float(shares["in_place"][1:].max()) < 0.02
    assert float(shares["moved"][1]) >= 14 / 15 and float(shares["moved"][2:].mean()) < 0.08
    assert shares["copy_rate"] == pytest.approx(1 / 10)
    with pytest.raises(memorization.EvalError, match="larger than"):
        memorization.nearest_patches(samples, real, patch=25, stride=3)


def test_memorization_cli_errors_are_one_line_and_exit_2(tmp_path, capsys, trivial_checkpoints):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    singan = tmp_path / "singan.pt"
    save_checkpoint({"model": "singan", "config": {}}, str(singan))
    few = tmp_path / "few.pt"
    save_checkpoint({"model": "trivial", "config": {"data": {"path": "builtin:particles?count=3", "resolution": 16,
                                                             "channels": 1}}, "G": {"kind": "copy"}}, str(few))
    for argv in (["--ckpt", str(tmp_path / "missing.pt")], ["--ckpt", str(corrupt)], ["--ckpt", str(singan)],
                 ["--ckpt", str(few)], ["--ckpt", trivial_checkpoints["copy"], "--data", str(tmp_path / "nowhere")]):
        code, _, err = run_memorization(argv + ["--no-cache", "--out", str(tmp_path / "out")], capsys)
        assert code == 2, argv
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), (argv, err)
    code, _, err = run_memorization(["--ckpt", trivial_checkpoints["copy"], "--num", "3"], capsys)
    assert code == 2 and "--num must be at least 4" in err  # argparse: usage, then the error
    assert not (tmp_path / "out").exists()
    for command in (["eval/memorization.py"], ["-m", "eval.memorization"]):  # both ways of running it
        run = subprocess.run([sys.executable, *command, "--ckpt", str(corrupt)], cwd=ROOT, capture_output=True,
                             text=True, timeout=120)
        assert run.returncode == 2 and run.stderr.strip().count("\n") == 0 and run.stderr.startswith("error: ")


# ---------------------------------------------------------------------------
# Distributed: the same numbers from 2 processes

WORKER = r'''
import json, os, sys
sys.path[:0] = [{root!r}, {tests!r}]
import torch, torch.distributed as dist
from accelerate import Accelerator
import nets
from test_eval_fid import PixelFeatures, toy_sampler
from test_memorization import trivial_module
from eval import fid, memorization
from training.images import to_uint8

accelerator = Accelerator(cpu=True)
rank = accelerator.process_index
real = to_uint8(toy_sampler(seed=9)(torch.arange(23)))
evaluator = fid.Evaluator(real, "cpu", batch_size=4, kid_subsets=10, kid_subset_size=10, cache=False,
                          extractor=PixelFeatures())
with open(os.path.join({out!r}, f"evaluator{{rank}}.json"), "w") as f:
    json.dump(evaluator.evaluate(toy_sampler(seed=1), 17), f)
sys.modules[trivial_module.__name__] = trivial_module
nets.MODELS["trivial"] = trivial_module.__name__
fid.feature_extractor = lambda device: PixelFeatures()
memorization.main(["--ckpt", {ckpt!r}, "--num", "21", "--batch-size", "4", "--out", {mem_out!r}, "--no-cache",
                   "--json"])
accelerator.end_training()
if dist.is_initialized():  # as training/loop.py ends: a group left to the interpreter's exit can abort it
    dist.destroy_process_group()
'''


def assert_same_report(a, b, where: str = "") -> None:
    """Equal JSON trees, numbers to 1e-9 relative (thread counts may change float64 rounding)."""
    assert type(a) is type(b), where
    if isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            assert_same_report(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_report(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12), where
    else:
        assert a == b, where


def test_two_processes_equal_one(tmp_path, monkeypatch, capsys, trivial_checkpoints):
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(root=ROOT, tests=os.path.join(ROOT, "tests"), out=str(tmp_path),
                                    ckpt=trivial_checkpoints["flipped"], mem_out=str(tmp_path / "two")))
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(script)], cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]

    one = fid.Evaluator(to_uint8(toy_sampler(seed=9)(torch.arange(23))), "cpu", batch_size=4, kid_subsets=10,
                        kid_subset_size=10, cache=False, extractor=PixelFeatures()).evaluate(toy_sampler(seed=1), 17)
    ranks = [json.loads((tmp_path / f"evaluator{rank}.json").read_text()) for rank in range(2)]
    assert ranks[0] == ranks[1] and 0 < one["precision"] and 0 < one["recall"]
    assert (ranks[0]["precision"], ranks[0]["recall"]) == (one["precision"], one["recall"])

    monkeypatch.setattr(fid, "feature_extractor", lambda device: PixelFeatures())
    assert memorization.main(["--ckpt", trivial_checkpoints["flipped"], "--num", "21", "--batch-size", "4",
                              "--out", str(tmp_path / "one"), "--no-cache", "--json"]) == 0
    single = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    printed = [line for line in run.stdout.strip().splitlines() if line.startswith("{")]
    assert len(printed) == 1  # process 0 reports
    double = json.loads(printed[0])
    for report in (single, double):
        report.pop("out")
    assert_same_report(double, single)
    grids = [(tmp_path / run / "nearest_pixel.png").read_bytes() for run in ("one", "two")]
    assert grids[0] == grids[1]


# ---------------------------------------------------------------------------
# Periodic evaluation in training

def test_training_logs_precision_recall_and_the_key_switches_them_off(tmp_path):
    common = [*TINY_DATA, "train.batch_size=8", "train.kimg=0.032", "train.log_every_kimg=0.016",
              "eval.every_kimg=0.032", "eval.num_samples=16", "eval.kid_subsets=10", "eval.kid_subset_size=8"]
    records = {}
    for setting in ("true", "false"):
        out = tmp_path / setting
        run_script("tests/toy_gan.py", [*common, f"eval.precision_recall={setting}", f"out_dir={out}"])
        [records[setting]] = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    on, off = records["true"], records["false"]
    assert 0 <= on["precision"] <= 1 and 0 <= on["recall"] <= 1 and on["num_fake"] == 16
    assert "precision" not in off and "recall" not in off
    assert off["fid"] == pytest.approx(on["fid"], rel=1e-6)  # same run, same samples

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(tmp_path / "true" / "tb"))
    events.Reload()
    assert events.Scalars("Metrics/precision")[0].value == pytest.approx(on["precision"])

    bad = run_script("tests/toy_gan.py", [*common, "eval.num_samples=3", f"out_dir={tmp_path / 'bad'}"],
                     expect_status=2)
    assert bad.stderr.strip().count("\n") == 0 and "eval.num_samples" in bad.stderr
