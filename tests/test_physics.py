"""eval/physics.py: separation power by hand, FPD against the closed-form Fréchet distance of Gaussians,
KPD against the direct unbiased estimator, the AUC against scikit-learn; on frames the tests make: real
against independent real at its floor, a copier and 1.1x brighter frames flagged by exactly the tests
that can see them; the numbers inside the Evaluator; the command line."""

import json
import os

import numpy as np
import pytest
import scipy.linalg
import torch
from sklearn.metrics import roc_auc_score

from eval import physics
from eval.physics import PhysicsTests, auc_with_interval, fpd, kpd, separation_power
from test_eval_fid import PixelFeatures, run_main, toy_sampler
from test_memorization import TINY_PATH, TINY_RESOLUTION, trivial_checkpoints  # noqa: F401 (a fixture)
from training.data import load_images


def test_separation_power_by_hand():
    # Whole numbers 0..2: one bin per integer, plus an underflow and an overflow bin.
    real, fake = np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 5])
    # h_r = [0, .4, .4, .2, 0], h_g = [0, .2, .6, 0, .2] (the 5 in the overflow bin)
    expected = 0.5 * (0.2 ** 2 / 0.6 + 0.2 ** 2 / 1.0 + 0.2 ** 2 / 0.2 + 0.2 ** 2 / 0.2)
    assert separation_power(real, fake) == pytest.approx(expected, rel=1e-12)
    assert separation_power(real, real[::-1]) == 0.0
    assert separation_power([0, 1], [10, 11]) == 1.0  # no shared bin
    assert separation_power([], [1.0]) is None
    # Continuous values: 60 equal bins over the real range, everything beyond it in the outer bins.
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 500), rng.normal(0.3, 1, 400)
    edges = np.linspace(a.min(), a.max(), 61)
    h_a = np.r_[0, np.histogram(a, edges)[0], 0] / len(a)
    h_b = np.r_[(b < edges[0]).sum(), np.histogram(b, edges)[0], (b > edges[-1]).sum()] / len(b)
    used = h_a + h_b > 0
    by_hand = 0.5 * np.sum((h_a[used] - h_b[used]) ** 2 / (h_a[used] + h_b[used]))
    assert separation_power(a, b) == pytest.approx(by_hand, rel=1e-12)


def test_fpd_extrapolates_to_the_closed_form_frechet_distance():
    rng = np.random.default_rng(1)
    rotation = np.linalg.qr(rng.normal(size=(4, 4)))[0]
    sigma1 = rotation @ np.diag([1.0, 2.0, 0.5, 0.25]) @ rotation.T
    sigma2 = np.diag([1.5, 1.0, 0.5, 0.4])
    mu1, mu2 = np.zeros(4), np.array([0.5, 0.0, -0.3, 0.0])
    closed_form = (mu1 - mu2) @ (mu1 - mu2) + np.trace(sigma1 + sigma2 - 2 * scipy.linalg.sqrtm(sigma1 @ sigma2).real)
    x = rng.multivariate_normal(mu1, sigma1, 4000)
    value, error = fpd(x, rng.multivariate_normal(mu2, sigma2, 4000))
    assert value == pytest.approx(closed_form, abs=0.06) and 0 < error < 0.05
    same, same_error = fpd(x, rng.multivariate_normal(mu1, sigma1, 4000))
    assert same < 3 * same_error + 1e-3  # one distribution: consistent with zero
    assert fpd(x[:3], x[:3]) == (None, None)


def test_kpd_is_the_unbiased_quartic_mmd():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(30, 3)), rng.normal(0.4, 1.2, size=(30, 3))

    def k(a, b):
        return (a @ b / 3 + 1) ** 4

    m = 30
    within = sum(k(x[i], x[j]) + k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    across = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / m ** 2
    # Subsets as large as the sets: every subset pair is the two whole sets, so the median is the estimate.
    value, error = kpd(x, y, subset_size=30)
    assert value == pytest.approx(within - 2 * across, rel=1e-10) and error == pytest.approx(0, abs=1e-9)
    assert kpd(x[:3], y) == (None, None)


def test_auc_and_its_bootstrap_interval():
    rng = np.random.default_rng(3)
    labels = np.r_[np.zeros(80), np.ones(60)]
    scores = np.round(rng.normal(labels * 0.8, 1.0), 1)  # rounded: ties count one half
    result = auc_with_interval(labels, scores)
    assert result["auc"] == pytest.approx(roc_auc_score(labels, scores), rel=1e-12)
    assert result["auc_low"] < result["auc"] < result["auc_high"] and result["num"] == 80
    # The interval's width is about the AUC's standard error (Hanley-McNeil) times 2 x 1.96.
    auc, n_p, n_n = result["auc"], 60, 80
    q1, q2 = auc / (2 - auc), 2 * auc ** 2 / (1 + auc)
    variance = (auc * (1 - auc) + (n_p - 1) * (q1 - auc ** 2) + (n_n - 1) * (q2 - auc ** 2)) / (n_p * n_n)
    standard_error = np.sqrt(variance)
    assert result["auc_high"] - result["auc_low"] == pytest.approx(2 * 1.96 * standard_error, rel=0.2)


def spot_frames(count: int, seed: int, gain: float = 1.0) -> np.ndarray:
    """16x16 frames in counts: a pedestal of 80-120 with noise, Poisson-many bright Gaussian spots; x gain."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:16, :16]
    frames = rng.normal(0, 3, (count, 16, 16)) + rng.uniform(80, 120, (count, 1, 1))
    for frame in frames:
        for _ in range(rng.poisson(3)):
            y, x = rng.uniform(0, 16, 2)
            frame += rng.exponential(300) * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 2)
    return frames * gain


def contains_half(found: dict) -> bool:
    return found["auc_low"] < 0.5 < found["auc_high"]


def test_real_at_its_floor_copier_and_brighter_frames_flagged_by_what_can_see_them():
    real = spot_frames(120, seed=0)
    tests = PhysicsTests(real, spot_frames(120, seed=1))
    floor_sp = tests.floor["separation_power"]

    # Independent real frames: every AUC interval holds 0.5; FPD and KPD are consistent with zero.
    independent = spot_frames(120, seed=2)
    report, classifier = tests.report(independent), tests.classifier_report(independent)
    assert all(contains_half(classifier[name]) for name in physics.CLASSIFIERS)
    # The floor's pair is real against real too: within 3 spreads of chance (a cross-validated AUC of two
    # real sets of 120 spreads by about 0.045; the bootstrap interval leaves out the classifiers' own
    # training randomness, so it is narrower than that).
    assert all(abs(classifier["floor"][name]["auc"] - 0.5) < 3 * 0.045 for name in physics.CLASSIFIERS)
    assert report["fpd"] < 2 * report["fpd_error"] and abs(report["kpd"]) < 2 * report["kpd_error"]

    # Intensities x1.1: the trees' AUC, FPD and the pixel separation power stand clear of their floors.
    brighter = spot_frames(120, seed=3, gain=1.1)
    report, classifier = tests.report(brighter), tests.classifier_report(brighter)
    assert classifier["trees"]["auc_low"] > max(0.5, classifier["floor"]["trees"]["auc_high"])
    assert report["fpd"] - 2 * report["fpd_error"] > report["floor"]["fpd"] + 2 * report["floor"]["fpd_error"]
    assert report["separation_power"]["pixels"] > 10 * floor_sp["pixels"]

    # The copier: the same distribution, so separation power 0 and FPD/KPD consistent with zero; the
    # classifiers score it below chance (each held-out copy's twin trained with the other label).
    report, classifier = tests.report(real.copy()), tests.classifier_report(real.copy())
    assert all(value == 0.0 for value in report["separation_power"].values())
    assert report["fpd"] < 2 * report["fpd_error"] and abs(report["kpd"]) < 2 * report["kpd_error"]
    assert all(classifier[name]["auc_high"] < 0.5 for name in physics.CLASSIFIERS)


def test_evaluator_reports_the_cheap_tests_of_its_samples():
    from eval import fid
    from training.images import to_uint8
    from training.normalize import Normalization

    normalization = Normalization("linear", 0.0, 5000.0)
    real = normalization.inverse(toy_sampler(seed=9, channels=1, resolution=16)(torch.arange(23)))
    tests = PhysicsTests(real, normalization=normalization)
    evaluator = fid.Evaluator(to_uint8(normalization.forward(real)), "cpu", batch_size=4, kid_subsets=10,
                              kid_subset_size=10, cache=False, extractor=PixelFeatures(), physics=tests)
    sampler = toy_sampler(seed=1, channels=1, resolution=16)
    result = evaluator.evaluate(sampler, 17)
    direct = tests.report(normalization.inverse(sampler(torch.arange(17))))
    assert result["physics"]["floor"] == direct["floor"] and result["physics"]["num_fake"] == 17
    for key in ("fpd", "fpd_error", "kpd", "kpd_error"):
        assert result["physics"][key] == pytest.approx(direct[key], rel=1e-9, abs=1e-12)
    assert result["physics"]["separation_power"] == pytest.approx(direct["separation_power"], rel=1e-9)
    assert "stats" not in result


def test_cli_on_a_copier_checkpoint_json_plots_and_errors(tmp_path, capsys, trivial_checkpoints):  # noqa: F811
    plots = tmp_path / "plots"
    code, stdout, stderr = run_main(["--ckpt", trivial_checkpoints["copy"], "--num-samples", "32", "--json",
                                     "--plots", str(plots)], capsys, physics.main)
    assert code == 0, stderr
    report = json.loads(stdout.strip().splitlines()[-1])
    real = load_images(TINY_PATH, TINY_RESOLUTION, 1)
    assert report["num_real"] == report["num_fake"] == 32 and report["num_floor"] == [32, 32]
    assert report["floor_kind"].startswith("the real frames against 32 rendered afresh")
    # The floor is the real set against a second rendered set: the same tests on those two sets.
    second = physics.independent_real_frames(TINY_PATH, TINY_RESOLUTION, 32)
    assert not torch.equal(second, real)
    floor = PhysicsTests(real, second).floor
    assert report["floor"]["fpd"] == pytest.approx(floor["fpd"], abs=1e-9)
    assert report["floor"]["separation_power"] == pytest.approx(floor["separation_power"])
    assert all(value == 0.0 for value in report["separation_power"].values())  # the copier's histograms
    assert set(report["classifier"]) == {"cnn", "trees", "floor"}
    assert "separation power, pixel values" in stderr and "classifier AUC" in stderr
    assert sorted(os.listdir(plots)) == sorted(
        ["roc.png", "surest_cnn.png", "surest_trees.png", "pixel_intensity.png", "total_intensity.png",
         "occupancy.png", "clusters_per_frame.png", "cluster_size.png", "cluster_intensity.png",
         "power_spectrum.png"])

    # --real/--fake of a user's data: the floor is two halves; --no-classifier trains nothing.
    np.save(tmp_path / "real.npy", spot_frames(40, seed=0).astype(np.float32))
    np.save(tmp_path / "fake.npy", spot_frames(30, seed=1, gain=1.1).astype(np.float32))
    code, stdout, _ = run_main(["--real", str(tmp_path / "real.npy"), "--fake", str(tmp_path / "fake.npy"),
                                "--no-classifier", "--json"], capsys, physics.main)
    report = json.loads(stdout.strip().splitlines()[-1])
    assert code == 0 and "classifier" not in report and report["num_floor"] == [20, 20]
    assert report["floor_kind"] == "two random halves of the real frames (20 against 20)"

    code, _, stderr = run_main(["--real", str(tmp_path / "missing.npy"), "--fake", str(tmp_path / "fake.npy")],
                               capsys, physics.main)
    assert code == 2 and stderr.strip().splitlines() == [
        f"error: data.path: {tmp_path}/missing.npy does not exist; give a .npy/.npz stack, file.h5:/dataset, "
        f"a folder, a .zip, an image or builtin:particles"]
    np.save(tmp_path / "three.npy", spot_frames(3, seed=0).astype(np.float32))
    code, _, stderr = run_main(["--real", str(tmp_path / "three.npy"), "--fake", str(tmp_path / "fake.npy")],
                               capsys, physics.main)
    assert code == 2 and len(stderr.strip().splitlines()) == 1 and "at least 2 frames each" in stderr
    code, _, _ = run_main(["--ckpt", trivial_checkpoints["copy"], "--real", str(tmp_path / "real.npy")], capsys,
                          physics.main)
    assert code == 2  # argparse: either --ckpt or --real and --fake
