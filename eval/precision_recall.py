"""Nearest neighbours in feature or pixel space, and improved precision and recall.

Precision and recall are those of Kynkäänniemi et al. 2019 ("Improved
Precision and Recall Metric for Assessing Generative Models"): each set
approximates its manifold by a ball around every point, of radius the
distance to that point's k-th nearest other point of the same set (k = 3 in
the paper).

    precision = share of generated points inside some real ball
    recall    = share of real points inside some generated ball

"Inside" is distance <= radius, as in the authors' code. Precision says
how many samples look like real data; recall how much of the real data the
samples cover. Both use only Euclidean distances, so they come for free once
FID's Inception features exist.

Distances are computed in float64 as |x|^2 + |y|^2 - 2 x.y on features
centered together (less cancellation), in blocks of rows so that no more
than ~64 MB of distances live at once. The k nearest neighbours found that
way get their distances recomputed directly as |x - y| (an exact copy is at
distance 0, not at the ~1e-8 the matrix-product form leaves). The same
routine finds the nearest training images of generated ones for
eval/memorization.py.
"""

import numpy as np
import torch

DEFAULT_K = 3
BLOCK_ELEMENTS = 2 ** 23  # float64 distances held at once (64 MB)


def _as_float64(array, device=None) -> torch.Tensor:
    tensor = torch.as_tensor(array)
    return tensor.to(device=device or tensor.device, dtype=torch.float64).flatten(1)


def _blocks(num_rows: int, num_columns: int):
    rows = max(1, BLOCK_ELEMENTS // max(1, num_columns))
    for start in range(0, num_rows, rows):
        yield start, min(num_rows, start + rows)


def _centered(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.cat([x, y]).mean(0)
    return x - mean, y - mean


def _distance_block(x: torch.Tensor, y: torch.Tensor, y_square: torch.Tensor) -> torch.Tensor:
    squared = (x * x).sum(1, keepdim=True) + y_square[None] - 2 * x @ y.T
    return squared.clamp_min_(0).sqrt_()


def pairwise_distances(x, y, device=None) -> torch.Tensor:
    """Euclidean distances [N, M] between the rows of x [N, ...] and y [M, ...], float64."""
    x, y = _centered(_as_float64(x, device), _as_float64(y, device))
    return _distance_block(x, y, (y * y).sum(1))


def nearest(queries, references, k: int = 1, *, query_groups=None, reference_groups=None,
            device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The k nearest references of every query: (distances [N, k] float64, indices [N, k]), nearest first.

    Args:
        queries:          [N, ...] points (features, or images flattened)
        references:       [M, ...] points of the same size
        k:                neighbours per query (at most the number of eligible references)
        query_groups:     [N] integer labels; with `reference_groups`, a reference whose label
                          equals the query's is never its neighbour (e.g. a point itself, or
                          the flipped copies of a training image)
        reference_groups: [M] integer labels
        device:           where the distances are computed
    """
    x, y = _centered(_as_float64(queries, device), _as_float64(references, device))
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"queries have {x.shape[1]} values each, references {y.shape[1]}")
    masked = query_groups is not None
    if masked:
        query_groups = torch.as_tensor(query_groups, device=x.device)
        reference_groups = torch.as_tensor(reference_groups, device=x.device)
    y_square = (y * y).sum(1)
    distances, indices = [], []
    for start, stop in _blocks(len(x), len(y)):
        block = _distance_block(x[start:stop], y, y_square)
        if masked:
            block.masked_fill_(query_groups[start:stop, None] == reference_groups[None], float("inf"))
        values, where = block.topk(k, dim=1, largest=False, sorted=True)
        if masked and torch.isinf(values).any():
            raise ValueError(f"fewer than k={k} eligible references for some query")
        indices.append(where)
    indices = torch.cat(indices)
    for start, stop in _blocks(len(x), k * x.shape[1]):
        distances.append((x[start:stop, None] - y[indices[start:stop]]).norm(dim=2))
    distances = torch.cat(distances)
    distances, order = distances.sort(dim=1, stable=True)  # the direct values may reorder near-ties
    return distances, indices.gather(1, order)


def knn_radii(features, k: int = DEFAULT_K, device=None) -> torch.Tensor:
    """[N] distance of every point to its k-th nearest other point of the same set (float64)."""
    count = len(features)
    if count <= k:
        raise ValueError(f"k-NN radii with k={k} need more than {k} points, got {count}")
    groups = torch.arange(count)
    distances, _ = nearest(features, features, k, query_groups=groups, reference_groups=groups, device=device)
    return distances[:, -1]


def _share_inside(points: torch.Tensor, centers: torch.Tensor, radii: torch.Tensor) -> float:
    """Share of `points` within distance radii[j] of some centers[j]."""
    center_square = (centers * centers).sum(1)
    inside = []
    for start, stop in _blocks(len(points), len(centers)):
        inside.append((_distance_block(points[start:stop], centers, center_square) <= radii[None]).any(1))
    return float(torch.cat(inside).double().mean())


def precision_recall(real, fake, k: int = DEFAULT_K, device=None) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of `fake` [N2, D] against `real` [N1, D]."""
    x, y = _centered(_as_float64(real, device), _as_float64(fake, device))
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"real features have {x.shape[1]} dimensions, generated {y.shape[1]}")
    real_radii, fake_radii = knn_radii(x, k), knn_radii(y, k)
    return _share_inside(y, x, real_radii), _share_inside(x, y, fake_radii)


def quantiles(values, levels=(0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)) -> dict[str, float]:
    """{"q05": ..., "q50": ...} of a 1-d array (numpy's linear interpolation); q00/q100 = min/max."""
    values = np.asarray(torch.as_tensor(values).cpu(), dtype=np.float64)
    return {f"q{round(level * 100):02d}": float(np.quantile(values, level)) for level in levels}
