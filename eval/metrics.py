"""The math of FID and KID on feature matrices, in float64.

FID is the Fréchet distance between Gaussians fitted to two feature sets,

    |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)).

pytorch-fid takes the matrix square root of the non-symmetric product S1 S2
with scipy's `sqrtm` (a complex Schur decomposition: ~15 s for 2048-d on two
idle CPU cores, minutes on busy ones), retries with 1e-6 on the diagonal when the result is not
finite, and raises when an imaginary part survives. Only the trace is needed,
and the eigenvalues of S1 S2 are those of the symmetric positive semi-definite
matrix S1^(1/2) S2 S1^(1/2); two symmetric eigendecompositions give the trace
in ~2 s, real and finite by construction even when 300 images leave
2048-d covariances rank-deficient. With the features themselves at hand and
fewer images than dimensions it is cheaper still: for centered feature
matrices A [N1, D] and B [N2, D], S1 S2 = A'A B'B / ((N1-1)(N2-1)), whose
nonzero eigenvalues are the squared singular values of A B' [N1, N2], so the
trace is the sum of those singular values (no D x D matrix at all). Both
equal pytorch-fid's value to about 1e-7 relative wherever pytorch-fid
succeeds (tests/test_fid_metrics.py).

KID is the unbiased estimate of the squared MMD with the cubic polynomial
kernel k(x, y) = (x.y / d + 1)^3, averaged over random subsets (Bińkowski et
al. 2018); it has no bias from the sample size, so it stays meaningful with a
few hundred real images.
"""

import math
import warnings

import numpy as np
import torch


class FIDWarning(UserWarning):
    """A number was computed, but the inputs were outside what FID assumes (said how)."""


def _as_float64(array, device=None) -> torch.Tensor:
    tensor = torch.as_tensor(array)
    return tensor.to(device=device or tensor.device, dtype=torch.float64)


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (unbiased, like numpy.cov) of [N, D] features, float64 numpy."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"feature statistics need [N >= 2, D] features, got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _rounding_level(values: torch.Tensor) -> torch.Tensor:
    """Eigenvalues this close to 0 are rounding noise of a symmetric eigensolver."""
    return values.numel() * torch.finfo(values.dtype).eps * values.abs().max()


def _psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric PSD matrix.

    Eigenvalues at rounding level are set to 0 rather than square-rooted: with
    300 images a 2048-d covariance has ~1750 null eigenvalues, and the square
    roots of their ~1e-14 noise would add ~1e-3 to the trace.
    """
    values, vectors = torch.linalg.eigh(matrix)
    values = torch.where(values > _rounding_level(values), values, torch.zeros_like(values))
    return (vectors * values.sqrt()) @ vectors.T


def trace_sqrt_product(sigma1, sigma2, device=None) -> tuple[float, float]:
    """tr((S1 S2)^(1/2)) and the imaginary part pytorch-fid's sqrtm would see.

    The second value sums sqrt(-lambda) over eigenvalues of S1^(1/2) S2 S1^(1/2)
    that are negative beyond rounding; it is 0 for genuine covariance matrices
    and positive only when an input is not positive semi-definite.
    """
    s1, s2 = _as_float64(sigma1, device), _as_float64(sigma2, device)
    root1 = _psd_sqrt((s1 + s1.T) / 2)
    middle = root1 @ s2 @ root1
    values = torch.linalg.eigvalsh((middle + middle.T) / 2)
    rounding = _rounding_level(values)
    imaginary = (-values[values < -rounding]).sqrt().sum()
    return float(values[values > rounding].sqrt().sum()), float(imaginary)


def frechet_distance(mu1, sigma1, mu2, sigma2, device=None) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (numpy or torch inputs).

    Never raises on singular or rank-deficient covariances; when an input is
    not positive semi-definite the imaginary part of the trace term is dropped
    and an FIDWarning says how large it was.
    """
    mu1, mu2 = _as_float64(mu1, device), _as_float64(mu2, device)
    s1, s2 = _as_float64(sigma1, device), _as_float64(sigma2, device)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.numel(), mu1.numel()):
        raise ValueError(f"mismatched statistics: mu {tuple(mu1.shape)} vs {tuple(mu2.shape)}, "
                         f"sigma {tuple(s1.shape)} vs {tuple(s2.shape)}")
    trace, imaginary = trace_sqrt_product(s1, s2, device)
    if imaginary > 1e-3 * max(1.0, abs(trace)):
        warnings.warn(FIDWarning(f"FID: a covariance is not positive semi-definite; the trace term's "
                                 f"imaginary part {imaginary:.3g} (real part {trace:.6g}) was dropped"),
                      stacklevel=2)
    difference = mu1 - mu2
    value = difference @ difference + s1.trace() + s2.trace() - 2 * trace
    return float(value)


def frechet_distance_features(features1, features2, device=None) -> float:
    """Fréchet distance between Gaussians fitted to two [N, D] feature sets.

    Equals `frechet_distance(*feature_statistics(f1), *feature_statistics(f2))`;
    with fewer images than dimensions it works on the N1 x N2 cross product.
    """
    x, y = _as_float64(features1, device), _as_float64(features2, device)
    (n1, d), n2 = x.shape, len(y)
    if min(n1, n2) < 2 or y.shape[1] != d:
        raise ValueError(f"need two [N >= 2, D] feature sets of one D, got {tuple(x.shape)} and {tuple(y.shape)}")
    mu1, mu2 = x.mean(0), y.mean(0)
    a, b = x - mu1, y - mu2
    if min(n1, n2) > d:
        return frechet_distance(mu1, a.T @ a / (n1 - 1), mu2, b.T @ b / (n2 - 1), device)
    trace = torch.linalg.svdvals(a @ b.T).sum() / math.sqrt((n1 - 1) * (n2 - 1))
    difference = mu1 - mu2
    value = difference @ difference + (a * a).sum() / (n1 - 1) + (b * b).sum() / (n2 - 1) - 2 * trace
    return float(value)


def mmd2_subsets(features1, features2, *, degree: int, num_subsets: int, subset_size: int, seed: int = 0,
                 device=None) -> torch.Tensor:
    """Unbiased estimates of the squared MMD between two [N, D] feature sets with the polynomial kernel
    k(x, y) = (x.y / d + 1)^degree, one per random subset pair: [num_subsets] float64.

    Each subset draws m = min(subset_size, N1, N2) rows of each set without
    replacement from a generator seeded with `seed`, so every process and
    every rerun sees the same subsets. Kernel values come from the full Gram
    matrices when those are cheaper than per-subset products.
    """
    x, y = _as_float64(features1, device), _as_float64(features2, device)
    (n1, d), n2 = x.shape, len(y)
    m = min(subset_size, n1, n2)
    if m < 2:
        raise ValueError(f"KID and KPD need at least 2 samples in each set, got {n1} and {n2}")
    rng = np.random.default_rng(seed)
    subsets = [(torch.from_numpy(rng.choice(n1, m, replace=False)).to(x.device),
                torch.from_numpy(rng.choice(n2, m, replace=False)).to(x.device))
               for _ in range(num_subsets)]

    def kernel(a, b):
        return (a @ b.T / d + 1) ** degree

    full_cost = n1 * n1 + n2 * n2 + n1 * n2
    if full_cost <= 3 * m * m * num_subsets and max(n1, n2) <= 16384:
        kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
        blocks = ((kxx[i][:, i], kyy[j][:, j], kxy[i][:, j]) for i, j in subsets)
    else:
        blocks = ((kernel(x[i], x[i]), kernel(y[j], y[j]), kernel(x[i], y[j])) for i, j in subsets)
    values = []
    for a, b, c in blocks:
        within = (a.sum() - a.diagonal().sum() + b.sum() - b.diagonal().sum()) / (m * (m - 1))
        values.append(within - 2 * c.mean())
    return torch.stack(values)


def kernel_inception_distance(features1, features2, *, num_subsets: int = 100, subset_size: int = 1000,
                              seed: int = 0, device=None) -> tuple[float, float]:
    """KID between two [N, D] feature sets: (mean, std) of `mmd2_subsets` with the cubic kernel."""
    values = mmd2_subsets(features1, features2, degree=3, num_subsets=num_subsets, subset_size=subset_size,
                          seed=seed, device=device)
    return float(values.mean()), float(values.std(unbiased=False))
