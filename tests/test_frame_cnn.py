"""The small frame network shared by the physics tests and the utility benchmark."""

import numpy as np
import torch

from eval.frame_cnn import fit_frame_cnn, predict, random_flips_and_shifts


def blob_frames(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Frames of counts (0..~1000) with one Gaussian blob each; label 1: the blob is twice as wide."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    y, x = np.mgrid[:16, :16]
    centres = rng.uniform(4, 12, (n, 2))
    widths = np.where(labels == 1, 2.4, 1.2)[:, None, None]
    frames = 1000 * np.exp(-((y - centres[:, 0, None, None]) ** 2 + (x - centres[:, 1, None, None]) ** 2)
                           / (2 * widths ** 2))
    return frames + rng.normal(0, 20, frames.shape), labels


def bce(outputs, targets):
    return torch.nn.functional.binary_cross_entropy_with_logits(outputs[:, 0], targets)


def test_learns_a_shape_difference_in_data_units_and_is_deterministic():
    frames, labels = blob_frames(300, seed=0)
    targets = torch.tensor(labels, dtype=torch.float32)
    model = fit_frame_cnn(frames, targets, bce, outputs=1, steps=150, seed=3)
    test_frames, test_labels = blob_frames(400, seed=1)
    accuracy = ((predict(model, test_frames)[:, 0] > 0).numpy() == test_labels).mean()
    assert accuracy > 0.95
    state = torch.get_rng_state()
    again = fit_frame_cnn(frames, targets, bce, outputs=1, steps=150, seed=3)
    assert torch.equal(torch.get_rng_state(), state)  # the global random state is left alone
    assert torch.equal(predict(again, test_frames), predict(model, test_frames))
    other = fit_frame_cnn(frames, targets, bce, outputs=1, steps=150, seed=4)
    assert not torch.equal(predict(other, test_frames), predict(model, test_frames))


def test_augmentation_flips_and_shifts_whole_frames():
    frame = torch.arange(36.0).reshape(1, 6, 6) + 1
    generator = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(200):
        out = random_flips_and_shifts(frame, generator, max_shift=1)[0]
        matches = []
        for flipped in (frame[0], frame[0].flip(1), frame[0].flip(0), frame[0].flip(0).flip(1)):
            padded = torch.nn.functional.pad(flipped, (1, 1, 1, 1))
            for dy in range(3):
                for dx in range(3):
                    if torch.equal(out, padded[dy:dy + 6, dx:dx + 6]):
                        matches.append((dy, dx))
        assert matches, "every output is a flip of the frame moved by at most one pixel"
        seen.update(matches)
    assert len(seen) == 9  # every shift happens
