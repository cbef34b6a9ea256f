"""Labels for conditional models: every source (CSV by file name, arrays, HDF5 datasets), the encoding
recorded in the config, each bad input as one line, and the labelled built-in set."""

import hashlib

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from plumbing import run_script
from training import particles
from training.config import DataConfig
from training.data import DataError, load_frames
from training.labels import LabelEncoding, load_labels


def write_frames(folder, names):
    for i, name in enumerate(names):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8), 10 * i, np.uint8)).save(path)


def labelled(path, labels, **keys):
    """(encoding, encoded labels, the config after fitting) for data.path=path, data.labels=labels."""
    config = DataConfig(path=str(path), labels=labels, **keys)
    images, names = load_frames(config.path, 8, 1)
    encoding, encoded = load_labels(config, names, len(images))
    return encoding, encoded, config, images


def test_csv_rows_are_matched_to_images_by_file_name(tmp_path):
    write_frames(tmp_path / "frames", ["a.png", "sub/b.png", "c.png", "d.png"])
    (tmp_path / "labels.csv").write_text("file,energy,field,type\n"
                                         "d.png,5.0,0.5,shower\nsub/b.png,2.0,0.25,tracks\n"
                                         "c.png,3.0,0.0,tracks\na.png,1.0,1.0,shower\n")
    encoding, encoded, config, images = labelled(tmp_path / "frames", str(tmp_path / "labels.csv"))
    # Frames come in the loader's order (a, c, d, sub/b): each gets its own row.
    assert [int(v) for v in images[:, 0, 0, 0]] == [0, 20, 30, 10]  # written in the order a, sub/b, c, d
    energy = encoded[:, 0].tolist()
    assert energy == pytest.approx([-1.0, 0.0, 1.0, -0.5])  # 1, 3, 5, 2 mapped from [1, 5] to [-1, 1]
    assert encoded[:, 1].tolist() == pytest.approx([1.0, -1.0, 0.0, -0.5])
    assert encoded[:, 2:].tolist() == [[1, 0], [0, 1], [1, 0], [0, 1]]  # one-hot over (shower, tracks)
    assert config.label_columns == ["energy:continuous", "field:continuous", "type:discrete"]
    assert config.label_ranges == [[1.0, 5.0], [0.0, 1.0], []]
    assert config.label_classes == [[], [], ["shower", "tracks"]]
    # The recorded encoding rebuilds the same one; decoding inverts encoding.
    rebuilt = LabelEncoding.from_config(vars(config))
    assert rebuilt.c_dim == encoding.c_dim == 4
    assert rebuilt.decode(encoded) == {"energy": pytest.approx([1, 3, 5, 2]), "field": pytest.approx([1, 0, .5, .25]),
                                       "type": ["shower", "tracks", "shower", "tracks"]}


def test_columns_kinds_and_given_ranges(tmp_path):
    write_frames(tmp_path / "frames", ["a.png", "b.png", "c.png", "d.png"])
    (tmp_path / "labels.csv").write_text("file,run,energy\na.png,7,1.5\nb.png,7,2.5\nc.png,9,2\nd.png,9,3\n")
    encoding, encoded, config, _ = labelled(tmp_path / "frames", str(tmp_path / "labels.csv"),
                                            label_columns=["energy", "run"], label_ranges=[[0.0, 4.0]])
    assert config.label_columns == ["energy:continuous", "run:discrete"]  # integers are classes
    assert config.label_classes == [[], ["7", "9"]] and config.label_ranges == [[0.0, 4.0], []]
    assert encoded[:, 0].tolist() == pytest.approx([-0.25, 0.25, 0.0, 0.5])
    _, encoded, config, _ = labelled(tmp_path / "frames", str(tmp_path / "labels.csv"),
                                     label_columns=["run:continuous"])
    assert config.label_ranges == [[7.0, 9.0]] and encoded[:, 0].tolist() == [-1, -1, 1, 1]


def test_arrays_and_hdf5_datasets_aligned_with_a_stack(tmp_path):
    stack = np.arange(6 * 8 * 8, dtype=np.float32).reshape(6, 8, 8)
    with h5py.File(tmp_path / "frames.h5", "w") as f:
        f["entry/frames"] = stack
        f["entry/energy"] = np.array([1, 2, 3, 4, 5, 6], np.float64) + 0.5
        f["entry/type"] = np.array([b"mu", b"e", b"mu", b"e", b"mu", b"e"])
    np.save(tmp_path / "field.npy", np.linspace(0, 1, 6))
    sources = [f"{tmp_path}/frames.h5:/entry/energy", f"{tmp_path}/frames.h5:/entry/type", str(tmp_path / "field.npy")]
    encoding, encoded, config, _ = labelled(f"{tmp_path}/frames.h5:/entry/frames", sources)
    assert encoding.names == ["energy", "type", "field"]
    assert encoded[:, 0].tolist() == pytest.approx([-1, -.6, -.2, .2, .6, 1])
    assert encoded[:, 1:3].tolist() == [[0, 1], [1, 0]] * 3 and encoded[:, 3].tolist() == pytest.approx(
        list(np.linspace(-1, 1, 6)))
    # A stack with a CSV in frame order (no file column), and an [N, K] array.
    (tmp_path / "rows.csv").write_text("energy\n" + "".join(f"{v}\n" for v in [1.0, 2, 3, 4, 5, 6.0]))
    np.save(tmp_path / "pair.npy", np.stack([np.arange(6.0), np.arange(6.0) * 2], 1))
    encoding, encoded, _, _ = labelled(f"{tmp_path}/frames.h5:/entry/frames", [str(tmp_path / "rows.csv"),
                                                                               str(tmp_path / "pair.npy")])
    assert encoding.names == ["energy", "pair_0", "pair_1"] and encoded.shape == (6, 3)


@pytest.mark.parametrize("csv_text, message", [
    ("file,energy\na.png,1.0\nb.png,2.0\n", "the image c.png has no row in"),
    ("file,energy\na.png,1.0\nb.png,2.0\nc.png,3.0\nz.png,4.0\n", "row 5 labels z.png, which is not among the images"),
    ("file,energy\na.png,1.0\nb.png,\nc.png,3.0\n", "row 3 (b.png): energy is empty or NaN"),
    ("file,energy\na.png,1.0\nb.png,nan\nc.png,3.0\n", "row 3 (b.png): energy is empty or NaN"),
    ("file,type\na.png,mu\nb.png,mu\nc.png,e\n", "type = 'e' (frame 2) is the only frame of its class"),
    ("file,energy\na.png,1.0\nb.png,2.0\na.png,3.0\nc.png,1.0\n", "row 4: a.png is labelled twice"),
    ("file,energy\na.png,1.0\nb.png,2.0,7\nc.png,3.0\n", "row 3 has 3 cells, the header 2"),
    ("energy\n1.0\n2.0\n3.0\n", "has no 'file' column"),
    ("file,energy\na.png,2\nb.png,2\nc.png,2\n", "never changes"),
])
def test_bad_labels_are_one_line_errors_naming_the_file_and_row(tmp_path, csv_text, message):
    write_frames(tmp_path / "frames", ["a.png", "b.png", "c.png"])
    (tmp_path / "labels.csv").write_text(csv_text)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        labelled(tmp_path / "frames", str(tmp_path / "labels.csv"),
                 label_columns=["energy:continuous"] if "never" in message else [])
    assert "\n" not in str(error.value) and ("labels.csv" in str(error.value) or "energy" in str(error.value))


def test_bad_arrays_and_columns_are_one_line_errors(tmp_path):
    np.save(tmp_path / "stack.npy", np.zeros((4, 8, 8), np.float32))
    np.save(tmp_path / "short.npy", np.arange(3.0))
    np.save(tmp_path / "nan.npy", np.array([1.0, np.nan, 2.0, 3.0]))
    np.save(tmp_path / "energy.npy", np.array([1.0, 1.5, 2.0, 3.0]))
    stack = str(tmp_path / "stack.npy")
    with pytest.raises(DataError, match=r"short.npy has shape \[3\] for 4 frames"):
        labelled(stack, str(tmp_path / "short.npy"))
    with pytest.raises(DataError, match="nan.npy row 1: NaN"):
        labelled(stack, str(tmp_path / "nan.npy"))
    with pytest.raises(DataError, match="data.label_columns: field is not a label"):
        labelled(stack, str(tmp_path / "stack.npy").replace("stack", "energy"), label_columns=["field"])
    (tmp_path / "rows.csv").write_text("energy\n1.0\n2.0\n")
    with pytest.raises(DataError, match="rows.csv has 2 rows for a stack of 4 frames"):
        labelled(stack, str(tmp_path / "rows.csv"))


def test_a_training_script_reports_bad_labels_in_one_line_and_writes_nothing_else(tmp_path):
    write_frames(tmp_path / "frames", ["a.png", "b.png", "c.png", "d.png"])
    (tmp_path / "labels.csv").write_text("file,energy\na.png,1.0\nb.png,2.0\nc.png,3.0\n")
    result = run_script("train_stylegan2.py", ["--config", "configs/stylegan2_tiny.yaml", f"data.path={tmp_path}/frames",
                                               f"data.labels={tmp_path}/labels.csv", f"out_dir={tmp_path}/run"],
                        expect_status=2)
    assert result.stderr.strip().count("\n") == 0 and "the image d.png has no row in" in result.stderr
    assert not list((tmp_path / "run").rglob("*.pt"))


# ---------------------------------------------------------------------------
# builtin:particles-cond

def test_the_unlabelled_built_in_set_is_unchanged():
    # Digests of the renderer's output before the labelled set was added: the study's numbers rest on them.
    assert hashlib.sha256(particles.render(40, 64, 0).tobytes()).hexdigest() == (
        "78f2b3a930748682de041ce48b1bea141be3d2144f4d994c9ff0b35a60260092")
    assert hashlib.sha256(particles.render(20, 32, 3).tobytes()).hexdigest() == (
        "47b9e279d7145c48883443c51077e69c08907b098440da11c735d8fcb265cc2c")


def test_labelled_built_in_set_renders_from_its_labels():
    config = DataConfig(path="builtin:particles-cond?count=60&seed=2")
    images, names = load_frames(config.path, 32, 1)
    encoding, encoded = load_labels(config, names, len(images))
    assert names is None and encoding.names == ["energy", "field", "type"]
    assert config.label_classes[2] == ["hits", "shower", "tracks"]
    table = [particles.conditional_labels(2, i) for i in range(60)]
    assert encoding.decode(encoded)["type"] == [row["type"] for row in table]
    assert torch.equal(images[7, 0], torch.from_numpy(particles.render_conditional_frame(2, 7, 32)))
    lo, hi = particles.ENERGY_RANGE
    assert all(lo <= row["energy"] <= hi for row in table) and {row["type"] for row in table} == set(
        particles.CONDITIONAL_KINDS)

    # The same frame rendered afresh at other settings: the field bends tracks and touches nothing else,
    # the energy scales the signal above the pedestal.
    for index in range(6):
        hits = [particles.render_conditional_frame(2, index, 64, field=f, kind="hits") for f in (0.1, 0.9)]
        assert np.array_equal(*hits)
        tracks = [particles.render_conditional_frame(2, index, 64, field=f, kind="tracks") for f in (0.1, 0.9)]
        assert not np.array_equal(*tracks)
        for kind in particles.CONDITIONAL_KINDS:
            total = [particles.render_conditional_frame(2, index, 64, energy=e, kind=kind).astype(float).sum()
                     for e in (1.5, 3.0, 4.5)]
            assert total[0] < total[1] < total[2], (kind, total)
    with pytest.raises(ValueError, match="kind must be one of hits, tracks, shower"):
        particles.render_conditional_frame(0, 0, 32, kind="muon")


def test_a_band_of_a_continuous_label_can_be_left_out():
    from training.labels import excluded_frames
    config = DataConfig(path="builtin:particles-cond?count=40")
    images, names = load_frames(config.path, 16, 1)
    encoding, encoded = load_labels(config, names, len(images))
    energy = np.array([particles.conditional_labels(0, i)["energy"] for i in range(40)])
    left_out = excluded_frames(encoding, encoded, ["energy:2.5:3.5"])
    assert left_out.tolist() == ((energy >= 2.5) & (energy <= 3.5)).tolist() and 0 < left_out.sum() < 40
    both = excluded_frames(encoding, encoded, ["energy:2.5:3.5", "field:0:0.2"])
    field = np.array([particles.conditional_labels(0, i)["field"] for i in range(40)])
    assert both.tolist() == (left_out.numpy() | (field <= 0.2)).tolist()
    for band in ("type:0:1", "energy:3", "energy:4:2", "mass:0:1"):
        with pytest.raises(DataError, match="data.label_exclude: .* expected name:low:high"):
            excluded_frames(encoding, encoded, [band])
