"""SinGAN: pyramid geometry, PSNR/SSIM/SIFID math, the training script end to end, resume, two processes."""

import json
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from plumbing import ROOT, assert_state_close, load_checkpoint, run_script

from eval.inception_weights import WeightsError
from eval.psnr_ssim import gaussian_window, psnr, ssim
from eval.sifid import SIFID, AuthorsFeatures, ImageTooSmall, InceptionFeatures
from nets.singan import (PatchDiscriminator, PerSampleBatchNorm2d, ScaleGenerator, build_scale,
                         generators_from_checkpoint, init_weights, output_sizes, pyramid_sizes, sampler_from_checkpoint,
                         synthesize)
from train_singan import SinGANConfig, gradient_penalty, load_training_image
from training.config import build_config, to_dict
from training.images import to_uint8

SCRIPT = "train_singan.py"
TINY = ["--config", "configs/singan_tiny.yaml"]  # 48 px frame, 3 scales (28, 37, 48 px), 20 steps each


# ---------------------------------------------------------------------------
# Pyramid geometry

def reference_scale_count(height, width, max_size, min_size, r):
    """The reference implementation's count (adjust_scales2image): stop_scale + 1 scales, where
    stop_scale = ceil(log_r(min_size / short side)) + 1 - ceil(log_r(min(max_size, long side) / long side))."""
    short, long = min(height, width), max(height, width)
    num_scales = math.ceil(math.log(min_size / short) / math.log(r)) + 1
    scale2stop = math.ceil(math.log(min(max_size, long) / long) / math.log(r))
    return num_scales - scale2stop + 1


def test_pyramid_sizes():
    # The reference's rule: ceil(log(min/short) / log(r)) + 1 steps, r adjusted to land on min_size exactly.
    sizes = pyramid_sizes(250, 250, 250, 25, 0.75)  # log(0.1) / log(0.75) = 8.004: 10 steps, 11 scales
    assert len(sizes) == 11 and sizes[0] == (25, 25) and sizes[-1] == (250, 250)
    assert sizes == [(round(250 * 0.1 ** ((10 - k) / 10)),) * 2 for k in range(11)]  # factor 0.1^(1/10) = 0.794
    # The documented setting, 16 -> 200 px in 11 scales, from max_size and min_size alone.
    sizes = pyramid_sizes(200, 200, 200, 16, 0.75)
    assert len(sizes) == 11 and sizes[0] == (16, 16) and sizes[-1] == (200, 200)
    for height, width, max_size, min_size in [(250, 250, 250, 25), (200, 200, 200, 16), (48, 48, 48, 28),
                                              (32, 32, 250, 25), (64, 64, 64, 20), (375, 500, 250, 25),
                                              (1000, 750, 250, 25), (600, 257, 250, 25), (90, 300, 128, 20)]:
        assert len(pyramid_sizes(height, width, max_size, min_size, 0.75)) == \
            reference_scale_count(height, width, max_size, min_size, 0.75), (height, width)
    assert pyramid_sizes(48, 48, 48, 28, 0.55) == [(28, 28), (37, 37), (48, 48)]  # the tiny config
    # Non-square: the long side is fitted to max_size, the short side ends at min_size, aspect kept.
    sizes = pyramid_sizes(375, 500, 250, 25, 0.75)
    assert sizes[-1] == (188, 250) and min(sizes[0]) == 25 and len(sizes) == 9
    assert all(abs(w / h - 500 / 375) < 0.05 for h, w in sizes)
    assert pyramid_sizes(32, 32, 250, 25, 0.75)[-1] == (32, 32)  # never enlarged
    assert pyramid_sizes(20, 30, 250, 25, 0.75) == [(20, 30)]  # already below min_size: one scale
    # Other output sizes stretch every scale by the same factors and end exactly at the request.
    assert output_sizes([(28, 28), (37, 37), (48, 48)], (48, 96)) == [(28, 56), (37, 74), (48, 96)]


# ---------------------------------------------------------------------------
# Channels: the image's own by default; the reference's parameter counts

def test_channels_auto_and_reference_parameter_counts(tmp_path):
    rgb, gray, gray16 = tmp_path / "rgb.png", tmp_path / "gray.png", tmp_path / "gray16.png"
    _write_colour_image(rgb)
    Image.fromarray(np.arange(40 * 56, dtype=np.uint8).reshape(40, 56)).save(gray)
    Image.fromarray((np.arange(40 * 56, dtype=np.uint16) * 20).reshape(40, 56)).save(gray16)

    def resolved(*overrides):
        config = build_config(SinGANConfig, os.path.join(ROOT, "configs", "singan.yaml"), list(overrides))
        assert config.data.channels == "auto" or "data.channels=3" in overrides
        image, line = load_training_image(config)
        assert len(image) == config.data.channels
        return config, line

    config, line = resolved(f"data.path={rgb}")
    assert config.data.channels == 3 and "3 channel(s) (data.channels=auto: a colour image)" in line
    # The reference's scale-0 networks on an RGB image (its MultiVanilla log): G 29,763 and D 29,185 parameters,
    # with the documented config's noise padding too (it changes the padding, not the convolutions).
    assert config.model.padding == "noise"
    counts = [sum(p.numel() for p in build_scale(kind, to_dict(config), 0, config.data.channels).parameters())
              for kind in ("G", "D")]
    assert counts == [29763, 29185]
    for path in (gray, gray16, "builtin:particles"):
        config, line = resolved(f"data.path={path}", "data.max_size=56")
        assert config.data.channels == 1 and "a grayscale image" in line, path
    config, line = resolved(f"data.path={gray}", "data.channels=3")  # forced: grey copied to three channels
    assert config.data.channels == 3 and "set by data.channels" in line


# ---------------------------------------------------------------------------
# The gradient penalty with several images per process

def test_gradient_penalty_of_one_sample_ignores_the_others(monkeypatch):
    g = torch.Generator().manual_seed(3)
    D = PatchDiscriminator(3, 8)
    init_weights(D, g)
    real = torch.rand(1, 3, 20, 24, generator=g) * 2 - 1
    fakes = torch.randn(3, 3, 20, 24, generator=g).clamp(-1, 1)
    alpha = torch.rand(3, 1, 1, 1, generator=g)

    def penalties(indices):
        index = torch.tensor(indices)
        return gradient_penalty(D.train(), real.expand(len(index), -1, -1, -1), fakes[index], alpha[index])

    alone = penalties([0])  # one image per process: BatchNorm's own path, the reference's setting
    with_b, with_c = penalties([0, 1]), penalties([0, 2])
    torch.testing.assert_close(with_b[0], alone[0], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(with_c[0], alone[0], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(with_b[1], penalties([1])[0], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(D(real.expand(2, -1, -1, -1))[1], D(real)[0], rtol=1e-5, atol=1e-6)
    # Plain BatchNorm pools the batch's statistics: the same sample's penalty then depends on its neighbour.
    monkeypatch.setattr(PerSampleBatchNorm2d, "forward", torch.nn.BatchNorm2d.forward)
    coupled_b, coupled_c = penalties([0, 1]), penalties([0, 2])
    assert (coupled_b[0] - coupled_c[0]).abs() > 1e-3 * coupled_b[0].abs()


# ---------------------------------------------------------------------------
# PSNR and SSIM against closed forms and a direct (loop) implementation

def test_psnr_values():
    x = torch.zeros(1, 8, 8, dtype=torch.uint8)
    assert psnr(x, x + 10).item() == pytest.approx(10 * math.log10(255 ** 2 / 100))  # 28.131 dB
    assert psnr(x, x).item() == math.inf
    assert psnr(x.float() / 255, (x.float() + 10) / 255, data_range=1.0).item() == pytest.approx(28.1308, abs=1e-4)


def _ssim_by_loops(x: np.ndarray, y: np.ndarray, size=11, sigma=1.5, L=255.0) -> float:
    """SSIM written out per window position, straight from Wang et al. (2004), eq. (13)-(16)."""
    coords = np.arange(size) - (size - 1) / 2
    g = np.exp(-coords ** 2 / (2 * sigma ** 2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    values = []
    for i in range(x.shape[0] - size + 1):
        for j in range(x.shape[1] - size + 1):
            a, b = x[i:i + size, j:j + size], y[i:i + size, j:j + size]
            mu_a, mu_b = (w * a).sum(), (w * b).sum()
            var_a, var_b = (w * (a - mu_a) ** 2).sum(), (w * (b - mu_b) ** 2).sum()
            cov = (w * (a - mu_a) * (b - mu_b)).sum()
            values.append((2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2)))
    return float(np.mean(values))


def test_ssim_values():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (1, 3, 16, 20), generator=g, dtype=torch.uint8)
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-12)
    # Constant images a and b: variances and covariance vanish, SSIM = (2ab + C1) / (a^2 + b^2 + C1).
    a, b, c1 = 100.0, 120.0, (0.01 * 255) ** 2
    const_a, const_b = torch.full((1, 1, 16, 16), a), torch.full((1, 1, 16, 16), b)
    assert ssim(const_a, const_b).item() == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-12)
    assert ssim(const_a, const_b).item() == pytest.approx(24006.5025 / 24406.5025, rel=1e-12)  # = 0.9836109
    # A noisy copy, against the per-window definition.
    y = (x.float() + 40 * torch.randn(x.shape, generator=g)).clamp(0, 255)
    expected = np.mean([_ssim_by_loops(x[0, c].double().numpy(), y[0, c].double().numpy()) for c in range(3)])
    assert ssim(x, y).item() == pytest.approx(expected, rel=1e-10)
    assert 0.1 < expected < 0.9
    # Images smaller than the window use the largest odd window that fits.
    small_x, small_y = x[:, :1, :8, :8], y[:, :1, :8, :8]
    assert ssim(small_x, small_y).item() == pytest.approx(
        _ssim_by_loops(small_x[0, 0].double().numpy(), small_y[0, 0].double().numpy(), size=7), rel=1e-10)
    assert gaussian_window().sum().item() == pytest.approx(1.0)


# ---------------------------------------------------------------------------
# SIFID with a stand-in feature extractor: closed-form Fréchet distances

def pixel_pairs(images: torch.Tensor) -> torch.Tensor:
    """2-d features per position: the pixel and its right-hand neighbour."""
    x = images.double()[:, :1]
    return torch.cat([x, x.roll(-1, dims=3)], dim=1)


def test_sifid_math():
    g = torch.Generator().manual_seed(1)
    real = torch.randint(50, 128, (1, 12, 12), generator=g, dtype=torch.uint8)
    metric = SIFID(real, features=pixel_pairs)
    values = metric.scores(torch.stack([real, real + 5, real * 2]))
    # Same covariance, means apart by (5, 5): d^2 = 50. Features doubled: covariance x4, so
    # d^2 = |mu|^2 + Tr(S + 4S - 2 * 2S) = |mu|^2 + Tr(S).
    features = pixel_pairs(real[None])[0].flatten(1).T.numpy()
    doubled = (features.mean(axis=0) ** 2).sum() + np.trace(np.cov(features, rowvar=False))
    np.testing.assert_allclose(values, [0.0, 50.0, doubled], atol=1e-6)
    result = metric.evaluate(torch.stack([real, real + 5]))
    assert result == {"sifid": pytest.approx(25.0, abs=1e-6), "sifid_std": pytest.approx(25.0, abs=1e-6),
                      "num_fake": 2}
    with pytest.raises(ImageTooSmall):
        SIFID(real[:, :1, :1], features=pixel_pairs)
    # Inception's map sizes (checked against the network): block 1 needs 27 px and gives 28x28 at 250 px.
    sizes = {s: InceptionFeatures.feature_size(s, s) for s in (26, 27, 37, 48, 64, 250)}
    assert sizes == {26: (0, 0), 27: (1, 1), 37: (2, 2), 48: (3, 3), 64: (5, 5), 250: (28, 28)}
    sizes = {s: AuthorsFeatures.feature_size(s, s) for s in (6, 7, 9, 64, 250)}
    assert sizes == {6: (0, 0), 7: (1, 1), 9: (2, 2), 64: (29, 29), 250: (122, 122)}


def _authors_sifid(real: np.ndarray, fake: np.ndarray, layers) -> float:
    """The SinGAN authors' SIFID written out as their released code does it: float images / 255 -> 2x - 1
    -> the layers -> every position a 64-d sample -> mean, np.cov -> Fréchet distance with scipy's sqrtm."""
    from scipy import linalg

    def statistics(image):
        batch = torch.from_numpy(image[None].astype(np.float32).transpose(0, 3, 1, 2) / 255)
        with torch.no_grad():
            prediction = layers(2 * batch - 1)
        act = prediction.numpy().transpose(0, 2, 3, 1).reshape(prediction.shape[2] * prediction.shape[3], -1)
        return np.mean(act, axis=0), np.cov(act, rowvar=False)

    (mu1, sigma1), (mu2, sigma2) = statistics(real), statistics(fake)
    covmean = linalg.sqrtm(sigma1.dot(sigma2)).real
    diff = mu1 - mu2
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def test_authors_sifid_against_their_formula(tmp_path, monkeypatch):
    """A worked example with torchvision's InceptionV3 architecture at fixed random weights (torchvision's
    ImageNet weights cannot be fetched here): the `authors` layer and formula against the reference recipe."""
    import torchvision
    torch.manual_seed(0)
    network = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False).eval()
    features = AuthorsFeatures("cpu", state_dict=network.state_dict())
    layers = torch.nn.Sequential(network.Conv2d_1a_3x3, network.Conv2d_2a_3x3, network.Conv2d_2b_3x3)
    g = torch.Generator().manual_seed(4)
    real = torch.randint(0, 256, (3, 40, 46), generator=g, dtype=torch.uint8)
    fakes = [real, real.roll(7, dims=2), (real.float() * 0.7 + 30).to(torch.uint8),
             torch.randint(0, 256, (3, 40, 46), generator=g, dtype=torch.uint8)]
    ours = SIFID(real, features=features).scores(torch.stack(fakes))
    expected = [_authors_sifid(real.permute(1, 2, 0).numpy(), fake.permute(1, 2, 0).numpy(), layers)
                for fake in fakes]
    assert features(real[None]).shape == (1, 64, 17, 20)  # 17x20 = 340 positions of 64-d features
    assert abs(ours[0]) < 1e-6 and min(ours[1:]) > 1e-3  # the real image itself; a shift, a contrast change, noise
    np.testing.assert_allclose(ours[1:], expected[1:], rtol=1e-4)
    # Without the ImageNet weights and no way to download them: one line saying where they go.
    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsError, match=r"torchvision's ImageNet InceptionV3 weights at .*inception_v3_google"):
        AuthorsFeatures("cpu")


def _shift_of_output(network, inputs, shift):
    """Largest difference between network(window) shifted by `shift` and network(the window moved by `shift`),
    relative to the output's largest value. `inputs` are larger than one window by `shift`; 0 means the
    network is exactly translation-equivariant."""
    size = inputs[0].shape[-1] - shift
    with torch.no_grad():
        first = network(*[x[..., :size, :size] for x in inputs])
        moved = network(*[x[..., shift:, shift:] for x in inputs])
    return ((first[..., shift:, shift:] - moved[..., :-shift, :-shift]).abs().max() / first.abs().max()).item()


def test_noise_padding_leaves_no_border_to_copy_by():
    """With model.padding=noise no convolution sees a zero border: moving G's noise (and the previous scale's
    image) moves its output, and moving D's input moves its score map, everywhere. With 'same' zero padding
    the border pixels give the position away (what lets a coarse scale copy the image's layout in place);
    with 'zero' (the reference's) D is unpadded, but G's zero-padded input still does."""
    g = torch.Generator().manual_seed(0)
    for padding, g_equivariant, d_equivariant in (("noise", True, True), ("zero", False, True),
                                                  ("same", False, False)):
        torch.manual_seed(0)  # PyTorch's default init: outputs of order 1
        G, D = ScaleGenerator(1, 8, padding=padding).eval(), PatchDiscriminator(1, 8, padding=padding).eval()
        # (eval: BatchNorm's running statistics; the batch statistics would differ between windows)
        border = G.border
        assert G.input_size((20, 30)) == (20 + 2 * border, 30 + 2 * border) and border == (5 if g_equivariant else 0)
        noise = torch.randn(1, 1, 24 + 2 * border, 24 + 2 * border, generator=g)
        # G at scale 0 (previous = zeros): its output depends on the noise alone.
        zeros = torch.zeros(1, 1, 24, 24)
        generated = G(noise[..., :20 + 2 * border, :20 + 2 * border], zeros[..., :20, :20])
        assert generated.shape == (1, 1, 20, 20)
        g_error = _shift_of_output(lambda z: G(z, zeros[..., :z.shape[-2] - 2 * border, :z.shape[-1] - 2 * border]),
                                   [noise], 4)
        image = torch.randn(1, 1, 24, 24, generator=g)
        assert D(image[..., :20, :20]).shape == ((1, 1, 10, 10) if d_equivariant else (1, 1, 20, 20))
        d_error = _shift_of_output(D, [image], 4)
        assert (g_error < 1e-5) == g_equivariant and (g_error > 0.01) != g_equivariant, (padding, g_error)
        assert (d_error < 1e-5) == d_equivariant and (d_error > 0.01) != d_equivariant, (padding, d_error)


def _reference_stack(state: dict, x: torch.Tensor, last: str, training: bool) -> torch.Tensor:
    """The reference implementation's G or D body written out from a state dict: 4 x (unpadded 3x3 conv,
    BatchNorm, LeakyReLU(0.2)), then the unpadded output conv `last`."""
    for i in range(4):
        x = F.conv2d(x, state[f"features.{i}.0.weight"], state[f"features.{i}.0.bias"])
        x = F.batch_norm(x, state[f"features.{i}.1.running_mean"].clone(), state[f"features.{i}.1.running_var"].clone(),
                         state[f"features.{i}.1.weight"], state[f"features.{i}.1.bias"], training=training)
        x = F.leaky_relu(x, 0.2)
    return F.conv2d(x, state[f"{last}.weight"], state[f"{last}.bias"])


def test_zero_padding_is_the_reference_forward():
    """model.padding=zero against the reference's forward (tamarott/SinGAN training.py and models.py) written
    out with F.pad and F.conv2d from the same weights: noise drawn at the image's size, σz and the previous
    image each zero-padded once by layers * (3 // 2) = 5 px, unpadded convolutions in G and D, and G's output
    added to the centre of its padded image input, i.e. the image itself."""
    torch.manual_seed(0)  # PyTorch's default init: non-zero biases
    G, D = ScaleGenerator(3, 8, padding="zero"), PatchDiscriminator(3, 8, padding="zero")
    g = torch.Generator().manual_seed(5)
    for module in (*G.modules(), *D.modules()):  # running statistics that differ from the batch's
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5, generator=g)
            module.running_var.uniform_(0.5, 2.0, generator=g)
    size, amp, pad = (17, 23), 0.3, 5
    assert G.input_size(size) == size  # the noise has the image's size
    z, previous = torch.randn(1, 3, *size, generator=g), torch.rand(1, 3, *size, generator=g) * 2 - 1
    image = torch.rand(1, 3, *size, generator=g) * 2 - 1
    for training in (False, True):  # running statistics (sampling), the image's own (training, batch of 1)
        G.train(training), D.train(training)
        padded_previous = F.pad(previous, [pad] * 4)
        body = _reference_stack(G.state_dict(), F.pad(amp * z, [pad] * 4) + padded_previous, "to_image", training)
        expected = torch.tanh(body) + padded_previous[..., pad:-pad, pad:-pad]
        with torch.no_grad():
            torch.testing.assert_close(G(amp * z, previous), expected, rtol=1e-5, atol=1e-6)
            scores = D(image)
        assert scores.shape == (1, 1, size[0] - 2 * pad, size[1] - 2 * pad)  # whole 11x11 patches only
        torch.testing.assert_close(scores, _reference_stack(D.state_dict(), image, "to_score", training),
                                   rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------
# The training script

def test_run_folder_samples_of_other_sizes_and_metrics(tmp_path, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setenv("SMALLGAN_PROGRESS_INTERVAL", "3600")
    result = run_script(SCRIPT, [*TINY, f"out_dir={out}"])
    assert "48x48, 1 channel(s) (data.channels=auto: a grayscale image)" in result.stdout
    assert "3 scales: 28x28 -> 37x37 -> 48x48" in result.stdout
    # Progress on stderr (not a terminal): a plain line at each scale's first step and one when it is done.
    progress = [line.split(" |")[0] for line in result.stderr.splitlines() if line.startswith("scale ")]
    assert progress == [f"scale {n}/2 ({size}x{size}): {step}/20 step {step * 5}.0%"
                        for n, size in enumerate((28, 37, 48)) for step in (1, 20)]
    assert os.path.isfile(out / "config.yaml")
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(out / "tb"))
    samples = set(os.listdir(out / "samples"))
    for name in ("real.png", "reconstruction.png", "overview.png", "final_48x48.png", "final_48x72.png"):
        assert name in samples, name
    assert sum(f.startswith("random") for f in samples) == 3  # one grid per scale
    with Image.open(out / "samples" / "final_48x72.png") as grid:  # 8 samples, 4 columns, 48x72 each
        assert grid.size == (4 * 72, 2 * 48)

    with open(out / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    assert [r["scale"] for r in records] == [0, 1, 2] and [r["size"] for r in records] == [[28, 28], [37, 37], [48, 48]]
    for r in records:
        assert 5 < r["psnr"] < 100 and 0 < r["ssim"] <= 1
    assert "sifid" not in records[0]  # 28 px: Inception block 1 has a single position
    assert all(r["sifid"] > 0 and r["num_fake"] == 4 for r in records[1:])
    assert records[2]["psnr"] > records[0]["psnr"]  # the reconstruction sharpens up the pyramid

    checkpoint = load_checkpoint(out)  # weights_only
    assert checkpoint["model"] == "singan" and checkpoint["pyramid"] == [[28, 28], [37, 37], [48, 48]]
    assert len(checkpoint["noise_amps"]) == 3 and checkpoint["noise_amps"][0] == 1.0
    assert checkpoint["config"]["model"]["padding"] == "noise"  # the default: the noise map 2 x 5 px larger
    assert checkpoint["fixed_noise"].shape == (1, 1, 38, 38) and set(checkpoint["G"]) == {"0", "1", "2"}
    assert checkpoint["real"].shape == (1, 48, 48) and checkpoint["real"].dtype == torch.uint8
    assert (checkpoint["scale"], checkpoint["scale_step"], checkpoint["step"]) == (2, 20, 60)

    # The reconstruction PSNR in metrics.jsonl, recomputed from the checkpoint alone.
    generators = generators_from_checkpoint(checkpoint, "cpu")
    with torch.no_grad():
        recon = synthesize(generators, checkpoint["noise_amps"], [tuple(s) for s in checkpoint["pyramid"]], None,
                           fixed_noise=checkpoint["fixed_noise"], start_scale=3)
    assert psnr(to_uint8(recon)[0], checkpoint["real"]).item() == pytest.approx(records[2]["psnr"], rel=1e-6)

    # Samples at another size and aspect ratio; sample i independent of the batch; coarse structure kept.
    sampler = sampler_from_checkpoint(checkpoint, "cpu", size="40x100")
    batch = sampler(torch.arange(4))
    assert batch.shape == (4, 1, 40, 100) and sampler.channels == 1 and sampler.resolution == (40, 100)
    torch.testing.assert_close(sampler(torch.tensor([2])), batch[2:3], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(batch[0], batch[1])
    fixed_start = sampler_from_checkpoint(checkpoint, "cpu", start_scale=2)(torch.arange(4))
    random_start = sampler_from_checkpoint(checkpoint, "cpu")(torch.arange(4))
    real = checkpoint["real"].float() / 127.5 - 1
    assert (fixed_start - real).pow(2).mean() < (random_start - real).pow(2).mean()
    with pytest.raises(ValueError):
        sampler_from_checkpoint(checkpoint, "cpu", start_scale=3)

    # eval/generate.py writes the same samples at the requested size, from a requested scale.
    run_script("eval/generate.py", ["--ckpt", str(out / "checkpoints" / "last.pt"), "--num", "2", "--out",
                                    str(tmp_path / "wide"), "--size", "40x100", "--start-scale", "1"])
    expected = to_uint8(sampler_from_checkpoint(checkpoint, "cpu", size="40x100", start_scale=1)(torch.arange(2)))
    for i in range(2):
        with Image.open(tmp_path / "wide" / f"{i:06d}.png") as written:
            assert torch.equal(torch.from_numpy(np.array(written))[None], expected[i])

    # eval/sifid.py --ckpt reproduces the training-time SIFID (same seed, same samples).
    cli = run_script("eval/sifid.py", ["--ckpt", str(out / "checkpoints" / "last.pt"), "--num-samples", "4",
                                       "--json"])
    assert json.loads(cli.stdout.strip().splitlines()[-1])["sifid"] == pytest.approx(records[2]["sifid"], rel=1e-4)

    # eval/memorization.py looks for copies patch by patch (12 px patches, a quarter of the side), with the
    # network's own reconstruction as the copy the samples are compared with.
    cli = run_script("eval/memorization.py", ["--ckpt", str(out / "checkpoints" / "last.pt"), "--num", "4",
                                              "--out", str(tmp_path / "copies"), "--json"])
    copies = json.loads(cli.stdout.strip().splitlines()[-1])
    assert (copies["model"], copies["num_fake"], copies["patch"], copies["stride"]) == ("singan", 4, 12, 3)
    assert copies["reconstruction"]["in_place"] > 0.5 > copies["samples"]["in_place"]["q100"]
    assert copies["copy_rate"] == 0.0
    with Image.open(tmp_path / "copies" / "nearest_patches.png") as grid:  # the reconstruction and 4 samples
        assert grid.size == (5 * (2 * 48 + 1 + 4) - 4, 48)

    # FID needs a distribution: eval/fid.py points SinGAN checkpoints to eval/sifid.py in one line.
    refused = run_script("eval/fid.py", ["--ckpt", str(out / "checkpoints" / "last.pt")], expect_status=2)
    assert len(refused.stderr.strip().splitlines()) == 1 and "eval/sifid.py" in refused.stderr


def test_resume_continues_at_the_right_scale_and_step(tmp_path):
    args = [*TINY, "eval.sifid=false", "train.steps_per_scale=12"]  # checkpoints every 8 steps
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run_script(SCRIPT, [*args, f"out_dir={straight}"])
    run_script(SCRIPT, [*args, f"out_dir={resumed}", "train.max_steps=12"])  # stops at the end of scale 0
    first = load_checkpoint(resumed)
    assert (first["scale"], first["scale_step"]) == (0, 12)
    result = run_script(SCRIPT, [*args, f"out_dir={resumed}", "train.max_steps=19", "--resume", "auto"])
    assert "resumed from" in result.stdout and "at scale 0 step 12" in result.stdout
    middle = load_checkpoint(resumed)
    assert (middle["scale"], middle["scale_step"], middle["step"]) == (1, 7, 19)  # mid-scale stop
    # The copy check of a checkpoint taken mid-training compares its samples with that scale's image.
    cli = run_script("eval/memorization.py", ["--ckpt", str(resumed / "checkpoints" / "last.pt"), "--num", "4",
                                              "--out", str(tmp_path / "copies"), "--json"])
    assert json.loads(cli.stdout.strip().splitlines()[-1])["size"] == [37, 37]
    result = run_script(SCRIPT, [*args, f"out_dir={resumed}", "--resume", "auto"])
    assert "at scale 1 step 7" in result.stdout
    a, b = load_checkpoint(straight), load_checkpoint(resumed)
    assert a["step"] == b["step"] == 36 and a["noise_amps"] == b["noise_amps"]
    for name in ("G", "D", "optimizers"):
        assert_state_close(a[name], b[name], path=name)  # bit for bit
    assert torch.equal(a["fixed_noise"], b["fixed_noise"])


def test_zero_padding_run_and_resume_of_older_checkpoints(tmp_path):
    """model.padding=zero end to end (noise maps at the image's size), and a checkpoint written before the key
    existed: it was trained with 'same' and resumes so, though the default is now noise padding."""
    args = [*TINY, "eval.sifid=false", "train.steps_per_scale=6", "train.checkpoint_every=3"]
    zero = tmp_path / "zero"
    run_script(SCRIPT, [*args, "model.padding=zero", f"out_dir={zero}"])
    checkpoint = load_checkpoint(zero)
    assert checkpoint["config"]["model"]["padding"] == "zero" and checkpoint["fixed_noise"].shape == (1, 1, 28, 28)
    sampler = sampler_from_checkpoint(checkpoint, "cpu", size="40x100", start_scale=1)
    assert sampler(torch.arange(2)).shape == (2, 1, 40, 100)
    generators = generators_from_checkpoint(checkpoint, "cpu")
    with torch.no_grad():
        recon = synthesize(generators, checkpoint["noise_amps"], [tuple(s) for s in checkpoint["pyramid"]], None,
                           fixed_noise=checkpoint["fixed_noise"], start_scale=3)
    metrics = [json.loads(line) for line in open(zero / "metrics.jsonl")]
    assert psnr(to_uint8(recon)[0], checkpoint["real"]).item() == pytest.approx(metrics[-1]["psnr"], rel=1e-6)

    old = tmp_path / "old"
    run_script(SCRIPT, [*args, f"out_dir={old}", "model.padding=same", "train.max_steps=9"])
    path = old / "checkpoints" / "last.pt"
    written = torch.load(path, weights_only=True)
    del written["config"]["model"]["padding"]  # as a checkpoint from before model.padding
    torch.save(written, path)
    assert build_config(SinGANConfig, None, []).model.padding == "noise"  # the default, as in the tiny config
    refused = run_script(SCRIPT, [*args, f"out_dir={old}", "--resume", "auto"], expect_status=2)
    assert "before model.padding existed" in refused.stderr and "add model.padding=same" in refused.stderr
    refused = run_script(SCRIPT, [*args, f"out_dir={old}", "model.padding=zero", "--resume", "auto"],
                         expect_status=2)
    assert "add model.padding=same" in refused.stderr
    resumed = run_script(SCRIPT, [*args, f"out_dir={old}", "model.padding=same", "--resume", "auto"])
    assert "at scale 1 step 3" in resumed.stdout
    assert load_checkpoint(old)["config"]["model"]["padding"] == "same"
    assert {G.padding for G in generators_from_checkpoint(written, "cpu")} == {"same"}  # samplers read it so too


def _write_colour_image(path):
    yy, xx = np.mgrid[0:40, 0:56]
    image = np.stack([128 + 100 * np.sin(xx / 3), 128 + 100 * np.cos(yy / 4), (xx * yy) % 256], axis=-1)
    Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(path)


def test_two_processes_colour_image(tmp_path):
    """Each process draws its own noise (so the result differs from one process by design); the averaged
    gradients must keep both processes' networks identical, which the script checks at every scale's end."""
    image = tmp_path / "colour.png"
    _write_colour_image(image)
    out = tmp_path / "two"
    result = run_script(SCRIPT, [*TINY, f"data.path={image}", "data.max_size=56", "train.batch_size=2",
                                 "train.steps_per_scale=8", "eval.sifid=false", f"out_dir={out}"], nproc=2)
    assert "3 channel(s) (data.channels=auto: a colour image)" in result.stdout
    assert result.stdout.count("networks identical on 2 processes") == 3
    checkpoint = load_checkpoint(out)
    assert checkpoint["pyramid"] == [[28, 39], [33, 47], [40, 56]]  # non-square, aspect kept
    assert checkpoint["real"].shape == (3, 40, 56) and checkpoint["fixed_noise"].shape == (1, 3, 38, 49)
    sample = sampler_from_checkpoint(checkpoint, "cpu")(torch.arange(2))
    assert sample.shape == (2, 3, 40, 56) and torch.isfinite(sample).all()


def test_bad_input_is_one_line(tmp_path):
    for override, key in (("train.kimg=5", "train.kimg"), ("data.path=/nonexistent.png", "data.path"),
                          ("data.min_size=8 model.padding=noise", "data.min_size"),
                          ("data.min_size=8 model.padding=zero", "data.min_size"),
                          ("model.padding=zeros", "model.padding")):
        result = run_script(SCRIPT, [*TINY, *override.split(), f"out_dir={tmp_path / 'bad'}"], expect_status=2)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and key in lines[0], result.stderr
