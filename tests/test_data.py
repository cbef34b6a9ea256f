"""Data: every source format, bad files, the built-in particle set, deterministic sharded batches."""

import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from training import particles
from training.data import DataError, ImageBatches, decode_image, load_images, parse_builtin, shard


def write_image(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path) if mode else Image.fromarray(array).save(path)


@pytest.fixture
def image_folder(tmp_path):
    """Five readable images in nested folders and several formats, one corrupt file, one non-image."""
    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    for i, name in enumerate(["a.png", "sub/b.jpg", "sub/deeper/c.bmp", "d.tif", "e.webp"]):
        write_image(root / name, rng.integers(0, 255, (24, 24, 3), dtype=np.uint8))
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    (root / "notes.txt").write_text("not an image")
    return root


def test_folder_is_read_recursively_and_corrupt_files_are_skipped_with_a_warning(image_folder):
    with pytest.warns(UserWarning, match="broken.png"):
        images = load_images(str(image_folder), resolution=16, channels=1)
    assert images.shape == (5, 1, 16, 16) and images.dtype == torch.uint8


def test_zip_and_single_image_give_the_same_pixels_as_the_folder(image_folder, tmp_path):
    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in sorted(image_folder.rglob("*.png")):
            z.write(f, f.relative_to(image_folder).as_posix())
    with pytest.warns(UserWarning, match="broken.png"):
        zipped = load_images(str(archive), 16, 3)
    single = load_images(str(image_folder / "a.png"), 16, 3)
    assert zipped.shape == (1, 3, 16, 16)
    assert torch.equal(zipped, single)


def test_resize_is_antialiased_and_non_square_images_are_center_cropped(tmp_path):
    # A 40x20 image: the central 20x20 square is a fine checkerboard, the sides are white.
    array = np.full((20, 40), 255, np.uint8)
    checker = (np.indices((20, 20)).sum(0) % 2 * 255).astype(np.uint8)
    array[:, 10:30] = checker
    write_image(tmp_path / "wide.png", array)
    image = load_images(str(tmp_path / "wide.png"), 10, 1)[0, 0].float()
    # Antialiased downsampling averages the checkerboard to mid-grey; nearest sampling would keep 0/255,
    # and any white from the cropped-away sides would push the mean up.
    assert abs(image.mean().item() - 127.5) < 6
    assert image.std().item() < 20


def test_sixteen_bit_images_keep_every_count(tmp_path):
    array = np.array([[0, 65535], [32768, 1]], dtype=np.uint16)
    Image.fromarray(array).save(tmp_path / "deep.png")
    frames = decode_image((tmp_path / "deep.png").read_bytes(), 2, 1, "deep.png")
    assert frames.dtype == np.float32 and frames.shape == (1, 1, 2, 2)
    assert frames[0, 0].tolist() == [[0, 65535], [32768, 1]]


def test_grayscale_and_rgb_conversion(tmp_path):
    write_image(tmp_path / "red.png", np.tile(np.array([255, 0, 0], np.uint8), (8, 8, 1)))
    rgb = load_images(str(tmp_path / "red.png"), 8, 3)[0]
    gray = load_images(str(tmp_path / "red.png"), 8, 1)[0]
    assert rgb[:, 0, 0].tolist() == [255, 0, 0]
    assert gray[0, 0, 0].item() == 76  # ITU-R 601 luma of pure red: 0.299 * 255


def test_no_usable_image_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no usable images"):
        load_images(str(tmp_path / "empty"), 16, 1)
    with pytest.raises(DataError, match="does not exist"):
        load_images(str(tmp_path / "nowhere"), 16, 1)
    (tmp_path / "bad.zip").write_bytes(b"junk")
    with pytest.raises(DataError, match="cannot open zip"):
        load_images(str(tmp_path / "bad.zip"), 16, 1)
    with pytest.raises(DataError, match="unknown built-in"):
        load_images("builtin:galaxies", 16, 1)


def test_builtin_options_are_parsed():
    assert parse_builtin("builtin:particles") == ("particles", {"count": 300, "seed": 0})
    assert parse_builtin("builtin:particles?count=12&seed=4") == ("particles", {"count": 12, "seed": 4})
    with pytest.raises(DataError, match="options are"):
        parse_builtin("builtin:particles?size=3")


def test_particles_are_deterministic_and_prefix_stable():
    a = particles.render(6, 32, seed=1)
    b = particles.render(3, 32, seed=1)
    assert a.shape == (6, 1, 32, 32) and a.dtype == np.uint8
    assert np.array_equal(a[:3], b)
    assert not np.array_equal(particles.render(3, 32, seed=2), b)


def test_particles_look_like_detector_frames():
    frames = particles.render(40, 64, seed=0).astype(np.float64)[:, 0]
    background = np.median(frames, axis=(1, 2))
    assert (background > 10).all() and (background < 60).all()  # pedestal, not a black frame
    bright = (frames > background[:, None, None] + 40).mean(axis=(1, 2))
    assert (bright > 0).all() and bright.mean() < 0.1  # sparse hits on a quiet background
    assert frames.max() == 255  # the ADC saturates on the brightest hits
    # Read + shot noise: neighbouring background pixels differ.
    quiet = frames[:, :8, :8]
    assert np.abs(np.diff(quiet, axis=2)).mean() > 1
    # Frames differ from each other (tracks/hits are random), not one template.
    assert np.abs(frames[0] - frames[1]).mean() > 3


def test_builtin_set_is_cached_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = load_images("builtin:particles?count=4", 16, 1)
    cached = list(tmp_path.rglob("*.npy"))
    assert len(cached) == 1
    np.save(cached[0], np.zeros((4, 1, 16, 16), np.uint8))  # prove the second load reads the cache
    assert load_images("builtin:particles?count=4", 16, 1).sum() == 0
    assert first.sum() > 0
    assert load_images("builtin:particles?count=4", 16, 3).shape == (4, 3, 16, 16)


def test_each_epoch_shows_every_image_once_in_a_new_order():
    images = torch.arange(12, dtype=torch.uint8).view(12, 1, 1, 1).expand(12, 1, 2, 2).contiguous()
    batches = ImageBatches(images, batch_size=4, seed=0)
    epochs = [torch.cat([batches.global_indices(s) for s in range(e * 3, e * 3 + 3)]) for e in range(3)]
    for order in epochs:
        assert sorted(order.tolist()) == list(range(12))
    assert not torch.equal(epochs[0], epochs[1])
    assert torch.equal(ImageBatches(images, 4, seed=0).global_indices(5), batches.global_indices(5))
    assert not torch.equal(ImageBatches(images, 4, seed=1).global_indices(0), batches.global_indices(0))


def test_shards_of_a_step_reassemble_the_global_batch_with_its_flips():
    images = torch.randint(0, 255, (10, 1, 4, 4), dtype=torch.uint8)
    batches = ImageBatches(images, batch_size=6, seed=3, hflip=True, vflip=True)
    whole = batches.batch(4)
    parts = torch.cat([batches.batch(4, rank, 3) for rank in range(3)])
    assert torch.equal(whole, parts)
    assert whole.min() >= -1 and whole.max() <= 1
    # Some images are flipped, and each batch image is one of the 4 flips of its source image.
    sources = images[batches.global_indices(4)].float() / 127.5 - 1
    flipped = 0
    for x, src in zip(whole, sources):
        variants = [src, src.flip(2), src.flip(1), src.flip(1).flip(2)]
        match = [torch.equal(x, v) for v in variants]
        assert any(match)
        flipped += not match[0]
    assert flipped > 0


def test_shard_refuses_uneven_batches():
    assert shard(torch.arange(6), 1, 3).tolist() == [2, 3]
    with pytest.raises(ValueError):
        shard(torch.arange(5), 0, 2)


def test_particle_brightness_does_not_depend_on_resolution():
    means = [particles.render(12, r, seed=0).mean() for r in (16, 32, 64)]
    assert max(means) - min(means) < 1.0
