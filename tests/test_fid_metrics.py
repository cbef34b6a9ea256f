"""The math of FID and KID on synthetic features (no network): closed forms, pytorch-fid, rank deficiency."""

import warnings

import numpy as np
import pytest
import torch
from pytorch_fid.fid_score import calculate_frechet_distance

from eval.metrics import (FIDWarning, feature_statistics, frechet_distance, frechet_distance_features,
                          kernel_inception_distance)


def random_rotation(d: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def inception_like(n: int, d: int, rng: np.random.Generator, shift: float = 0.0) -> np.ndarray:
    """Non-negative, correlated, a few strong directions: roughly how pool3 features look.

    The mixing matrix depends on `d` only, so equal `shift` means one distribution.
    """
    mixing = np.random.default_rng(d).standard_normal((16, d)) * 0.1
    return np.abs(rng.standard_normal((n, 16)) @ mixing + 0.3 + shift + 0.05 * rng.standard_normal((n, d)))


def test_frechet_closed_form_commuting_covariances():
    # S1 = Q diag(a) Q', S2 = Q diag(b) Q' commute, so tr((S1 S2)^1/2) = sum sqrt(a b).
    rng = np.random.default_rng(0)
    d = 32
    q = random_rotation(d, rng)
    a, b = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    value = frechet_distance(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T)
    assert value == pytest.approx(expected, rel=1e-10)
    assert frechet_distance(mu1, q @ np.diag(a) @ q.T, mu1, q @ np.diag(a) @ q.T) == pytest.approx(0, abs=1e-10)


def test_frechet_closed_form_one_dimension_and_torch_inputs():
    # Two 1-d Gaussians: (m1 - m2)^2 + (s1 - s2)^2.
    value = frechet_distance(torch.tensor([1.0]), torch.tensor([[4.0]]), torch.tensor([-2.0]), torch.tensor([[9.0]]))
    assert value == pytest.approx(9 + 1)


def test_features_path_equals_statistics_path():
    rng = np.random.default_rng(1)
    for n1, n2, d in ((40, 60, 16), (30, 45, 128), (50, 50, 50)):  # full rank, rank-deficient, square
        x, y = inception_like(n1, d, rng), inception_like(n2, d, rng, shift=0.05)
        by_statistics = frechet_distance(*feature_statistics(x), *feature_statistics(y))
        assert frechet_distance_features(x, y) == pytest.approx(by_statistics, rel=1e-9, abs=1e-9)


def test_matches_pytorch_fid_full_rank_and_rank_deficient():
    rng = np.random.default_rng(2)
    for n, d in ((400, 64), (300, 512)):  # 300 images in 512-d: singular covariances
        x, y = inception_like(n, d, rng), inception_like(n, d, rng, shift=0.02)
        stats = (*feature_statistics(x), *feature_statistics(y))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy's deprecation of sqrtm(disp=...)
            reference = calculate_frechet_distance(*stats)
        assert frechet_distance(*stats) == pytest.approx(reference, abs=1e-3)
        assert frechet_distance_features(x, y) == pytest.approx(reference, abs=1e-3)


def test_300_images_in_2048_dimensions_stays_finite():
    # Rank 299 covariances in 2048-d (pytorch-fid's most common complaint): a finite, real,
    # non-negative number, zero for identical sets, the same by statistics and by features.
    rng = np.random.default_rng(3)
    x, y = inception_like(300, 2048, rng), inception_like(300, 2048, rng, shift=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FIDWarning)
        by_features = frechet_distance_features(x, y)
        by_statistics = frechet_distance(*feature_statistics(x), *feature_statistics(y))
        same = frechet_distance_features(x, x)
    assert np.isfinite(by_features) and by_features > 0
    assert by_statistics == pytest.approx(by_features, rel=1e-6)
    assert abs(same) < 1e-8


def test_imaginary_part_is_reported_not_raised():
    # A "covariance" with a negative eigenvalue: pytorch-fid raises, we warn and drop the imaginary part.
    mu = np.zeros(2)
    sigma1, sigma2 = np.eye(2), np.diag([1.0, -1.0])
    with pytest.raises(ValueError, match="Imaginary component"), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # scipy's deprecation of sqrtm(disp=...)
        calculate_frechet_distance(mu, sigma1, mu, sigma2)
    with pytest.warns(FIDWarning, match="imaginary part 1"):
        value = frechet_distance(mu, sigma1, mu, sigma2)
    assert value == pytest.approx(2 + 0 - 2 * 1)  # tr S1 + tr S2 - 2 Re tr((S1 S2)^1/2)


def naive_mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]
    k = lambda a, b: (a @ b.T / d + 1) ** 3  # noqa: E731
    m, n = len(x), len(y)
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
            - 2 * kxy.mean())


def test_kid_equals_direct_formula_when_subsets_are_everything():
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((30, 8)), rng.standard_normal((30, 8)) + 0.3
    mean, std = kernel_inception_distance(x, y, num_subsets=3, subset_size=100)
    assert mean == pytest.approx(naive_mmd2_unbiased(x, y), rel=1e-10)
    assert std == pytest.approx(0, abs=1e-12)


def test_kid_full_gram_and_per_subset_agree():
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((200, 16)), rng.standard_normal((150, 16)) + 0.2
    # 100 subsets of 50 pick the precomputed Gram matrices; 2 subsets of 50 the per-subset products.
    many = kernel_inception_distance(x, y, num_subsets=100, subset_size=50, seed=7)
    few = kernel_inception_distance(x, y, num_subsets=2, subset_size=50, seed=7)
    rng_check = np.random.default_rng(7)
    first = [naive_mmd2_unbiased(x[rng_check.choice(200, 50, replace=False)],
                                 y[rng_check.choice(150, 50, replace=False)]) for _ in range(2)]
    assert few[0] == pytest.approx(np.mean(first), rel=1e-10)
    assert many[1] > 0 and np.isfinite(many[0])


def test_kid_is_unbiased_near_zero_for_one_distribution():
    rng = np.random.default_rng(6)
    draw = lambda shift=0.0: rng.standard_normal((100, 32)) + shift  # noqa: E731
    same = [kernel_inception_distance(draw(), draw(), num_subsets=10, subset_size=50, seed=s)[0]
            for s in range(20)]
    shifted = kernel_inception_distance(draw(), draw(0.3), num_subsets=10, subset_size=50)[0]
    # The mean over draws is ~0 (no bias from the sample size); a small real shift stands far above the noise.
    assert abs(np.mean(same)) < 3 * np.std(same) / np.sqrt(len(same))
    assert shifted > 5 * np.std(same)
