"""Conditional StyleGAN2: the label in the mapping network and the projection discriminator, unconditional
runs unchanged, exact resume and 2 processes = 1 with labels, generation at a setting."""

import csv
import math
import os

import h5py
import numpy as np
import pytest
import torch

from plumbing import (ROOT, check_resume_is_deterministic, check_two_processes_match_one, load_checkpoint,
                      run_script)
import nets
from nets.stylegan2 import (Discriminator, Generator, Sampler, build_discriminator, build_generator,
                            normalize_2nd_moment)
from train_stylegan2 import StyleGAN2Config
from training.config import build_config, to_dict
from training.data import load_frames
from training.labels import LabelEncoding, labels_for_indices, load_labels

SCRIPT = "train_stylegan2.py"
TINY = ["--config", "configs/stylegan2_tiny.yaml", "data.resolution=16"]
COND = [*TINY, "data.path=builtin:particles-cond?count=32"]


def tiny_config(*overrides) -> dict:
    return to_dict(build_config(StyleGAN2Config, os.path.join(ROOT, "configs", "stylegan2_tiny.yaml"),
                                ["data.resolution=16", *overrides]))


def test_unconditional_networks_and_training_are_what_they_were():
    """Values of the networks and of a 4-step run as the code before labels existed made them
    (summed in float64; the tolerance admits another CPU's rounding, not another computation)."""
    config = tiny_config()
    torch.manual_seed(0)
    G, D = build_generator(config), build_discriminator(config)
    assert G.c_dim == D.c_dim == 0 and not hasattr(G.mapping, "embed") and not hasattr(D, "embed")
    g = torch.Generator().manual_seed(1)
    z, flat = torch.randn(4, 16, generator=g), torch.randn(4, G.noise_numel, generator=g)
    with torch.no_grad():
        img = G(z, noise=G.noise_from_flat(flat))
        assert img.double().sum().item() == pytest.approx(-53.07804658263922, rel=1e-5)
        assert img.double().abs().sum().item() == pytest.approx(668.8886247202754, rel=1e-5)
        assert D(img).double().sum().item() == pytest.approx(0.664804682135582, rel=1e-4)


def test_unconditional_run_trains_as_before(tmp_path):
    run_script(SCRIPT, [*TINY, "data.path=builtin:particles?count=32", f"out_dir={tmp_path}"])
    checkpoint = load_checkpoint(tmp_path)
    assert "labels" not in checkpoint and checkpoint["config"]["data"]["label_columns"] == []
    ema = sum(v.double().abs().sum().item() for v in checkpoint["G_ema"].values())
    d = sum(v.double().abs().sum().item() for v in checkpoint["D"].values())
    assert ema == pytest.approx(165931.11344484845, rel=1e-6) and d == pytest.approx(42297.17626688334, rel=1e-6)


def test_label_enters_the_mapping_network_beside_z():
    torch.manual_seed(0)
    G = Generator(z_dim=8, w_dim=16, resolution=8, img_channels=1, mapping_layers=2, channel_base=64,
                  channel_max=16, c_dim=3)
    z, c = torch.randn(5, 8), torch.randn(5, 3)
    x = torch.cat([normalize_2nd_moment(z), normalize_2nd_moment(G.mapping.embed(c))], dim=1)
    for layer in G.mapping.layers:
        x = layer(x)
    torch.testing.assert_close(G.mapping(z, c), x)
    assert G.mapping.layers[0].weight.shape[1] == 8 + 16
    # Style mixing: both latents take the sample's label.
    w_mix = G.mapping(torch.cat([z, z.flip(0)]), torch.cat([c, c]))
    with torch.no_grad():
        mixed = G(z, z_mix=z.flip(0), mix_cutoff=torch.full((5,), 1), c=c, noise_mode="const")
        manual_ws = torch.cat([w_mix[:5, None], w_mix[5:, None].expand(-1, G.num_ws - 1, -1)], dim=1)
        torch.testing.assert_close(mixed, G.synthesis(manual_ws, noise_mode="const"))


def test_projection_discriminator_is_an_inner_product_with_the_mapped_label():
    torch.manual_seed(0)
    D = Discriminator(resolution=8, img_channels=1, channel_base=64, channel_max=16, mbstd_group_size=2, c_dim=4)
    img, c = torch.randn(4, 1, 8, 8), torch.eye(4)
    x = D.fromrgb(img)
    for block in D.blocks:
        x = block(x)
    from nets.stylegan2 import minibatch_std
    features = D.out(D.fc(D.conv(minibatch_std(x, 2)).flatten(1)))
    cmap = D.label_mapping(normalize_2nd_moment(D.embed(c)))
    expected = (features * cmap).sum(1) / math.sqrt(D.cmap_dim)
    torch.testing.assert_close(D(img, c), expected)
    assert features.shape == (4, 16)
    assert not torch.allclose(D(img, c), D(img, c.roll(1, 0)))  # the same frames scored for other labels


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("conditional") / "run"
    run_script(SCRIPT, [*COND, f"out_dir={out}"])
    return out, load_checkpoint(out)


def test_conditional_run_records_its_labels_and_samples_from_their_distribution(conditional_run):
    out, checkpoint = conditional_run
    data = checkpoint["config"]["data"]
    assert data["label_columns"] == ["energy:continuous", "field:continuous", "type:discrete"]
    encoding = LabelEncoding.from_config(data)
    assert encoding.c_dim == 5 and checkpoint["labels"].shape == (32, 5)
    # The checkpoint's table is the training set's labels, encoded.
    images, names = load_frames(data["path"], 16, 1)
    config = build_config(StyleGAN2Config, os.path.join(out, "config.yaml"), [])
    _, encoded = load_labels(config.data, names, len(images))
    torch.testing.assert_close(checkpoint["labels"], encoded)
    # Sample i's label is a row of that table drawn by (seed, i), whatever the batch.
    sampler = nets.load_sampler(checkpoint, "cpu", seed=3)
    rows = sampler.labels_for(torch.arange(8))
    assert all(any(torch.equal(row, t) for t in checkpoint["labels"]) for row in rows)
    torch.testing.assert_close(sampler.labels_for(torch.tensor([5, 6])), rows[5:7])
    torch.testing.assert_close(sampler(torch.arange(8))[5:7], sampler(torch.tensor([5, 6])))
    # Fixed labels: sample i gets row i % K; the label changes the frame.
    G = build_generator(checkpoint["config"])
    G.load_state_dict(checkpoint["G_ema"])
    fixed = encoding.encode({"energy": [1.5, 4.5], "field": [0.5, 0.5], "type": ["tracks", "tracks"]})
    pair = Sampler(G.eval(), seed=0, labels=fixed, draw_labels=False)(torch.tensor([0, 2]))
    other = Sampler(G.eval(), seed=0, labels=fixed.flip(0), draw_labels=False)(torch.tensor([0, 2]))
    assert not torch.allclose(pair, other)


def test_generate_at_a_setting_writes_labels_beside_the_frames(conditional_run, tmp_path):
    out, checkpoint = conditional_run
    ckpt = str(out / "checkpoints" / "last.pt")
    result = run_script("eval/generate.py", ["--ckpt", ckpt, "--num", "5", "--out", str(tmp_path / "png"),
                                             "--label", "energy=3.5,type=shower"])
    with open(tmp_path / "png" / "labels.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["file"] for r in rows] == [f"{i:06d}.png" for i in range(5)]
    assert all(r["energy"] == "3.5" and r["type"] == "shower" for r in rows)
    # The field was not given: drawn from the training rows by (seed, i), as the sampler draws them.
    encoding = LabelEncoding.from_config(checkpoint["config"]["data"])
    drawn = encoding.decode(labels_for_indices(checkpoint["labels"], torch.arange(5), 0))["field"]
    assert [float(r["field"]) for r in rows] == pytest.approx(drawn)
    assert "warning" not in result.stderr

    # Per-frame settings from a CSV, out of range with one warning, into one HDF5 file that reads back
    # as a labelled training set.
    (tmp_path / "settings.csv").write_text("energy,type\n2.0,hits\n9.0,tracks\n")
    result = run_script("eval/generate.py", ["--ckpt", ckpt, "--num", "4", "--out", str(tmp_path / "set.h5"),
                                             "--format", "h5", "--labels-from", str(tmp_path / "settings.csv")])
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    low, high = checkpoint["config"]["data"]["label_ranges"][0]
    assert warnings == [f"warning: energy: values outside the training range [{low:g}, {high:g}] (2 to 9); "
                        f"the model extrapolates there"]
    with h5py.File(tmp_path / "set.h5") as f:
        assert f["frames"].shape == (4, 16, 16) and f["labels/energy"][()].tolist() == [2.0, 9.0, 2.0, 9.0]
        assert [t.decode() for t in f["labels/type"][()]] == ["hits", "tracks", "hits", "tracks"]
    from training.config import DataConfig
    data = DataConfig(path=f"{tmp_path}/set.h5:/frames",
                      labels=[f"{tmp_path}/set.h5:/labels/energy", f"{tmp_path}/set.h5:/labels/type"])
    frames, names = load_frames(data.path, 16, 1)
    encoding, encoded = load_labels(data, names, len(frames))
    assert encoding.names == ["energy", "type"] and encoded.shape == (4, 3)
    # The frames are those of the same labels asked for one by one.
    single = run_script("eval/generate.py", ["--ckpt", ckpt, "--num", "2", "--out", str(tmp_path / "one.npy"),
                                             "--format", "npy", "--labels-from", str(tmp_path / "settings.csv")])
    assert single.returncode == 0
    with h5py.File(tmp_path / "set.h5") as f:
        # (a batch of 2 against one of 4: the same computation up to float32 rounding, in data units of 0..255)
        np.testing.assert_allclose(np.load(tmp_path / "one.npy"), f["frames"][:2], rtol=0, atol=1e-3)
    with open(tmp_path / "one_labels.csv") as f:
        assert [r["type"] for r in csv.DictReader(f)] == ["hits", "tracks"]


def test_bad_label_requests_are_one_line(conditional_run, tmp_path):
    out, _ = conditional_run
    ckpt = str(out / "checkpoints" / "last.pt")
    for args, message in [(["--label", "type=muon"], "type: unknown class 'muon'; the classes are hits, shower, tracks"),
                          (["--label", "mass=3"], "--label 'mass=3': expected name=value with a name among energy"),
                          (["--label", "energy=high"], "energy is continuous; give a number")]:
        result = run_script("eval/generate.py", ["--ckpt", ckpt, "--num", "2", "--out", str(tmp_path / "x"), *args],
                            expect_status=2)
        assert result.stderr.strip().splitlines() == [f"error: {result.stderr.strip()[7:]}"] and message in result.stderr
    assert not (tmp_path / "x").exists()


def test_conditional_resume_is_deterministic(tmp_path):
    check_resume_is_deterministic(SCRIPT, COND, tmp_path, kimg_first=0.008, kimg_total=0.016)


def test_conditional_two_processes_match_one(tmp_path):
    check_two_processes_match_one(SCRIPT, [*COND, "augment.ada=true", "augment.p=0.5", "augment.ada_interval=2"],
                                  tmp_path)


def test_a_checkpoint_from_before_labels_resumes_and_refuses_labels(tmp_path):
    run_script(SCRIPT, [*TINY, "data.path=builtin:particles?count=32", "train.kimg=0.008", f"out_dir={tmp_path}"])
    path = tmp_path / "checkpoints" / "last.pt"
    checkpoint = torch.load(path, weights_only=True)
    for key in ("labels", "label_columns", "label_ranges", "label_classes"):  # as written before labels existed
        checkpoint["config"]["data"].pop(key)
    torch.save(checkpoint, path)
    assert nets.load_sampler(checkpoint, "cpu")(torch.arange(2)).shape == (2, 1, 16, 16)
    run_script(SCRIPT, [*TINY, "data.path=builtin:particles?count=32", f"out_dir={tmp_path}", "--resume", "auto"])
    assert load_checkpoint(tmp_path)["step"] == 4
    result = run_script(SCRIPT, [*COND, f"out_dir={tmp_path}", "--resume", "auto"], expect_status=2)
    assert "data.label_columns=[]" in result.stderr and result.stderr.strip().count("\n") == 0


# ---------------------------------------------------------------------------
# Conditional SAGAN: conditional BatchNorm in G, a projection discriminator

SAGAN_COND = ["--config", "configs/sagan_tiny.yaml", "data.path=builtin:particles-cond?count=32"]


def test_unconditional_sagan_networks_are_what_they_were():
    from nets.sagan import SAGANModel
    from nets.sagan import build_discriminator as sagan_d, build_generator as sagan_g
    torch.manual_seed(0)
    model = SAGANModel(z_dim=16, g_channels=8, d_channels=8, g_attention=[8], d_attention=[8])
    G, D = sagan_g(model, 16, 1), sagan_d(model, 16, 1)
    z = torch.randn(4, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # the values the code before labels existed gave
        x = G(z)
        assert x.double().sum().item() == pytest.approx(193.4859651940642, rel=1e-5)
        assert D(x).double().sum().item() == pytest.approx(-0.47942468523979187, rel=1e-4)


def test_sagan_conditional_batchnorm_and_projection_against_their_formulas():
    from nets.sagan import ConditionalBatchNorm2d, SAGANModel
    from nets.sagan import build_discriminator as sagan_d, build_generator as sagan_g
    torch.manual_seed(0)
    norm = ConditionalBatchNorm2d(6, 3)
    torch.nn.init.normal_(norm.gain.weight)
    torch.nn.init.normal_(norm.shift.weight)
    x, c = torch.randn(4, 6, 5, 5), torch.randn(4, 3)
    mean, var = x.mean((0, 2, 3), keepdim=True), x.var((0, 2, 3), unbiased=False, keepdim=True)
    expected = (x - mean) / torch.sqrt(var + 1e-5) * (1 + (c @ norm.gain.weight.T))[:, :, None, None] \
        + (c @ norm.shift.weight.T)[:, :, None, None]
    torch.testing.assert_close(norm(x, c), expected, rtol=1e-4, atol=1e-5)

    model = SAGANModel(z_dim=16, g_channels=8, d_channels=8, g_attention=[8], d_attention=[8])
    D = sagan_d(model, 16, 1, c_dim=3).eval()
    img, c = torch.randn(4, 1, 16, 16), torch.eye(3)[[0, 1, 2, 0]]
    with torch.no_grad():
        features = D.net[:-1](img)
        expected = D.net[-1](features).flatten() + (features.sum((2, 3)) * D.embed(c)).sum(1)
        torch.testing.assert_close(D(img, c), expected)
        # Conditional BatchNorm starts as plain BatchNorm: the label matters only once trained.
        G, z = sagan_g(model, 16, 1, c_dim=3).eval(), torch.randn(4, 16)
        torch.testing.assert_close(G(z, c), G(z, c.flip(0)))


def test_conditional_sagan_trains_resumes_exactly_and_generates_at_a_setting(tmp_path):
    args = [*SAGAN_COND, "train.loss=hinge", "model.g_spectral_norm=true", "eval.every_epochs=[]"]  # (the 2-process
    # test below runs the conditional evaluation)
    check_resume_is_deterministic("train_sagan.py", args, tmp_path, kimg_first=0.048, kimg_total=0.096)
    checkpoint = load_checkpoint(tmp_path / "straight")
    assert checkpoint["labels"].shape == (32, 5) and "net.1.gain.weight" in checkpoint["G"]
    assert "embed.parametrizations.weight.original" in checkpoint["D"]
    sampler = nets.load_sampler(checkpoint, "cpu", seed=1)
    torch.testing.assert_close(sampler(torch.arange(4))[2:], sampler(torch.tensor([2, 3])))
    encoding = LabelEncoding.from_config(checkpoint["config"]["data"])
    fixed = encoding.encode({"energy": [4.5], "field": [0.2], "type": ["shower"]})
    at_setting = nets.load_sampler(checkpoint, "cpu", seed=1, labels=fixed)(torch.arange(4))
    assert not torch.allclose(at_setting, sampler(torch.arange(4)))
    assert sampler.labels_for(torch.arange(3)).shape == (3, 5)


def test_conditional_sagan_two_processes_match_one(tmp_path):
    check_two_processes_match_one("train_sagan.py", [*SAGAN_COND, "train.kimg=0.048"], tmp_path)


# ---------------------------------------------------------------------------
# CcGAN's vicinal training (train.label_vicinity)

def vicinity_of(kind, table, kappa_factor=1.0):
    from training.labels import LabelColumn
    from training.vicinity import build_vicinity
    encoding = LabelEncoding([LabelColumn("energy", "continuous", -1.0, 1.0),
                              LabelColumn("type", "discrete", classes=("a", "b"))])
    return build_vicinity(kind, encoding, table, kappa_factor)


def test_vicinity_rule_of_thumb_and_kernels():
    from training.vicinity import SOFT_CUTOFF
    energy = torch.tensor([-1.0, -0.6, -0.5, 0.0, 0.1, 0.9])
    table = torch.stack([energy, torch.tensor([1., 0, 1, 0, 1, 0]), torch.tensor([0., 1, 0, 1, 0, 1])], dim=1)
    v = vicinity_of("soft", table, kappa_factor=2.0)
    s = float(np.std(energy.numpy(), ddof=1))
    assert v.sigma.item() == pytest.approx((4 * s ** 5 / (3 * 6)) ** 0.2, rel=1e-6)  # Silverman's rule
    assert v.kappa.item() == pytest.approx(2 * 0.8) and v.nu.item() == pytest.approx(1 / 1.6 ** 2)
    assert v.continuous.tolist() == [0] and v.discrete.tolist() == [1, 2]
    targets = table[[0, 3]].clone()
    targets[:, 0] += torch.tensor([0.3, -0.2])
    torch.testing.assert_close(v.weights(table[[0, 3]], targets), torch.exp(-v.nu * torch.tensor([0.09, 0.04])))
    assert v.radius.item() == pytest.approx(math.sqrt(-math.log(SOFT_CUTOFF)) * 1.6)
    hard = vicinity_of("hard", table)
    assert hard.kappa.item() == pytest.approx(0.8) and hard.weights(table, table).tolist() == [1.0] * 6


def test_vicinal_reals_lie_in_their_targets_vicinity_and_fakes_within_kappa():
    from training.vicinity import draw_targets, fake_labels, real_rows
    g = torch.Generator().manual_seed(0)
    energy = torch.rand(300, generator=g) * 2 - 1
    kind = torch.randint(2, (300,), generator=g)
    table = torch.cat([energy[:, None], torch.nn.functional.one_hot(kind, 2).float()], dim=1)
    v = vicinity_of("hard", table, kappa_factor=1.0)
    targets, rows = draw_targets(v, table, 256, 7, "D", 3)
    assert torch.equal(targets[:, 1:], table[rows, 1:])  # classes kept, noise on the energy alone
    assert (targets[:, 0] - table[rows, 0]).std().item() == pytest.approx(v.sigma.item(), rel=0.2)
    chosen = real_rows(v, table, targets, rows, 7, "D", 3)
    distance = (table[chosen, 0] - targets[:, 0]).abs()
    within = distance <= v.kappa
    assert torch.equal(table[chosen, 1:], targets[:, 1:])
    assert within.float().mean() > 0.3  # the others had an empty vicinity and fell back to their own frame
    assert torch.equal(chosen[~within], rows[~within])
    assert len(set(chosen[within].tolist())) > 0.5 * within.sum().item()  # spread over the vicinity, not one frame
    near = fake_labels(v, targets, 7, "D", 3)
    assert ((near[:, 0] - targets[:, 0]).abs() <= v.kappa + 1e-6).all() and torch.equal(near[:, 1:], targets[:, 1:])
    # The same keys draw the same batch (resume); other steps other ones.
    assert torch.equal(draw_targets(v, table, 256, 7, "D", 3)[0], targets)
    assert not torch.equal(draw_targets(v, table, 256, 7, "D", 4)[0], targets)


def test_vicinal_training_two_processes_match_one(tmp_path):
    check_two_processes_match_one(SCRIPT, [*COND, "train.label_vicinity=soft", "train.kimg=0.008"], tmp_path)
    result = run_script(SCRIPT, [*TINY, "data.path=builtin:particles?count=32", "train.label_vicinity=hard",
                                 f"out_dir={tmp_path}/x"], expect_status=2)
    assert "train.label_vicinity: needs labels (data.labels)" in result.stderr


def test_sweep_grids_hold_the_rendered_and_the_generated_frames(conditional_run, tmp_path):
    from PIL import Image
    from training import particles
    run_script("eval/sweep.py", ["--builtin", "particles-cond", "--resolution", "16", "--sweep", "energy=1:5:3",
                                 "--label", "type=shower,field=0.2", "--rows", "2", "--out", str(tmp_path / "r.png")])
    grid = np.array(Image.open(tmp_path / "r.png"))
    assert grid.shape == (32, 48)
    np.testing.assert_array_equal(grid[16:, 32:], particles.render_conditional_frame(0, 1, 16, energy=5.0, field=0.2,
                                                                                      kind="shower"))
    out, checkpoint = conditional_run
    run_script("eval/sweep.py", ["--ckpt", str(out / "checkpoints" / "last.pt"), "--sweep", "energy=2:4:2",
                                 "--label", "type=hits", "--rows", "2", "--out", str(tmp_path / "g.png")])
    grid = np.array(Image.open(tmp_path / "g.png"))
    assert grid.shape == (64, 32)  # generated row, rendered row, twice
    encoding = LabelEncoding.from_config(checkpoint["config"]["data"])
    field = encoding.decode(labels_for_indices(checkpoint["labels"], torch.arange(2), 0))["field"][1]
    label = encoding.encode({"energy": [4.0], "field": [field], "type": ["hits"]})
    from training.images import to_uint8
    expected = to_uint8(nets.load_sampler(checkpoint, "cpu", labels=label)(torch.tensor([1])))[0, 0]
    np.testing.assert_array_equal(grid[32:48, 16:], expected.numpy())  # sample 1 at energy 4
    np.testing.assert_array_equal(grid[48:, 16:], particles.render_conditional_frame(0, 1, 16, energy=4.0, field=None,
                                                                                      kind="hits"))
