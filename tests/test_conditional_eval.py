"""eval/conditional.py: an ideal generator (frames rendered afresh at the asked labels) passes, one that
ignores or shuffles its labels is caught; the response numbers are the per-bin means; the command line
end to end on a tiny conditional checkpoint."""

import json
import os
from argparse import Namespace

import numpy as np
import pytest
import torch

from plumbing import run_script
from eval.conditional import (FLOOR_COPIES, ConditionalEvaluation, builtin_renderer, class_fid, main,
                              per_frame_statistics)
from eval.fid import checkpoint_real_images
from eval.stats import checkpoint_frames
from training import particles
from training.labels import LabelColumn, LabelEncoding

COUNT, RESOLUTION = 400, 32
ENCODING = LabelEncoding([LabelColumn("energy", "continuous", *particles.ENERGY_RANGE),
                          LabelColumn("field", "continuous", *particles.FIELD_RANGE),
                          LabelColumn("type", "discrete", classes=particles.CONDITIONAL_KINDS)])


@pytest.fixture(scope="module")
def built_in():
    """The real side on builtin:particles-cond, the renderer, and labels asked of a generator (drawn from
    the real rows, as a checkpoint's sampler draws them)."""
    torch.set_num_threads(1)
    frames, rows = particles.render_conditional(COUNT, RESOLUTION, seed=0)
    values = {name: [row[name] for row in rows] for name in ENCODING.names}
    render = builtin_renderer({"path": f"builtin:particles-cond?count={COUNT}", "resolution": RESOLUTION})
    evaluation = ConditionalEvaluation(ENCODING, frames, values, render=render)
    drawn = np.random.default_rng(1).integers(COUNT, size=COUNT)
    asked = {name: [column[i] for i in drawn] for name, column in values.items()}
    return evaluation, render, frames, values, asked


def test_an_ideal_generator_is_within_the_floor_and_reads_back_like_real_frames(built_in):
    evaluation, render, _, _, asked = built_in
    report = evaluation.report(render(asked, 7), asked)  # content set 7: neither the real one nor the floor's
    assert report["floor"] == "the real set against frames rendered afresh at the generated frames' labels, 5 sets"
    for name in ("energy", "field"):
        ratios = [curve["ratio"] for curve in report["response"][name]["statistics"].values()]
        assert np.mean(ratios) < 2, (name, ratios)
    fidelity = report["fidelity"]
    assert fidelity["energy"]["real"] > 0.3 and fidelity["type"]["real"] > 0.5  # the reader reads these two
    assert fidelity["energy"]["generated"] >= 0.8 * fidelity["energy"]["real"]
    assert fidelity["type"]["generated"] >= 0.8 * fidelity["type"]["real"]
    assert sum(entry["num_generated"] for entry in report["classes"]["type"].values()) == COUNT


def test_a_generator_that_ignores_or_shuffles_its_labels_is_flagged(built_in):
    evaluation, render, _, _, asked = built_in
    ignored = evaluation.report(render({**asked, "energy": [3.0] * COUNT}, 7), asked)
    occupancy = ignored["response"]["energy"]["statistics"]["occupancy"]
    assert occupancy["ratio"] > 4
    assert ignored["fidelity"]["energy"]["generated"] < 0 < ignored["fidelity"]["energy"]["real"]
    assert ignored["fidelity"]["type"]["generated"] >= 0.8 * ignored["fidelity"]["type"]["real"]  # type still shown

    order = np.random.default_rng(2).permutation(COUNT)
    shuffled = evaluation.report(render({name: [column[i] for i in order] for name, column in asked.items()}, 7),
                                 asked)
    assert shuffled["fidelity"]["energy"]["generated"] < 0
    assert shuffled["fidelity"]["type"]["generated"] < 0.5 * shuffled["fidelity"]["type"]["real"]
    assert shuffled["response"]["energy"]["statistics"]["occupancy"]["ratio"] > 4


def test_response_numbers_are_the_per_bin_means_and_the_floor_the_second_real_set(built_in):
    evaluation, render, frames, values, asked = built_in
    generated = render(asked, 7)
    report = evaluation.report(generated, asked)
    curve = report["response"]["energy"]
    assert curve["bins"][0] == pytest.approx([1.0, 1.8]) and curve["bins"][-1] == pytest.approx([4.2, 5.0])
    threshold = report["threshold"]
    real_occupancy = (frames[:, 0] > threshold).mean((1, 2))
    generated_occupancy = (generated > threshold).mean((1, 2))
    second_occupancies = [(render(asked, copy) > threshold).mean((1, 2)) for copy in FLOOR_COPIES]
    energy, asked_energy = np.array(values["energy"]), np.array(asked["energy"])
    real_in, generated_in = (energy >= 2.6) & (energy < 3.4), (asked_energy >= 2.6) & (asked_energy < 3.4)
    occupancy = curve["statistics"]["occupancy"]
    assert occupancy["real_mean"][2] == pytest.approx(real_occupancy[real_in].mean())
    assert occupancy["generated_mean"][2] == pytest.approx(generated_occupancy[generated_in].mean())
    assert occupancy["num_real"][2] == real_in.sum() and occupancy["num_generated"][2] == generated_in.sum()
    assert occupancy["floor"][2] == pytest.approx(np.mean([abs(real_occupancy[real_in].mean() - second[generated_in].mean())
                                                           for second in second_occupancies]))
    assert occupancy["difference"][2] == pytest.approx(abs(occupancy["generated_mean"][2] - occupancy["real_mean"][2]))
    statistics = per_frame_statistics(frames[:, 0].astype(np.float64), threshold)
    assert statistics["occupancy"] == pytest.approx(real_occupancy)


def test_band_compares_with_frames_rendered_afresh_there(built_in):
    evaluation, render, _, _, asked = built_in
    inside = {**asked, "energy": list(np.linspace(2.5, 3.5, COUNT))}
    ideal = evaluation.band("energy", 2.5, 3.5, render(inside, 7), inside)
    too_bright = evaluation.band("energy", 2.5, 3.5, render({**inside, "energy": [5.0] * COUNT}, 7), inside)
    # One band, one difference each: the floor is as noisy as the difference, so the margins are wide
    # (total intensity is mostly the pedestal: occupancy is the statistic that sees the energy).
    wrong, right = too_bright["statistics"]["occupancy"], ideal["statistics"]["occupancy"]
    assert wrong["difference"] > 5 * wrong["floor"] and wrong["difference"] > 5 * right["difference"]
    assert abs(ideal["read"]["generated_mean"] - ideal["read"]["rendered_mean"]) < 0.3
    assert too_bright["read"]["generated_mean"] - too_bright["read"]["rendered_mean"] > 0.5


def test_a_users_data_gets_the_two_halves_floor_and_a_held_out_quarter(built_in):
    _, _, frames, values, asked = built_in
    evaluation = ConditionalEvaluation(ENCODING, frames[:120], {k: v[:120] for k, v in values.items()})
    assert len(evaluation.held_out_values["energy"]) == 30
    report = evaluation.report(frames[120:], {k: v[120:] for k, v in values.items()})
    assert report["floor"] == "two random halves of the real set, 5 splits"
    # The floor of a bin: |mean of one half - mean of the other| over the real frames in it, averaged over the
    # five splits (the first by the seed's permutation, the others by (seed, k)'s).
    occupancy = per_frame_statistics(frames[:120, 0].astype(np.float64), report["threshold"])["occupancy"]
    in_bin = (np.array(values["energy"][:120]) >= 2.6) & (np.array(values["energy"][:120]) < 3.4)
    floors = []
    for split in [np.random.default_rng(0).permutation(120)] + [np.random.default_rng([0, k]).permutation(120)
                                                                for k in range(1, 5)]:
        a, b = np.zeros(120, bool), np.zeros(120, bool)
        a[split[:60]], b[split[60:]] = True, True
        floors.append(abs(occupancy[a & in_bin].mean() - occupancy[b & in_bin].mean()))
    assert report["response"]["energy"]["statistics"]["occupancy"]["floor"][2] == pytest.approx(np.mean(floors))
    assert all(entry["num_real"] == 30 for entry in report["fidelity"].values())
    with pytest.raises(ValueError, match="builtin:particles-cond"):
        evaluation.band("energy", 2.5, 3.5, frames[120:], {k: v[120:] for k, v in values.items()})


def r_squared(truth, guess) -> float:
    truth, guess = np.asarray(truth, np.float64), np.asarray(guess, np.float64)
    return float(1 - ((guess - truth) ** 2).sum() / ((truth - truth.mean()) ** 2).sum())


def test_fidelity_within_a_class_is_the_r2_of_that_class_frames_alone(built_in):
    evaluation, render, _, _, asked = built_in
    generated = render(asked, 7)
    report = evaluation.report(generated, asked)
    sides = {"generated": evaluation.read(generated), "real": evaluation.read(render(asked, 1))}
    for name in ("energy", "field"):
        by_class = report["fidelity"][name]["by_class"]
        assert set(by_class) == {"type"} and set(by_class["type"]) == set(particles.CONDITIONAL_KINDS)
        for kind, entry in by_class["type"].items():
            rows = [i for i, v in enumerate(asked["type"]) if v == kind]
            assert entry["num_generated"] == entry["num_real"] == len(rows)
            for side, read in sides.items():
                expected = r_squared([asked[name][i] for i in rows], [read[name][i] for i in rows])
                assert entry[side] == pytest.approx(expected), (name, kind, side)


def bars(count: int, size: int, seed: int) -> tuple[np.ndarray, dict[str, list]]:
    """Frames [count, size, size] each holding one bar, horizontal or vertical, at a random place and
    brightness: the orientation is invisible to rotation-blind features, plain to a CNN."""
    rng = np.random.default_rng(seed)
    frames = rng.normal(0, 0.05, (count, size, size))
    orientation = rng.choice(["horizontal", "vertical"], count)
    brightness = rng.uniform(1, 3, count)
    for frame, kind, level, at, start in zip(frames, orientation, brightness, rng.integers(2, size - 2, count),
                                             rng.integers(0, size // 2, count)):
        if kind == "horizontal":
            frame[at, start:start + size // 2] += level
        else:
            frame[start:start + size // 2, at] += level
    return frames, {"orientation": list(orientation), "brightness": list(brightness)}


def test_the_cnn_reader_sees_a_shape_the_feature_reader_cannot():
    encoding = LabelEncoding([LabelColumn("brightness", "continuous", 1.0, 3.0),
                              LabelColumn("orientation", "discrete", classes=["horizontal", "vertical"])])
    frames, values = bars(400, 16, seed=0)
    generated, asked = bars(200, 16, seed=1)
    accuracy = {}
    for reader in ("features", "cnn"):
        torch.manual_seed(0)
        evaluation = ConditionalEvaluation(encoding, frames, values, reader=reader, reader_steps=300, flips=False)
        report = evaluation.report(generated, asked)
        assert report["reader"] == f"{reader}, trained on 300 real frames"
        accuracy[reader] = report["fidelity"]["orientation"]["generated"]
        assert report["fidelity"]["brightness"]["generated"] > 0.5  # both read the brightness
    assert accuracy["features"] < 0.65 and accuracy["cnn"] > 0.9, accuracy


def test_the_reader_can_train_on_frames_rendered_afresh(built_in):
    _, render, frames, values, asked = built_in
    evaluation = ConditionalEvaluation(ENCODING, frames, values, render=render, reader_frames=300)
    report = evaluation.report(render(asked, 7), asked)
    assert report["reader"] == "features, trained on 300 frames rendered afresh"
    assert report["fidelity"]["energy"]["real"] > 0.3 and report["fidelity"]["type"]["real"] > 0.5
    with pytest.raises(ValueError, match=r"--reader-frames .*\(builtin:particles-cond\)"):
        ConditionalEvaluation(ENCODING, frames, values, reader_frames=300)
    with pytest.raises(ValueError, match="reader must be one of features, cnn"):
        ConditionalEvaluation(ENCODING, frames, values, render=render, reader="pixels")


def test_command_line_on_a_tiny_conditional_checkpoint_matches_training_evaluation(tmp_path, capsys):
    run_script("train_stylegan2.py", ["--config", "configs/stylegan2_tiny.yaml", "data.resolution=16",
                                      "data.path=builtin:particles-cond?count=32", "eval.every_kimg=0.016",
                                      f"out_dir={tmp_path / 'run'}"])
    ckpt = str(tmp_path / "run" / "checkpoints" / "last.pt")
    result = run_script("eval/conditional.py", ["--ckpt", ckpt, "--num-samples", "16", "--band", "energy=2.5:3.5",
                                                "--plots", str(tmp_path / "plots"), "--json"])
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(report["response"]) == {"energy", "field"} and set(report["classes"]["type"]) == set(
        particles.CONDITIONAL_KINDS)
    assert report["num_generated"] == 16 and report["num_real"] == 32 and report["band"]["num"] == 16
    assert sum(report["response"]["energy"]["statistics"]["totals"]["num_generated"]) == 16
    assert sorted(os.listdir(tmp_path / "plots")) == ["response_energy.png", "response_field.png"]

    # Training's evaluation at the last step logged the same numbers: the same 16 frames (G_ema, seed 0,
    # eval.num_samples 16) against the same real frames.
    with open(tmp_path / "run" / "metrics.jsonl") as f:
        logged = json.loads(f.readlines()[-1])["conditional"]
    for name, response in report["response"].items():
        for key, curve in response["statistics"].items():
            assert logged[f"response/{name}/{key}"] == pytest.approx(curve["ratio"])
    for name, entry in report["fidelity"].items():
        assert logged[f"fidelity/{name}/generated"] == pytest.approx(entry["generated"])
        assert logged[f"fidelity/{name}/real"] == pytest.approx(entry["real"])

    # The CNN reader on rendered frames, in this process (a process start costs more than the check).
    assert main(["--ckpt", ckpt, "--num-samples", "8", "--reader", "cnn", "--reader-steps", "2",
                 "--reader-frames", "20", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["reader"] == "cnn, trained on 20 frames rendered afresh"
    assert set(report["fidelity"]["field"]["by_class"]["type"]) == set(particles.CONDITIONAL_KINDS)

    # The one-line errors.
    assert main(["--ckpt", ckpt, "--band", "type=1:2"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "continuous label (energy, field)" in error
    checkpoint = torch.load(ckpt, weights_only=True)
    del checkpoint["labels"]
    checkpoint["config"]["data"]["label_columns"] = []
    torch.save(checkpoint, tmp_path / "unconditional.pt")
    assert main(["--ckpt", str(tmp_path / "unconditional.pt")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "trained without labels" in error

    # A run with a band left out is compared with the frames it trained on, as training's evaluation does:
    # eval/stats.py, physics.py, fid.py and memorization.py leave the band out of the real set.
    checkpoint = torch.load(ckpt, weights_only=True)
    checkpoint["config"]["data"]["label_exclude"] = ["energy:2.5:3.5"]
    torch.save(checkpoint, tmp_path / "band.pt")
    frames, rows = particles.render_conditional(32, 16, seed=0)
    outside = [i for i, row in enumerate(rows) if not 2.5 <= row["energy"] <= 3.5]
    assert 0 < len(outside) < 32
    arguments = Namespace(ckpt=str(tmp_path / "band.pt"), data=None, device="cpu", seed=0, truncation=1.0,
                          no_ema=False, num_samples=4, batch_size=4)
    real, fake, _ = checkpoint_frames(arguments)
    assert torch.equal(real, torch.from_numpy(frames[outside]).to(real.dtype)) and len(fake) == 4
    _, images = checkpoint_real_images(checkpoint, "band.pt")
    assert images.dtype == torch.uint8 and len(images) == len(outside)


def test_per_class_fid_scores_each_class_of_frames_apart(built_in):
    from test_eval_fid import PixelFeatures
    from eval.fid import Evaluator, scores

    _, render, frames, values, asked = built_in
    real, generated = torch.from_numpy(frames[:60]), torch.from_numpy(render(asked, 7)[:45, None])
    real_values, generated_values = {k: v[:60] for k, v in values.items()}, {k: v[:45] for k, v in asked.items()}
    evaluator = Evaluator(real, "cpu", extractor=PixelFeatures(), cache=False, precision_recall=False)
    result = class_fid(real, generated, real_values, generated_values, ENCODING, "cpu", evaluator=evaluator)
    assert set(result) == {"type"} and set(result["type"]) == set(particles.CONDITIONAL_KINDS)
    for kind, score in result["type"].items():
        real_rows = [i for i, v in enumerate(real_values["type"]) if v == kind]
        generated_rows = [i for i, v in enumerate(generated_values["type"]) if v == kind]
        expected = scores(PixelFeatures()(real[real_rows]).numpy(), PixelFeatures()(generated[generated_rows]).numpy(),
                          precision_recall=False)
        assert score["fid"] == pytest.approx(expected["fid"], rel=1e-5)
        assert score["kid"] == pytest.approx(expected["kid"], rel=1e-5, abs=1e-9)
