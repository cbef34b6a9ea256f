"""Scientific data in and out: every array format at full precision, one normalization for the set,
8-bit runs unchanged, samples back in data units (eval/generate.py --format), a float stack trained end to end."""

import json

import h5py
import numpy as np
import pytest
import tifffile
import torch
import yaml
from PIL import Image

from eval import generate, stats
from plumbing import load_checkpoint, run_script
from training import particles
from training.config import DataConfig
from training.data import DataError, ImageBatches, load_images
from training.images import save_png
from training.normalize import Normalization, NormalizationError, fit_normalization, normalization_from_config

TOY = "tests/toy_gan.py"


def counts(shape, seed=0, high=65536):
    return np.random.default_rng(seed).integers(0, high, shape)


# ---------------------------------------------------------------------------
# Formats

def test_sixteen_bit_png_folder_loads_every_count(tmp_path):
    stack = counts((5, 16, 16)).astype(np.uint16)
    for i, frame in enumerate(stack):
        Image.fromarray(frame).save(tmp_path / f"{i}.png")
    frames = load_images(str(tmp_path), 16, 1)
    assert frames.dtype == torch.float32 and frames.shape == (5, 1, 16, 16)
    np.testing.assert_array_equal(frames[:, 0].numpy(), stack)


def test_tiff_int32_float32_and_page_stacks(tmp_path):
    wide = counts((16, 16), high=2**31 - 1).astype(np.int32)  # beyond 16 bits: no 8-bit or 16-bit squeeze
    tifffile.imwrite(tmp_path / "a.tif", wide)
    floats = np.random.default_rng(1).normal(0, 1e4, (16, 16)).astype(np.float32)
    tifffile.imwrite(tmp_path / "b.tiff", floats)
    pages = counts((3, 16, 16), seed=2).astype(np.uint16)
    tifffile.imwrite(tmp_path / "c.tif", pages, photometric="minisblack")
    frames = load_images(str(tmp_path), 16, 1)
    assert frames.shape == (5, 1, 16, 16)
    np.testing.assert_array_equal(frames[0, 0].numpy(), wide.astype(np.float32))
    np.testing.assert_array_equal(frames[1, 0].numpy(), floats)
    np.testing.assert_array_equal(frames[2:, 0].numpy(), pages)


@pytest.mark.parametrize("shape", [(4, 8, 8), (4, 1, 8, 8), (8, 8)])
def test_npy_stacks_of_every_accepted_shape(tmp_path, shape):
    array = np.random.default_rng(0).random(shape) * 50000
    np.save(tmp_path / "s.npy", array)
    frames = load_images(str(tmp_path / "s.npy"), 8, 1)
    np.testing.assert_array_equal(frames.numpy().ravel(), array.astype(np.float32).ravel())
    assert frames.shape == (array.size // 64, 1, 8, 8)


def test_npz_and_hdf5_by_key(tmp_path):
    a, b = counts((3, 8, 8)).astype(np.float64), counts((2, 3, 8, 8), seed=1).astype(np.int32)
    np.savez(tmp_path / "s.npz", a=a, b=b)
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f["group/images"] = a
        f["other"] = np.zeros(3)
    np.testing.assert_array_equal(load_images(f"{tmp_path}/s.npz:a", 8, 1)[:, 0].numpy(), a)
    np.testing.assert_array_equal(load_images(f"{tmp_path}/s.npz:b", 8, 3).numpy(), b)
    np.testing.assert_array_equal(load_images(f"{tmp_path}/s.h5:/group/images", 8, 1)[:, 0].numpy(), a)
    # Colour to grayscale with the luma weights, as for 8-bit images.
    gray = load_images(f"{tmp_path}/s.npz:b", 8, 1)[:, 0].numpy()
    np.testing.assert_allclose(gray, np.einsum("nchw,c->nhw", b, [0.299, 0.587, 0.114]), rtol=1e-6)


def test_float_frames_are_cropped_and_area_averaged_to_the_resolution(tmp_path):
    frame = np.zeros((8, 12), np.float32)
    frame[:, 2:10] = np.kron(np.arange(16, dtype=np.float32).reshape(4, 4), np.ones((2, 2)))  # central 8x8
    np.save(tmp_path / "wide.npy", frame)
    out = load_images(str(tmp_path / "wide.npy"), 4, 1)[0, 0].numpy()
    np.testing.assert_allclose(out, np.arange(16).reshape(4, 4), atol=1e-5)  # 2x2 binning of 2x2 blocks


@pytest.mark.parametrize("case, message", [
    ("rank", "has shape \\[2, 2, 2, 8, 8\\]"),
    ("nan", "2 NaN/inf"),
    ("empty", "is empty"),
    ("h5key", "has no dataset '/nope'; its datasets: /images"),
    ("npzkeys", "holds arrays a, b; name one"),
    ("tiffnan", "bad.tif holds 1 NaN/inf"),
])
def test_bad_arrays_are_one_line_errors_naming_the_file(tmp_path, case, message):
    path = tmp_path / "x.npy"
    if case == "rank":
        np.save(path, np.zeros((2, 2, 2, 8, 8)))
    elif case == "nan":
        array = np.ones((3, 8, 8))
        array[1, 2, 3], array[2, 0, 0] = np.nan, np.inf
        np.save(path, array)
    elif case == "empty":
        with h5py.File(tmp_path / "x.h5", "w") as f:
            f["images"] = np.zeros((0, 8, 8))
        path = f"{tmp_path}/x.h5:/images"
    elif case == "h5key":
        with h5py.File(tmp_path / "x.h5", "w") as f:
            f["images"] = np.zeros((2, 8, 8))
        path = f"{tmp_path}/x.h5:/nope"
    elif case == "npzkeys":
        np.savez(tmp_path / "x.npz", a=np.zeros((2, 8, 8)), b=np.zeros((2, 8, 8)))
        path = tmp_path / "x.npz"
    else:
        frame = np.ones((8, 8), np.float32)
        frame[0, 0] = np.nan
        tifffile.imwrite(tmp_path / "bad.tif", frame)
        path = tmp_path
    with pytest.raises(DataError, match=message) as error:
        load_images(str(path), 8, 1)
    assert "\n" not in str(error.value) and ("x." in str(error.value) or "bad.tif" in str(error.value))


def test_training_script_stops_on_bad_data_with_one_line_and_status_2(tmp_path):
    array = np.ones((4, 8, 8))
    array[0, 0, 0] = np.nan
    np.save(tmp_path / "bad.npy", array)
    result = run_script(TOY, [f"data.path={tmp_path}/bad.npy", "data.resolution=8", f"out_dir={tmp_path}/run"],
                        expect_status=2)
    assert result.stderr.strip().splitlines() == [f"error: data.path: {tmp_path}/bad.npy holds 1 NaN/inf value(s); "
                                                  f"replace them (e.g. np.nan_to_num) or drop those frames"]


# ---------------------------------------------------------------------------
# Normalization

def test_eight_bit_sets_behave_exactly_as_before(tmp_path):
    # The loader's 8-bit pixels against an independent decode (PIL + crop + Lanczos) and the particle renderer.
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (20, 30), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    images = load_images(str(tmp_path), 16, 1)
    expected = [np.asarray(Image.open(tmp_path / f"{i}.png").convert("L").crop((5, 0, 25, 20))
                           .resize((16, 16), Image.Resampling.LANCZOS)) for i in range(3)]
    assert images.dtype == torch.uint8
    np.testing.assert_array_equal(images[:, 0].numpy(), np.stack(expected))
    builtin = load_images("builtin:particles?count=8", 16, 1)
    np.testing.assert_array_equal(builtin.numpy(), particles.load(8, 16, 0))
    # The fitted mapping is the old x / 127.5 - 1, bit for bit, and FID sees the very same tensor.
    for frames in (images, builtin):
        normalization = fit_normalization(frames, DataConfig())
        assert normalization == Normalization("linear", 0.0, 255.0, 1.0)
        data = ImageBatches(frames, batch_size=4, seed=0, normalization=normalization)
        for step in range(3):
            assert torch.equal(data.batch(step), frames[data.global_indices(step)].float() / 127.5 - 1)
        assert data.images_uint8() is data.images
    # Checkpoints from before data.normalize existed load as 8-bit runs.
    assert normalization_from_config({"path": "x", "resolution": 64, "channels": 1}) == Normalization()


@pytest.mark.parametrize("kind", ["linear", "log1p", "asinh"])
def test_mappings_send_the_range_to_minus_one_and_one_and_invert(kind):
    frames = torch.from_numpy(counts((6, 1, 8, 8), high=50001).astype(np.float32))
    frames[0, 0, 0, 0], frames[1, 0, 0, 0] = 0, 50000
    config = DataConfig(normalize=kind, range_percentile=99.0, scale=10.0)
    normalization = fit_normalization(frames, config)
    assert normalization.low == 0.0
    assert normalization.high == pytest.approx(np.percentile(frames.numpy(), 99.0))
    x = normalization.forward(frames)
    transform = {"linear": lambda v: v, "log1p": lambda v: np.log1p(v / 10),
                 "asinh": lambda v: np.arcsinh(v / 10)}[kind]
    values = frames.double().numpy()
    t_low, t_high = transform(normalization.low), transform(normalization.high)
    np.testing.assert_allclose(x.numpy(), (transform(values) - t_low) / (t_high - t_low) * 2 - 1, atol=2e-6)
    assert x.min().item() == pytest.approx(-1.0) and x.max().item() > 1.0  # above the percentile: not clipped
    np.testing.assert_allclose(normalization.inverse(x).numpy(), values, rtol=1e-5, atol=0.02)


def test_given_range_and_impossible_fits():
    frames = torch.tensor([[[[-5.0, 3.0]]]])
    assert fit_normalization(frames, DataConfig(range=[-10, 10])) == Normalization("linear", -10.0, 10.0, 1.0)
    with pytest.raises(NormalizationError, match="log1p needs every value above -data.scale=-1"):
        fit_normalization(frames, DataConfig(normalize="log1p"))
    with pytest.raises(NormalizationError, match="every value of the set is 7"):
        fit_normalization(torch.full((2, 1, 4, 4), 7.0), DataConfig())


def test_sixteen_bit_round_trip_through_png16_is_within_one_count(tmp_path):
    from eval.generate import frame_file
    stack = counts((8, 16, 16), seed=3).astype(np.uint16)
    for i, frame in enumerate(stack):
        Image.fromarray(frame).save(tmp_path / f"{i}.png")
    frames = load_images(str(tmp_path), 16, 1)
    normalization = fit_normalization(frames, DataConfig())
    back = normalization.inverse(normalization.forward(frames))
    for i, frame in enumerate(back):
        save_png(frame_file(frame, "png16"), str(tmp_path / "out" / f"{i}.png"))
    reread = np.stack([np.asarray(Image.open(tmp_path / "out" / f"{i}.png")) for i in range(8)])
    assert reread.dtype == np.uint16
    assert np.abs(reread.astype(np.int64) - stack).max() <= 1


# ---------------------------------------------------------------------------
# End to end: a float stack of counts 0..50000

def test_float_stack_trains_and_generates_in_data_units(tmp_path, capsys):
    stack = (np.random.default_rng(0).random((32, 16, 16)) ** 4 * 50000).astype(np.float32)
    np.save(tmp_path / "counts.npy", stack)
    run = tmp_path / "run"
    # SAGAN's tiny config: 4 steps = one epoch of 32 frames, one evaluation (FID/KID and the statistics) at its end.
    run_script("train_sagan.py", ["--config", "configs/sagan_tiny.yaml", f"data.path={tmp_path}/counts.npy",
                                  "train.kimg=0.032", "eval.every_epochs=[1]", "eval.until_epochs=[]",
                                  f"out_dir={run}"])
    expected_high = float(np.percentile(stack, 99.9))
    with open(run / "config.yaml") as f:
        recorded = yaml.safe_load(f)["data"]
    assert recorded["normalize"] == "linear" and recorded["range"] == [float(stack.min()), expected_high]
    checkpoint = load_checkpoint(run)
    assert checkpoint["config"]["data"]["range"] == recorded["range"]
    # The evaluation logged the statistics beside their floors, in metrics.jsonl and TensorBoard.
    with open(run / "metrics.jsonl") as f:
        record = json.loads(f.readline())
    assert record["stats"]["num_real"] == 32 and record["stats"]["num_fake"] == 16
    assert record["stats"]["pixel_w1"] > 100 and record["stats"]["floor"]["pixel_w1"] >= 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    assert {"Metrics/stats/pixel_w1", "Metrics/stats/floor/pixel_w1", "Metrics/fid"} <= set(events.Tags()["scalars"])

    ckpt = str(run / "checkpoints" / "last.pt")
    assert generate.main(["--ckpt", ckpt, "--num", "20", "--out", str(tmp_path / "s.npy"), "--format", "npy"]) == 0
    samples = np.load(tmp_path / "s.npy")
    assert samples.dtype == np.float32 and samples.shape == (20, 16, 16)
    # SAGAN's generator ends in tanh: data units are exactly its [-1, 1] stretched over the fitted range.
    assert samples.min() >= recorded["range"][0] - 0.1 and samples.max() <= expected_high + 0.1
    assert samples.max() - samples.min() > 1000
    assert generate.main(["--ckpt", ckpt, "--num", "3", "--out", str(tmp_path / "t"), "--format", "tiff"]) == 0
    tiff = tifffile.imread(tmp_path / "t" / "000002.tif")
    assert tiff.dtype == np.float32
    np.testing.assert_allclose(tiff, samples[2], rtol=1e-6, atol=1e-3)
    assert generate.main(["--ckpt", ckpt, "--num", "3", "--out", str(tmp_path / "p"), "--format", "png16"]) == 0
    png16 = np.asarray(Image.open(tmp_path / "p" / "000001.png"))
    # rounding to the nearest count, seen through float32 (its spacing is 0.0039 near 50000)
    rounding = np.abs(png16.astype(np.float64) - samples[1].astype(np.float64)).max()
    assert png16.dtype == np.uint16 and rounding <= 0.5 + np.spacing(np.float32(samples[1].max()))

    assert stats.main(["--ckpt", ckpt, "--num-samples", "20", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["num_real"] == 32 and report["num_fake"] == 20
    assert set(report["floor"]) == {"pixel_w1", "pixel_ks", "total_w1", "occupancy_w1", "clusters_w1",
                                    "cluster_size_w1", "cluster_intensity_w1", "spectrum_log_ratio"}
    # Against data units: real pixel values span 0..50000, so W1 of an untrained generator is thousands of counts.
    assert report["pixel_w1"] > 100


def test_resume_refuses_a_changed_normalization():
    from training.checkpoint import CheckpointError
    from training.config import BaseConfig, to_dict
    from training.loop import check_resumable
    trained, now = BaseConfig(), BaseConfig()
    trained.data.range, now.data.range = [0.0, 1000.0], [0.0, 2000.0]
    checkpoint = {"model": "toy", "config": to_dict(trained)}
    check_resumable(checkpoint, trained, "toy")
    with pytest.raises(CheckpointError, match="maps data to \\[-1, 1\\] with Normalization\\(kind='linear', low=0.0, "
                                              "high=1000.0"):
        check_resumable(checkpoint, now, "toy")
    # A checkpoint from before data.normalize resumes an 8-bit run.
    old = {"model": "toy", "config": {**to_dict(BaseConfig()), "data": {"resolution": 64, "channels": 1}}}
    eight_bit = BaseConfig()
    eight_bit.data.range = [0.0, 255.0]
    check_resumable(old, eight_bit, "toy")
