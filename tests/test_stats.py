"""eval/stats.py: each statistic against an independent computation on hand-made frames, the
real-vs-real floor, wrong generators flagged, the statistics inside the sharded Evaluator, the CLI."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.stats
import torch

from eval import stats
from eval.stats import FrameStatistics, frame_features, otsu_threshold, radial_power_spectrum, w1_and_ks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("seed", [0, 1])
def test_w1_and_ks_equal_scipy(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(0, 1, 300), rng.gamma(2, 1, 170)
    ties_a, ties_b = rng.integers(0, 6, 50).astype(float), rng.integers(0, 6, 80).astype(float)
    for x, y in ((a, b), (ties_a, ties_b)):
        w1, ks = w1_and_ks(x, y)
        assert w1 == pytest.approx(scipy.stats.wasserstein_distance(x, y), rel=1e-12)
        assert ks == pytest.approx(scipy.stats.ks_2samp(x, y).statistic, rel=1e-12)
    assert w1_and_ks([0.0, 0.0], [3.0]) == (3.0, 1.0)  # all mass moved by 3
    assert w1_and_ks([], [1.0]) == (None, None)


def blob_frames() -> np.ndarray:
    """Two 8x8 frames with known clusters above threshold 0.5.

    Frame 0: a 2x2 block of 3s (size 4, sum 12), a diagonal pair of 5s (8-connected: one cluster,
    size 2, sum 10), and a lone 1 at the bottom edge. Frame 1: a lone 7 at the top edge, directly
    below frame 0's bottom-edge pixel in the stack (must not join it), plus background 0.2.
    """
    frames = np.zeros((2, 8, 8))
    frames[0, 1:3, 1:3] = 3
    frames[0, 5, 5], frames[0, 6, 6] = 5, 5
    frames[0, 7, 0] = 1
    frames[1] = 0.2
    frames[1, 0, 0] = 7
    return frames


def test_clusters_occupancy_and_totals_on_hand_made_frames():
    features = frame_features(blob_frames(), threshold=0.5)
    assert features["clusters"].tolist() == [3, 1]
    assert sorted(features["cluster_sizes"].tolist()) == [1, 1, 2, 4]
    assert sorted(features["cluster_intensities"].tolist()) == [1, 7, 10, 12]
    np.testing.assert_allclose(features["occupancy"], [7 / 64, 1 / 64])
    np.testing.assert_allclose(features["totals"], [23, 7 + 63 * 0.2])


def test_power_spectrum_of_a_cosine_is_one_ring():
    h = w = 16
    k, amplitude = 3, 2.0
    frame = amplitude * np.cos(2 * np.pi * k * np.arange(w) / w)[None, :].repeat(h, 0)
    spectrum = radial_power_spectrum(frame[None])
    # |FFT|² has two peaks (A·H·W/2)² at (0, ±k); the ring of radius k averages them over its pixels.
    ring_pixels = sum(1 for y in range(-h // 2, h // 2) for x in range(-w // 2, w // 2)
                      if round(float(np.hypot(y, x))) == k)
    expected = np.zeros(8)
    expected[k - 1] = 2 * (amplitude * h * w / 2) ** 2 / ring_pixels
    np.testing.assert_allclose(spectrum, expected, atol=1e-6 * expected.max())


def test_otsu_splits_two_levels():
    values = np.concatenate([np.full(900, 10.0), np.full(100, 200.0)]) + np.random.default_rng(0).normal(0, 1, 1000)
    assert 80 < otsu_threshold(values) < 130  # the middle of the empty gap between the two classes


def detector_frames(count: int, seed: int, gain: float = 1.0, hits: float = 6.0) -> np.ndarray:
    """Sparse frames: Poisson-many Gaussian spots of exponential brightness on Gaussian noise, in counts."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:32, :32]
    frames = rng.normal(100, 3, (count, 32, 32))
    for frame in frames:
        for _ in range(rng.poisson(hits)):
            y, x = rng.uniform(0, 32, 2)
            frame += gain * rng.exponential(400) * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.2 ** 2))
    return frames


def test_floor_is_small_and_wrong_generators_are_flagged():
    real = FrameStatistics(detector_frames(300, seed=0), threshold=130.0)
    good = real.report(detector_frames(300, seed=1))
    brighter = real.report(detector_frames(300, seed=2, gain=1.5))
    fewer = real.report(detector_frames(300, seed=3, hits=3.0))
    floor = real.floor
    # The floor is small against the data's own scale: pixels are ~100 counts, totals ~1e5 counts.
    assert floor["pixel_ks"] < 0.02 and floor["total_w1"] < 0.05 * real.real_features["totals"].mean()
    for key in stats.STATISTICS:
        assert good[key] < 3 * floor[key] + 1e-9, key  # a right generator stays near the floor
    for key in ("total_w1", "cluster_intensity_w1", "spectrum_log_ratio"):
        assert brighter[key] > 4 * floor[key], key  # 1.5x brighter hits
    for key in ("total_w1", "occupancy_w1", "clusters_w1", "spectrum_log_ratio"):
        assert fewer[key] > 4 * floor[key], key  # half the hits


def assert_reports_equal(a: dict, b: dict) -> None:
    assert a["floor"] == pytest.approx(b["floor"], rel=1e-9)
    assert {k: v for k, v in a.items() if k != "floor"} == pytest.approx({k: v for k, v in b.items() if k != "floor"},
                                                                        rel=1e-9)


def test_cli_real_fake_json_and_plots(tmp_path, capsys):
    np.save(tmp_path / "real.npy", detector_frames(40, seed=0).astype(np.float32))
    np.save(tmp_path / "fake.npy", detector_frames(30, seed=1, gain=2.0).astype(np.float32))
    code = stats.main(["--real", str(tmp_path / "real.npy"), "--fake", str(tmp_path / "fake.npy"),
                       "--threshold", "130", "--json", "--plots", str(tmp_path / "plots")])
    captured = capsys.readouterr()
    assert code == 0
    report = json.loads(captured.out.strip().splitlines()[-1])
    expected = FrameStatistics(detector_frames(40, seed=0).astype(np.float32), threshold=130).report(
        detector_frames(30, seed=1, gain=2.0).astype(np.float32))
    assert_reports_equal(report, expected)
    assert "pixel intensity W1" in captured.err  # the table goes to stderr under --json
    assert sorted(os.listdir(tmp_path / "plots")) == sorted(
        f"{n}.png" for n in ("pixel_intensity", "total_intensity", "occupancy", "clusters_per_frame",
                             "cluster_size", "cluster_intensity", "power_spectrum"))
    assert stats.main(["--real", str(tmp_path / "missing.npy"), "--fake", str(tmp_path / "fake.npy")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: data.path: {tmp_path}/missing.npy does not exist; give a .npy/.npz stack, file.h5:/dataset, "
        f"a folder, a .zip, an image or builtin:particles"]


# ---------------------------------------------------------------------------
# Inside the Evaluator, sharded over processes

WORKER = r'''
import json, os, sys
sys.path[:0] = [{root!r}, {tests!r}]
import torch, torch.distributed as dist
from accelerate import Accelerator
from test_eval_fid import PixelFeatures, toy_sampler
from test_stats import evaluator_with_stats

accelerator = Accelerator(cpu=True)  # as inside training
assert dist.is_initialized() and dist.get_world_size() == 2
result = evaluator_with_stats().evaluate(toy_sampler(seed=1, channels=1, resolution=16), 17)
with open(os.path.join({out!r}, f"result{{accelerator.process_index}}.json"), "w") as f:
    json.dump(result, f)
accelerator.end_training()
if dist.is_initialized():  # as training/loop.py ends: a group left to the interpreter's exit can abort it
    dist.destroy_process_group()
'''


def evaluator_with_stats():
    from eval import fid
    from test_eval_fid import PixelFeatures, toy_sampler
    from training.images import to_uint8
    from training.normalize import Normalization
    normalization = Normalization("linear", 0.0, 5000.0)
    real = normalization.inverse(toy_sampler(seed=9, channels=1, resolution=16)(torch.arange(23)))
    return fid.Evaluator(to_uint8(normalization.forward(real)), "cpu", batch_size=4, kid_subsets=10,
                         kid_subset_size=10, cache=False, extractor=PixelFeatures(),
                         stats=FrameStatistics(real, normalization))


def test_evaluator_statistics_over_two_processes_equal_one(tmp_path):
    from test_eval_fid import toy_sampler
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(root=ROOT, tests=os.path.join(ROOT, "tests"), out=str(tmp_path)))
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(script)], cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    sampler = toy_sampler(seed=1, channels=1, resolution=16)
    one = evaluator_with_stats().evaluate(sampler, 17)
    # The statistics are those of all 17 samples, in data units, once each.
    evaluator = evaluator_with_stats()
    direct = evaluator.stats.report(evaluator.stats.normalization.inverse(sampler(torch.arange(17))))
    assert_reports_equal(one["stats"], direct)
    for rank in range(2):
        result = json.loads((tmp_path / f"result{rank}.json").read_text())
        assert_reports_equal(result["stats"], one["stats"])
        assert result["stats"]["num_fake"] == 17
