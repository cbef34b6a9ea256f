"""`builtin:particles`: procedurally rendered particle-detector frames.

The default data set, so every command runs on a fresh machine with no data.
Each frame is simulated in detector units (photo-electrons) and then read out
like a camera would be:

- point-like hits with log-normal brightness, blurred by a point-spread
  function of varying width (some slightly elliptical);
- straight tracks (minimum-ionising particles crossing the sensor) and curved
  tracks (low-momentum particles bending in a magnetic field), with
  Landau-like energy-loss fluctuations along the path and, sometimes, a
  delta-ray kink;
- clusters (small showers of many overlapping hits);
- a pedestal with a linear gradient across the frame;
- Poisson (shot) noise on signal + background, Gaussian read noise, a few hot
  pixels, and an 8-bit ADC that saturates on the brightest hits.

Frame i depends only on (seed, i), so the set is identical on every machine
and any prefix of a larger set is the smaller set.
"""

import hashlib
import os

import numpy as np
from scipy.ndimage import gaussian_filter

RENDERER_VERSION = 1
FRAME = 64.0  # geometry is defined on a 64-pixel frame and scaled to the resolution


def _splat(layer: np.ndarray, ys: np.ndarray, xs: np.ndarray, weights: np.ndarray) -> None:
    """Deposit point charges at sub-pixel positions with bilinear weights."""
    size = layer.shape[0]
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    fy, fx = ys - y0, xs - x0
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            yy, xx = y0 + dy, x0 + dx
            inside = (yy >= 0) & (yy < size) & (xx >= 0) & (xx < size)
            np.add.at(layer, (yy[inside], xx[inside]), (weights * wy * wx)[inside])


def _blurred(size: int, ys, xs, weights, sigma, scale: float) -> np.ndarray:
    layer = np.zeros((size, size), np.float64)
    _splat(layer, np.asarray(ys) * scale, np.asarray(xs) * scale, np.asarray(weights, np.float64))
    return gaussian_filter(layer, np.asarray(sigma) * scale, mode="constant")


def _track_path(rng: np.random.Generator, curved: bool) -> tuple[np.ndarray, np.ndarray]:
    """Points every 0.25 px along a straight line or a circular arc crossing the frame."""
    start = rng.uniform(-8, FRAME + 8, size=2)
    angle = rng.uniform(0, 2 * np.pi)
    length = rng.uniform(20, 90) if not curved else rng.uniform(15, 60)
    steps = np.arange(0, length, 0.25)
    if curved:
        radius = rng.uniform(6, 40) * rng.choice([-1, 1])
        heading = angle + steps / radius
        ys = start[0] + radius * (np.sin(heading) - np.sin(angle))
        xs = start[1] - radius * (np.cos(heading) - np.cos(angle))
    else:
        ys = start[0] + steps * np.sin(angle)
        xs = start[1] + steps * np.cos(angle)
    return ys, xs


def _energy_loss(rng: np.random.Generator, n: int, mean: float) -> np.ndarray:
    """Landau-like fluctuations: mostly near the mean, with a long tail of hard collisions."""
    moyal = -np.log(rng.chisquare(1, size=n))  # Moyal distribution, a standard Landau stand-in
    return np.clip(mean * (1 + 0.35 * moyal), 0, 12 * mean)


def render_frame(seed: int, index: int, resolution: int = 64) -> np.ndarray:
    """One frame as uint8 [resolution, resolution]."""
    rng = np.random.default_rng([seed, index, RENDERER_VERSION])
    scale = resolution / FRAME
    signal = np.zeros((resolution, resolution))

    for _ in range(rng.poisson(5) + 1):  # point-like hits
        y, x = rng.uniform(0, FRAME, size=2)
        sigma = rng.uniform(0.6, 1.8) * np.array([1.0, rng.uniform(0.8, 1.25)])
        signal += _blurred(resolution, [y], [x], [rng.lognormal(np.log(900), 0.7)], sigma, scale)

    for _ in range(rng.poisson(1.6)):  # tracks
        curved = rng.random() < 0.4
        ys, xs = _track_path(rng, curved)
        weights = _energy_loss(rng, len(ys), mean=rng.uniform(14, 35) if not curved else rng.uniform(20, 50))
        if rng.random() < 0.25:  # delta ray: a short secondary knocked out along the track
            k = rng.integers(len(ys))
            branch = rng.uniform(0, 2 * np.pi)
            steps = np.arange(0.25, rng.uniform(3, 9), 0.25)
            ys = np.concatenate([ys, ys[k] + steps * np.sin(branch)])
            xs = np.concatenate([xs, xs[k] + steps * np.cos(branch)])
            weights = np.concatenate([weights, _energy_loss(rng, len(steps), weights.mean() * 1.5)])
        signal += _blurred(resolution, ys, xs, weights, rng.uniform(0.6, 1.1), scale)

    for _ in range(rng.poisson(0.7)):  # clusters: showers of overlapping hits
        center = rng.uniform(6, FRAME - 6, size=2)
        n = rng.integers(6, 30)
        spread = rng.uniform(1.0, 3.5)
        ys = center[0] + rng.normal(0, spread, n)
        xs = center[1] + rng.normal(0, spread, n)
        signal += _blurred(resolution, ys, xs, rng.lognormal(np.log(250), 0.8, n), rng.uniform(0.7, 1.4), scale)

    return _read_out(rng, signal, resolution)


def _read_out(rng: np.random.Generator, signal: np.ndarray, resolution: int) -> np.ndarray:
    """Deposited charge on the 64-pixel frame's scale -> uint8 camera frame: pedestal, shot and read
    noise, hot pixels, an 8-bit ADC."""
    # Charge was deposited per frame pixel; a pixel of this resolution covers 1/scale**2 of them,
    # so scale to the brightness of the 64-pixel frame averaged down (or up) to this resolution.
    signal *= (resolution / FRAME) ** 2
    yy, xx = np.mgrid[0:resolution, 0:resolution] / resolution - 0.5
    direction = rng.uniform(0, 2 * np.pi)
    background = rng.uniform(20, 45) + rng.uniform(0, 25) * (np.cos(direction) * xx + np.sin(direction) * yy)
    electrons = rng.poisson(np.clip(signal + background, 0, None)).astype(np.float64)
    adc = electrons * 0.8 + rng.normal(0, 3.0, electrons.shape)
    hot = rng.random(electrons.shape) < 4e-4
    adc[hot] += rng.uniform(60, 200, hot.sum())
    return np.clip(np.round(adc), 0, 255).astype(np.uint8)


def render(count: int = 300, resolution: int = 64, seed: int = 0) -> np.ndarray:
    """`count` frames as uint8 [count, 1, resolution, resolution]."""
    return np.stack([render_frame(seed, i, resolution) for i in range(count)])[:, None]


def cache_path(count: int, resolution: int, seed: int, name: str = "particles") -> str:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    with open(__file__, "rb") as f:  # a change to the renderer invalidates old caches
        source = hashlib.sha256(f.read()).hexdigest()[:10]
    return os.path.join(root, "smallgan", name, f"n{count}-r{resolution}-s{seed}-{source}.npy")


def load(count: int = 300, resolution: int = 64, seed: int = 0, name: str = "particles") -> np.ndarray:
    """The rendered set `name` (particles, or particles-cond's frames), from the disk cache when present
    (rendered and cached otherwise)."""
    path = cache_path(count, resolution, seed, name)
    if os.path.isfile(path):
        try:
            images = np.load(path)
            if images.shape == (count, 1, resolution, resolution) and images.dtype == np.uint8:
                return images
        except (OSError, ValueError):
            pass  # a damaged cache is simply rendered again
    images = render(count, resolution, seed) if name == "particles" else render_conditional(count, resolution, seed)[0]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}.npy"
    np.save(tmp, images)
    os.replace(tmp, path)
    return images


# ---------------------------------------------------------------------------
# `builtin:particles-cond`: frames rendered from labels drawn first

CONDITIONAL_KINDS = ("hits", "tracks", "shower")
ENERGY_RANGE = (1.0, 5.0)     # beam energy scale: hit brightness and track dE/dx are proportional to it
FIELD_RANGE = (0.0, 1.0)      # magnetic field: track curvature is proportional to it
MAX_CURVATURE = 1 / 12.0      # 1/px at field 1 (a 12-pixel radius on the 64-pixel frame)


def conditional_labels(seed: int, index: int) -> dict:
    """Frame `index`'s labels in `builtin:particles-cond`: energy and field uniform over their ranges,
    the content kind uniform over CONDITIONAL_KINDS."""
    rng = np.random.default_rng([seed, index, RENDERER_VERSION, 1])
    return {"energy": float(rng.uniform(*ENERGY_RANGE)), "field": float(rng.uniform(*FIELD_RANGE)),
            "type": CONDITIONAL_KINDS[int(rng.integers(len(CONDITIONAL_KINDS)))]}


def _curved_track(rng: np.random.Generator, curvature: float) -> tuple[np.ndarray, np.ndarray]:
    """Points every 0.25 px along an arc of the given signed curvature (1/px; 0: a straight line)."""
    start = rng.uniform(-4, FRAME + 4, size=2)
    angle = rng.uniform(0, 2 * np.pi)
    steps = np.arange(0, rng.uniform(30, 70), 0.25)
    heading = angle + steps * curvature
    # The arc's integral, written so that curvature 0 is the straight line without a division by 0.
    ys = start[0] + np.cumsum(np.sin(heading)) * 0.25
    xs = start[1] + np.cumsum(np.cos(heading)) * 0.25
    return ys, xs


def render_conditional_frame(seed: int, index: int, resolution: int = 64, energy: float | None = None,
                             field: float | None = None, kind: str | None = None) -> np.ndarray:
    """One frame of `builtin:particles-cond` as uint8 [resolution, resolution].

    Labels left None are the frame's own (`conditional_labels`); given ones replace them, so the
    same frame can be rendered afresh at any setting. The content draws do not depend on the labels'
    values: frame i at energy 2 and at energy 4 has its hits and tracks in the same places.
      energy: hit and cluster brightness and the tracks' mean dE/dx are proportional to it
      field:  every track bends with curvature field * MAX_CURVATURE (a random sign per track)
      kind:   'hits' (point hits only), 'tracks' (1-3 tracks and a few hits), 'shower' (1-2 clusters
              of overlapping hits, their number of hits growing with energy, and a few hits)
    """
    own = conditional_labels(seed, index)
    energy = own["energy"] if energy is None else float(energy)
    field = own["field"] if field is None else float(field)
    kind = own["type"] if kind is None else kind
    if kind not in CONDITIONAL_KINDS:
        raise ValueError(f"kind must be one of {', '.join(CONDITIONAL_KINDS)}, got {kind!r}")
    rng = np.random.default_rng([seed, index, RENDERER_VERSION, 2])
    scale = resolution / FRAME
    signal = np.zeros((resolution, resolution))
    gain = energy / 3.0  # 1 at the middle of the energy range

    for _ in range(rng.poisson(6 if kind == "hits" else 2) + 1):  # point-like hits
        y, x = rng.uniform(0, FRAME, size=2)
        sigma = rng.uniform(0.6, 1.8) * np.array([1.0, rng.uniform(0.8, 1.25)])
        signal += _blurred(resolution, [y], [x], [gain * rng.lognormal(np.log(900), 0.5)], sigma, scale)
    if kind == "tracks":
        for _ in range(1 + min(rng.poisson(0.8), 2)):
            ys, xs = _curved_track(rng, field * MAX_CURVATURE * rng.choice([-1, 1]))
            weights = _energy_loss(rng, len(ys), mean=gain * 25)
            signal += _blurred(resolution, ys, xs, weights, rng.uniform(0.6, 1.0), scale)
    if kind == "shower":
        for _ in range(1 + min(rng.poisson(0.5), 1)):
            center = rng.uniform(10, FRAME - 10, size=2)
            # The most hits any energy gets are drawn, the first n used: the draws after them do not
            # depend on the energy.
            most = int(round(8 * ENERGY_RANGE[1] * 1.2))
            n = min(int(round(8 * energy * rng.uniform(0.8, 1.2))), most)
            spread = rng.uniform(1.5, 3.5)
            ys, xs = center[0] + rng.normal(0, spread, most), center[1] + rng.normal(0, spread, most)
            charges = gain * rng.lognormal(np.log(250), 0.5, most)
            signal += _blurred(resolution, ys[:n], xs[:n], charges[:n], rng.uniform(0.7, 1.2), scale)
    return _read_out(rng, signal, resolution)


def render_conditional(count: int = 300, resolution: int = 64, seed: int = 0) -> tuple[np.ndarray, list[dict]]:
    """`count` frames of `builtin:particles-cond` as uint8 [count, 1, R, R], and their labels."""
    labels = [conditional_labels(seed, i) for i in range(count)]
    frames = np.stack([render_conditional_frame(seed, i, resolution) for i in range(count)])[:, None]
    return frames, labels
