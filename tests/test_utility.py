"""benchmarks/utility.py on a tiny conditional checkpoint (16 px, 32 frames) with tiny settings: every
setting for every seed, the same numbers again for a seed, generated frames with the labels eval/generate.py
gives them, a test set apart from the training frames, frames rendered afresh that help where mislabelled
ones hurt, a user's data split into training and held-out frames, and the one-line errors."""

import csv
import json

import numpy as np
import pytest
import torch

from plumbing import run_script
from benchmarks.utility import IDEAL_COPY, TEST_COPY, UtilityBenchmark, compare, main
from eval.conditional import builtin_renderer
from eval.generate import main as generate_main
from training.checkpoint import load_checkpoint

TINY = ["--seeds", "2", "--num-generated", "8,24", "--test-frames", "40", "--steps", "10", "--width", "4"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("utility") / "run"
    run_script("train_stylegan2.py", ["--config", "configs/stylegan2_tiny.yaml", "data.resolution=16",
                                      "data.path=builtin:particles-cond?count=32", f"out_dir={run}"])
    return str(run / "checkpoints" / "last.pt")


def frame_keys(frames: np.ndarray) -> set[bytes]:
    return {np.ascontiguousarray(frame, np.float32).tobytes() for frame in frames}


def test_every_setting_for_every_seed_and_the_same_numbers_again_for_a_seed(ckpt, tmp_path, capsys):
    assert main(["--ckpt", ckpt, *TINY, "--json", "--plot", str(tmp_path / "utility.png")]) == 0
    out, err = capsys.readouterr()
    report = json.loads(out.strip().splitlines()[-1])
    assert list(report["settings"]) == ["real", "real+8", "real+24", "generated", "augmented", "augmented+24"]
    assert report["num_real"] == 32 and report["num_test"] == 40 and report["seeds"] == [0, 1]
    assert report["label"] == "energy" and report["metric"] == "rmse" and report["lower_is_better"]
    counts = {name: (s["num_real"], s["num_generated"], s["augmented"]) for name, s in report["settings"].items()}
    assert counts == {"real": (32, 0, False), "real+8": (32, 8, False), "real+24": (32, 24, False),
                      "generated": (0, 32, False), "augmented": (32, 0, True), "augmented+24": (32, 24, True)}
    for setting in report["settings"].values():
        assert len(setting["scores"]) == 2 and all(s > 0 for s in setting["scores"])
        assert setting["mean"] == pytest.approx(np.mean(setting["scores"]))
        assert setting["std"] == pytest.approx(np.std(setting["scores"], ddof=1))
    for name in ("real+8", "real+24", "augmented+24"):
        setting, real = report["settings"][name], report["settings"]["real"]
        expected = compare(real, setting, lower_is_better=True)
        assert report["verdict"][name]["vs_real"] == expected
        assert report["verdict"][name]["vs_augmented"] == compare(report["settings"]["augmented"], setting, True)
        assert expected["gain"] == pytest.approx(real["mean"] - setting["mean"])
        assert report["helped"] >= (expected["verdict"] == "better")
    assert "generated frames helped beyond the seed spread: " in err.lower()
    with open(tmp_path / "utility.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"

    # Seed s's numbers depend on s alone: again, in the other order.
    benchmark = UtilityBenchmark(load_checkpoint(ckpt), ckpt, "energy", test_frames=40)
    again = benchmark.run([1, 0], [8, 24], steps=10, width=4)
    for name, setting in again["settings"].items():
        assert setting["scores"] == report["settings"][name]["scores"][::-1], name


def test_generated_frames_are_eval_generates_with_the_labels_they_were_asked_for(ckpt, tmp_path):
    benchmark = UtilityBenchmark(load_checkpoint(ckpt), ckpt, "energy", test_frames=40)
    frames, values = benchmark.generated(12, seed=3)
    assert generate_main(["--ckpt", ckpt, "--num", "12", "--seed", "3", "--format", "npy",
                          "--out", str(tmp_path / "samples.npy")]) == 0
    np.testing.assert_array_equal(frames, np.load(tmp_path / "samples.npy"))
    with open(tmp_path / "samples_labels.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["energy"]) for r in rows] == pytest.approx(values["energy"], rel=1e-12)
    assert [r["type"] for r in rows] == values["type"]
    assert len(set(values["energy"])) > 3  # drawn from the training rows, not one setting


def test_the_test_frames_are_fresh_and_at_training_labels(ckpt):
    checkpoint = load_checkpoint(ckpt)
    benchmark = UtilityBenchmark(checkpoint, ckpt, "energy", test_frames=40, ideal=True)
    training_rows = set(zip(*benchmark.real_values.values()))
    assert set(zip(*benchmark.test_values.values())) <= training_rows
    assert len(frame_keys(benchmark.test)) == 40
    assert not frame_keys(benchmark.test) & frame_keys(benchmark.real)
    ideal, values = benchmark.generated(40, seed=0)
    assert not frame_keys(ideal) & (frame_keys(benchmark.real) | frame_keys(benchmark.test))
    render = builtin_renderer(checkpoint["config"]["data"])
    np.testing.assert_array_equal(ideal, render(values, IDEAL_COPY))
    np.testing.assert_array_equal(benchmark.test, render(benchmark.test_values, TEST_COPY))
    # The real frames are the training set's: rendered as content set 0 at their own labels.
    np.testing.assert_array_equal(benchmark.real, render(benchmark.real_values, 0))


def test_frames_rendered_afresh_do_not_hurt_where_mislabelled_ones_do(ckpt):
    benchmark = UtilityBenchmark(load_checkpoint(ckpt), ckpt, "type", test_frames=96, ideal=True)
    ideal = benchmark.run([0, 1], [256], steps=60, width=8)
    real, added = ideal["settings"]["real"], ideal["settings"]["real+256"]
    assert ideal["metric"] == "accuracy" and real["mean"] > ideal["no_skill"] + 0.05
    assert added["mean"] >= real["mean"] - real["std"]

    rendered = benchmark.generated
    rotate = {"hits": "tracks", "tracks": "shower", "shower": "hits"}

    def mislabelled(count, seed):
        frames, values = rendered(count, seed)
        return frames, {**values, "type": [rotate[v] for v in values["type"]]}

    benchmark.generated = mislabelled
    wrong = benchmark.run([0, 1], [256], steps=60, width=8)
    assert wrong["settings"]["real"]["scores"] == real["scores"]
    assert wrong["settings"]["real+256"]["mean"] < real["mean"] - 0.15
    assert wrong["verdict"]["real+256"]["vs_real"]["verdict"] == "worse" and not wrong["helped"]


def test_a_users_data_holds_out_a_fraction_of_the_real_frames(ckpt, tmp_path):
    checkpoint = load_checkpoint(ckpt)
    built_in = UtilityBenchmark(checkpoint, ckpt, "energy", test_frames=2)
    np.save(tmp_path / "frames.npy", built_in.real)
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(list(built_in.real_values))
        writer.writerows(zip(*built_in.real_values.values()))
    checkpoint["config"]["data"] |= {"path": str(tmp_path / "frames.npy"), "labels": str(tmp_path / "labels.csv")}
    benchmark = UtilityBenchmark(checkpoint, "user.pt", "energy", holdout=0.25)
    assert len(benchmark.test) == 8 and len(benchmark.real) == 24
    assert not frame_keys(benchmark.test) & frame_keys(benchmark.real)
    assert frame_keys(benchmark.test) | frame_keys(benchmark.real) == frame_keys(built_in.real)
    energy_of = dict(zip((f.tobytes() for f in built_in.real), built_in.real_values["energy"]))
    assert [energy_of[f.tobytes()] for f in benchmark.test] == benchmark.test_values["energy"]
    assert "8 of the 32 real frames (0.25) held out" in benchmark.test_set
    torch.save(checkpoint, tmp_path / "user.pt")
    assert main(["--ckpt", str(tmp_path / "user.pt"), "--ideal"]) == 2


def test_one_line_errors(ckpt, tmp_path, capsys):
    def error_of(*args):
        assert main(["--ckpt", *args]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        return err

    assert "not found" in error_of(str(tmp_path / "missing.pt"))
    assert "--label momentum: not a label" in error_of(ckpt, "--label", "momentum")
    checkpoint = load_checkpoint(ckpt)
    del checkpoint["labels"]
    checkpoint["config"]["data"]["label_columns"] = []
    torch.save(checkpoint, tmp_path / "unconditional.pt")
    assert "trained without labels" in error_of(str(tmp_path / "unconditional.pt"))
    torch.save({"model": "singan", "config": {"data": {"path": "one.png"}}}, tmp_path / "singan.pt")
    assert "SinGAN" in error_of(str(tmp_path / "singan.pt"))
