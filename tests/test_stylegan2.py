"""StyleGAN2: network pieces against independent formulations, DiffAugment and ADA, the
regularizers against closed forms, and the training script end to end on CPU (run folder,
resume determinism, two processes == one, bf16, bad config).

    python -m pytest tests/test_stylegan2.py -q
"""

import contextlib
import glob
import json
import math
import os
import sys
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from plumbing import (ROOT, TINY_DATA, assert_state_close, check_resume_is_deterministic, check_run_folder,
                      check_two_processes_match_one, load_checkpoint, run_script)

sys.path.insert(0, ROOT)

import nets  # noqa: E402
import ops  # noqa: E402
from nets.stylegan2 import (Conv2dLayer, FullyConnected, Generator, Sampler, minibatch_std,  # noqa: E402
                            modulated_conv2d)
from train_stylegan2 import StyleGAN2Config, StyleGAN2Task, path_lengths, r1_penalty  # noqa: E402
from training.config import ConfigError, build_config  # noqa: E402
from training.augment import AdaptiveAugment, diff_augment  # noqa: E402

SCRIPT = "train_stylegan2.py"
TINY = ["--config", "configs/stylegan2_tiny.yaml", *TINY_DATA]


def tiny_generator(**kwargs) -> Generator:
    torch.manual_seed(0)
    options = dict(z_dim=8, w_dim=16, resolution=16, img_channels=1, mapping_layers=2,
                   channel_base=128, channel_max=16)
    return Generator(**{**options, **kwargs})


# ---------------------------------------------------------------------------
# Network pieces


def zero_insert_upsample(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """2x upsampling written out: zeros between pixels, pad (3, 2), true convolution with
    4 * outer(f, f) / sum^2 (the StyleGAN2 FIR upsampler before a 3x3 'same' convolution)."""
    n, c, h, w = x.shape
    up = torch.zeros(n, c, 2 * h, 2 * w, dtype=x.dtype)
    up[:, :, ::2, ::2] = x
    kernel = torch.outer(f, f) / f.sum() ** 2 * 4
    up = F.pad(up, [3, 2, 3, 2])
    return F.conv2d(up, kernel.flip([0, 1])[None, None].expand(c, 1, 4, 4), groups=c)


@pytest.mark.parametrize("up", [1, 2])
@pytest.mark.parametrize("demodulate", [True, False])
@pytest.mark.parametrize("fused", [False, True])
def test_modulated_conv_matches_per_sample_convolution(up, demodulate, fused):
    torch.manual_seed(1)
    x = torch.randn(3, 5, 6, 6, dtype=torch.float64)
    weight = torch.randn(4, 5, 3, 3, dtype=torch.float64)
    styles = torch.randn(3, 5, dtype=torch.float64)
    f = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=torch.float64)
    out = modulated_conv2d(x, weight, styles, demodulate=demodulate, up=up, padding=1,
                           resample_filter=ops.setup_filter(f) if up > 1 else None, fused=fused)
    for b in range(3):
        wb = weight * styles[b][None, :, None, None]
        if demodulate:
            wb = wb / wb.square().sum(dim=[1, 2, 3], keepdim=True).sqrt()
        if up == 1:
            expected = F.conv2d(x[b:b + 1], wb, padding=1)
        else:
            expected = F.conv2d(zero_insert_upsample(x[b:b + 1], f), wb)
        torch.testing.assert_close(out[b:b + 1].double(), expected, rtol=1e-5, atol=1e-5)
    if demodulate:  # demodulation makes each output map's weight unit-norm: invariant to style scale
        rescaled = modulated_conv2d(x, weight, styles * 7.0, demodulate=True, up=up, padding=1,
                                    resample_filter=ops.setup_filter(f) if up > 1 else None, fused=fused)
        torch.testing.assert_close(rescaled, out, rtol=1e-5, atol=1e-6)


def test_equalized_learning_rate_scaling():
    torch.manual_seed(2)
    fc = FullyConnected(64, 32, lr_multiplier=0.01, bias_init=0.5).double()
    assert 90 < fc.weight.std().item() < 110  # stored at unit scale / lr_multiplier
    x = torch.randn(10, 64, dtype=torch.float64)
    effective_w, effective_b = fc.weight * 0.01 / 8, fc.bias * 0.01
    torch.testing.assert_close(effective_b, torch.full([32], 0.5, dtype=torch.float64))
    torch.testing.assert_close(fc(x), x @ effective_w.t() + effective_b)
    # An SGD step of size lr on the stored weight moves the effective weight by lr * gain^2 * dL/dw_eff.
    loss_grad = torch.randn(10, 32, dtype=torch.float64)
    (fc(x) * loss_grad).sum().backward()
    grad_effective = loss_grad.t() @ x
    before = effective_w.detach().clone()
    with torch.no_grad():
        fc.weight -= 0.1 * fc.weight.grad
    torch.testing.assert_close(fc.weight * 0.01 / 8 - before, -0.1 * (0.01 / 8) ** 2 * grad_effective,
                               rtol=1e-6, atol=1e-12)

    conv = Conv2dLayer(6, 4, 3, activation="lrelu")
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.randn(2, 6, 8, 8)
    expected = F.leaky_relu(F.conv2d(x, conv.weight / math.sqrt(6 * 9), conv.bias, padding=1), 0.2) * math.sqrt(2)
    torch.testing.assert_close(conv(x), expected, rtol=1e-5, atol=1e-5)
    # Unit-variance inputs give roughly unit-variance pre-activations at initialization.
    big = Conv2dLayer(256, 256, 3)
    assert 0.8 < big(torch.randn(4, 256, 8, 8))[:, :, 1:-1, 1:-1].std().item() < 1.2


def test_minibatch_std_against_explicit_groups():
    torch.manual_seed(3)
    x = torch.randn(8, 3, 4, 4, dtype=torch.float64)
    out = minibatch_std(x, group_size=4)
    assert out.shape == (8, 4, 4, 4)
    torch.testing.assert_close(out[:, :3], x)
    for start in (0, 4):
        group = x[start:start + 4]
        expected = ((group - group.mean(0)).square().mean(0) + 1e-8).sqrt().mean()
        torch.testing.assert_close(out[start:start + 4, 3], expected.expand(4, 4, 4))
    # Consecutive groups: a contiguous per-process slice forms the same groups on its own.
    torch.testing.assert_close(minibatch_std(x[4:], group_size=4), out[4:])


def test_truncation_psi_zero_gives_the_w_avg_image():
    G = tiny_generator().eval()
    with torch.no_grad():
        G.mapping.w_avg.normal_()
        images = G(torch.randn(3, 8), truncation=0.0, noise_mode="const")
        ws = G.mapping.w_avg[None, None].expand(1, G.num_ws, -1)
        expected = G.synthesis(ws, noise_mode="const")
    for image in images:
        torch.testing.assert_close(image, expected[0], rtol=1e-5, atol=1e-6)


def test_style_mixing_takes_layers_from_the_second_latent():
    G = tiny_generator()
    z, z_mix = torch.randn(3, 8), torch.randn(3, 8)
    cutoff = torch.tensor([1, 4, G.num_ws])
    with torch.no_grad():
        _, ws = G(z, z_mix, cutoff, noise_mode="none", return_ws=True)
        w, w_mix = G.mapping(z), G.mapping(z_mix)
        for b, c in enumerate(cutoff.tolist()):
            torch.testing.assert_close(ws[b, :c], w[b].expand(c, -1))
            torch.testing.assert_close(ws[b, c:], w_mix[b].expand(G.num_ws - c, -1))
        # cutoff = num_ws is no mixing at all
        torch.testing.assert_close(G(z[2:], z_mix[2:], cutoff[2:], noise_mode="none"), G(z[2:], noise_mode="none"))


def test_noise_maps_enter_with_learned_strength():
    G = tiny_generator()
    z = torch.randn(2, 8)
    zeros = [torch.zeros(2, 1, r, r) for r in G.synthesis.noise_resolutions]
    noise = G.noise_from_flat(torch.randn(2, G.noise_numel))
    with torch.no_grad():
        assert torch.equal(G(z, noise=noise), G(z, noise=zeros))  # strengths start at 0
        for block in G.synthesis.blocks:
            for conv in block.convs:
                conv.noise_strength.fill_(0.5)
        assert not torch.allclose(G(z, noise=noise), G(z, noise=zeros))
        torch.testing.assert_close(G(z, noise_mode="none"), G(z, noise=zeros))


def test_noise_max_resolution_keeps_noise_out_of_finer_layers():
    """Layers above model.noise_max_resolution have no noise input: their maps change nothing, while a
    map of a layer at or below it still does; 0 leaves the latent alone to draw the image, and
    benchmarks/noise_share.py then measures a share of 0 (and > 0 with noise at full strength)."""
    from benchmarks.noise_share import noise_share
    G = tiny_generator(noise_max_resolution=8)  # 16 px: layers at 4, 8, 8, 16, 16
    assert [conv.noise_strength is not None for b in G.synthesis.blocks for conv in b.convs] == \
        [True, True, True, False, False]
    with torch.no_grad():
        for p in (p for name, p in G.named_parameters() if name.endswith("noise_strength")):
            p.fill_(0.5)
    z = torch.randn(2, 8)
    noise = G.noise_from_flat(torch.randn(2, G.noise_numel))
    with torch.no_grad():
        for layer, changes in ((4, False), (1, True)):  # a 16-px layer's map, an 8-px layer's map
            changed = list(noise)
            changed[layer] = torch.randn_like(noise[layer])
            assert torch.equal(G(z, noise=noise), G(z, noise=changed)) != changes

    assert noise_share(tiny_generator(noise_max_resolution=0), num=8)[0] == 0.0
    G = tiny_generator()
    with torch.no_grad():
        for p in (p for name, p in G.named_parameters() if name.endswith("noise_strength")):
            p.fill_(1.0)
    share, with_noise, without = noise_share(G, num=8)
    assert 0 < share < 1 and share == pytest.approx(float((with_noise - without).var() / with_noise.var()), rel=1e-5)


def test_latent_input_gives_each_sample_its_own_first_maps():
    """The learned constant gives every sample the same 4x4 input, so without noise the layout can only
    follow from the styles' per-channel scaling of it; model.latent_input maps the input from each sample's
    first style instead (an equalized-lr dense layer), and a config with the key builds that generator."""
    from nets.stylegan2 import build_generator
    from training.config import to_dict
    for latent_input in (False, True):
        G = tiny_generator(latent_input=latent_input, noise_max_resolution=0)
        first = G.synthesis.blocks[0]
        seen = []
        handle = first.convs[0].register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
        with torch.no_grad():
            _, ws = G(torch.randn(3, 8), return_ws=True)
        handle.remove()
        x = seen[0]
        assert x.shape == (3, 16, 4, 4)
        assert (torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])) != latent_input
        assert ("synthesis.blocks.0.const" in G.state_dict()) != latent_input
        if latent_input:
            weight = first.input.weight / math.sqrt(16)  # w_dim 16
            torch.testing.assert_close(x, (ws[:, 0] @ weight.T + first.input.bias).reshape(3, 16, 4, 4))

    config = to_dict(build_config(StyleGAN2Config, os.path.join(ROOT, "configs", "stylegan2_tiny.yaml"),
                                  ["model.latent_input=true"]))
    assert "synthesis.blocks.0.input.weight" in build_generator(config).state_dict()
    del config["model"]["latent_input"]  # a checkpoint from before the key: the constant
    assert "synthesis.blocks.0.const" in build_generator(config).state_dict()

    # ... and resumes under today's config, where the key holds its default, but not with the key changed.
    from training.checkpoint import CheckpointError
    from training.loop import check_resumable
    old = {"model": "stylegan2", "config": config}
    today = build_config(StyleGAN2Config, os.path.join(ROOT, "configs", "stylegan2_tiny.yaml"), [])
    check_resumable(old, today, "stylegan2")
    today.model.latent_input = True
    with pytest.raises(CheckpointError, match=r"trained with model.latent_input=False, the config says True"):
        check_resumable(old, today, "stylegan2")


def test_sampler_depends_only_on_seed_and_index():
    G = tiny_generator().eval()
    sampler = Sampler(G, seed=5)
    assert sampler.channels == 1 and sampler.resolution == 16
    all_six = sampler(torch.arange(6))
    torch.testing.assert_close(torch.cat([sampler(torch.tensor([0, 1, 2])), sampler(torch.tensor([3, 4, 5]))]),
                               all_six, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sampler(torch.tensor([4]))[0], all_six[4], rtol=1e-5, atol=1e-6)
    assert all_six.min() >= -1 and all_six.max() <= 1
    assert not torch.allclose(Sampler(G, seed=6)(torch.arange(6)), all_six)


def test_sampler_inference_paths_agree():
    """Grouped or shared-weight modulated convolutions, in one forward or several: the same samples."""
    G = tiny_generator().eval()
    with torch.no_grad():
        for layer in G.modules():
            if getattr(layer, "noise_strength", None) is not None:
                layer.noise_strength.fill_(0.5)  # the per-index noise must reach the images
    indices = torch.arange(7)
    grouped = Sampler(G, seed=2, fused=True)(indices)
    for fused, frames_per_forward in ((False, None), (False, 3), (True, 2), (None, None)):
        torch.testing.assert_close(Sampler(G, seed=2, fused=fused, frames_per_forward=frames_per_forward)(indices),
                                   grouped, rtol=0, atol=1e-5)
    assert nets.stylegan2.inference_path(G, "cpu") == (False, 512)  # 8 maps of 16x16 px: 8 KiB a frame
    assert nets.stylegan2.inference_path(G, "cuda") == (True, None)


# ---------------------------------------------------------------------------
# Regularizers against closed forms


def test_r1_penalty_closed_form():
    # D(x) = 1/2 sum(c * x^2) + <a, x>  =>  dD/dx = c * x + a,  R1 = sum((c x + a)^2).
    torch.manual_seed(4)
    c = torch.randn(1, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    a = torch.randn(1, 2, 3, 3, dtype=torch.float64)
    x = torch.randn(5, 2, 3, 3, dtype=torch.float64)

    def D(img):
        return (0.5 * c * img.square() + a * img).sum(dim=[1, 2, 3])

    r1, logits = r1_penalty(D, x)
    torch.testing.assert_close(r1, (c * x + a).square().sum(dim=[1, 2, 3]))
    torch.testing.assert_close(logits, D(x))
    # The penalty keeps its graph: d/dc sum_b R1_b = sum_b 2 (c x + a) x.
    r1.sum().backward()
    torch.testing.assert_close(c.grad, (2 * (c * x + a) * x).sum(0, keepdim=True))
    # Through a differentiable augmentation the gradient is taken w.r.t. the un-augmented image.
    r1_aug, _ = r1_penalty(D, x, augment=lambda img: 3 * img)
    torch.testing.assert_close(r1_aug, (3 * (c * 3 * x + a)).square().sum(dim=[1, 2, 3]))


def test_path_lengths_closed_form():
    # images = ws (per layer) through fixed linear maps A_l: the Jacobian is known exactly.
    torch.manual_seed(5)
    A = torch.randn(3, 4, 12, dtype=torch.float64)  # 3 layers, w_dim 4, 12 output pixels
    ws = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    images = torch.einsum("blw,lwp->bp", ws, A).reshape(2, 1, 3, 4)
    y = torch.randn(2, 1, 3, 4, dtype=torch.float64)
    lengths = path_lengths(images, ws, y)
    per_layer = torch.einsum("lwp,bp->blw", A, y.reshape(2, 12))  # J_l^T y
    torch.testing.assert_close(lengths, per_layer.square().sum(2).mean(1).sqrt())


# ---------------------------------------------------------------------------
# DiffAugment and the ADA controller


def test_diff_augment_sharded_equals_global_and_is_deterministic():
    x = torch.randn(8, 1, 16, 16)
    policy = "color,translation,cutout"
    full = diff_augment(x, policy, seed=3, step=7, purpose="D/real")
    parts = [diff_augment(x[r * 4:(r + 1) * 4], policy, 3, 7, rank=r, world=2, purpose="D/real") for r in (0, 1)]
    assert torch.equal(torch.cat(parts), full)
    assert torch.equal(diff_augment(x, policy, 3, 7, purpose="D/real"), full)
    assert not torch.equal(diff_augment(x, policy, 3, 7, purpose="D/fake"), full)
    assert not torch.equal(diff_augment(x, policy, 3, 8, purpose="D/real"), full)
    assert torch.equal(diff_augment(x, policy, 3, 7, p=0.0), x)


def test_diff_augment_transforms_closed_forms():
    x = torch.rand(6, 1, 16, 16) + 0.5  # positive everywhere, so zeros mark pixels that came from outside
    shifted = diff_augment(x, "translation", seed=0, step=0)
    for image, out in zip(x, shifted):
        matches = []
        for ty in range(-2, 3):
            for tx in range(-2, 3):
                expected = torch.zeros_like(image)
                ys, xs = slice(max(ty, 0), 16 + min(ty, 0)), slice(max(tx, 0), 16 + min(tx, 0))
                src_ys, src_xs = slice(max(-ty, 0), 16 + min(-ty, 0)), slice(max(-tx, 0), 16 + min(-tx, 0))
                expected[:, ys, xs] = image[:, src_ys, src_xs]
                matches.append(torch.equal(out, expected))
        assert sum(matches) == 1  # exactly one integer shift of at most 16/8 pixels with zero fill

    cut = diff_augment(x, "cutout", seed=0, step=1)
    for image, out in zip(x, cut):
        zeroed = out == 0
        rows, cols = zeroed.any(dim=2)[0].nonzero(), zeroed.any(dim=1)[0].nonzero()
        assert 1 <= len(rows) <= 8 and 1 <= len(cols) <= 8  # one square of side 8, clipped at the border
        assert zeroed.sum() == len(rows) * len(cols)
        assert torch.equal(out[~zeroed], image[~zeroed])

    colored = diff_augment(x, "color", seed=0, step=2)  # grayscale: brightness and contrast, affine per image
    for image, out in zip(x, colored):
        design = torch.stack([image.flatten(), torch.ones(256)], 1).double()
        solution = torch.linalg.lstsq(design, out.flatten().double()[:, None]).solution
        torch.testing.assert_close(design @ solution, out.flatten().double()[:, None], rtol=0, atol=1e-5)
        assert 0.5 <= solution[0].item() <= 1.5  # the contrast factor


def test_diff_augment_is_differentiable():
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: diff_augment(t, "color,translation,cutout", 1, 2, p=0.5), (x,))


def test_adaptive_augment_steps_and_clamps():
    ada = AdaptiveAugment(batch_size=10, p=0.0, target=0.6, interval=2, speed_kimg=0.1, p_max=0.95)
    step_size = 10 * 2 / 100  # batch * interval / (speed_kimg * 1000)
    for step in range(12):
        ada.observe(torch.tensor([1.0, 1.0, 1.0, -1.0]))  # r_t = 0.5 < 0.6: less augmentation (stays at 0)
        ada.update(step, lambda t: t)
    assert ada.p == 0.0 and ada.rt == 0.5
    for step in range(3):
        ada.observe(torch.ones(5))
        ada.update(step, lambda t: t * 2)  # summed over two processes: same r_t
        assert ada.p == pytest.approx(step_size * ((step + 1) // 2))
    for step in range(3, 40):
        ada.observe(torch.ones(5))
        ada.update(step, lambda t: t)
    assert ada.p == 0.95  # clamped below 1
    restored = AdaptiveAugment(batch_size=10, interval=2, speed_kimg=0.1)
    restored.load_state_dict(ada.state_dict())
    assert restored.state_dict() == ada.state_dict()


# ---------------------------------------------------------------------------
# The training task in this process (no Accelerator: a one-process stand-in)


class OneProcess:
    """What the task uses of an Accelerator, for one CPU process in fp32."""
    process_index, num_processes, device = 0, 1, torch.device("cpu")

    def autocast(self):
        return contextlib.nullcontext()

    def reduce(self, x, reduction):
        return x


def tiny_task(*overrides):
    from training.data import ImageBatches, load_images
    config = build_config(StyleGAN2Config, os.path.join(ROOT, "configs", "stylegan2_tiny.yaml"), list(overrides))
    data = ImageBatches(load_images(config.data.path, config.data.resolution, config.data.channels),
                        config.train.batch_size, config.seed, hflip=True, vflip=True)
    return StyleGAN2Task(SimpleNamespace(config=config, accelerator=OneProcess(), data=data)), data


def test_loss_scalers_are_exact_and_independent():
    """The fp16 path (one GradScaler per optimizer), exercised in fp32: power-of-two scaling changes
    nothing, and an overflow in D's backward skips D's step alone."""
    plain, data = tiny_task()
    scaled, _ = tiny_task()
    scaled.scalers = {name: torch.amp.GradScaler("cpu", init_scale=2.0 ** 16) for name in ("G", "D")}
    for step in range(3):  # R1 and PL at steps 0 and 2
        plain.train_step(data.batch(step), step)
        scaled.train_step(data.batch(step), step)
    for name in ("G", "D"):
        assert_state_close(plain.state_dict()[name], scaled.state_dict()[name], path=name)

    update = scaled._update
    scaled._update = lambda name, loss: update(name, loss * float("inf") if name == "D" else loss)
    before = {name: {k: v.clone() for k, v in scaled.state_dict()[name].items()} for name in ("G", "D")}
    scaled.train_step(data.batch(3), 3)
    state = scaled.state_dict()
    assert state["scalers"]["D"]["scale"] == 2.0 ** 15 and state["scalers"]["G"]["scale"] == 2.0 ** 16
    assert_state_close(state["D"], before["D"], path="D")  # skipped
    assert not torch.equal(state["G"]["synthesis.blocks.0.const"], before["G"]["synthesis.blocks.0.const"])


def test_cosine_lr_decay_and_lazy_correction():
    task, data = tiny_task("train.lr_decay=cosine", "train.kimg=0.02", "train.lr_final_fraction=0.2")
    assert task.total_steps == 5
    assert [task.lr_at(s) for s in (0, 2, 4)] == pytest.approx([0.002, 0.002 * 0.6, 0.002 * 0.2])
    logs = task.train_step(data.batch(2), 2)
    assert logs["Train/lr"] == pytest.approx(0.002 * 0.6)
    # Both networks are lazily regularized every 2 steps: lr * 2/3.
    assert [g["lr"] for g in task.opt_D.param_groups + task.opt_G.param_groups] == pytest.approx([0.0008] * 2)


def test_d_lr_scales_d_steps_alone():
    """train.d_lr gives D its own rate: Adam's first step (beta1 = 0) moves each weight by lr * sign(grad),
    so D's first update doubles with d_lr = 2 lr while G's stays as it was."""
    deltas = {}
    for d_lr in ("null", "0.004"):
        task, data = tiny_task("train.lr=0.002", f"train.d_lr={d_lr}", "train.r1_gamma=0", "train.pl_weight=0")
        before = {name: {k: v.clone() for k, v in task.state_dict()[name].items()} for name in ("G", "D")}
        task.train_step(data.batch(1), 1)
        after = task.state_dict()
        deltas[d_lr] = {name: torch.cat([(after[name][k] - v).flatten() for k, v in before[name].items()
                                         if v.is_floating_point()]).abs().max() for name in ("G", "D")}
    assert deltas["null"]["D"] == pytest.approx(0.002, rel=1e-3)
    assert deltas["0.004"]["D"] == pytest.approx(0.004, rel=1e-3)
    assert deltas["0.004"]["G"] == pytest.approx(deltas["null"]["G"], rel=1e-6)


def test_non_finite_gradients_are_replaced_in_one_buffer_per_network():
    """As StyleGAN2-ADA: NaN -> 0 and +-inf -> +-1e5 before Adam, over one flat buffer per network whose
    views the gradients stay through every backward (so the replacement is one kernel, not one per tensor)."""
    def poison(bad):
        def hook(grad):
            grad = grad.clone()
            grad.view(-1)[:3] = torch.tensor(bad)
            return grad
        return hook

    states = []
    for bad in ([float("nan"), float("inf"), -float("inf")], [0.0, 1e5, -1e5]):
        task, data = tiny_task()
        for name in ("G", "D"):
            next(getattr(task, f"{name}_plain").parameters()).register_hook(poison(bad))
        for step in range(3):  # R1 and PL (their own backward passes) at steps 0 and 2
            task.train_step(data.batch(step), step)
        for name in ("G", "D"):
            flat, = task.gradients[name].buffers
            for p in getattr(task, f"{name}_plain").parameters():
                assert p.grad.untyped_storage().data_ptr() == flat.untyped_storage().data_ptr()
        states.append(task.state_dict())
    for name in ("G", "D"):
        assert all(torch.isfinite(v).all() for v in states[0][name].values() if v.is_floating_point())
        assert_state_close(states[0][name], states[1][name], path=name)


# ---------------------------------------------------------------------------
# The training script


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Four steps of the tiny config with one FID/KID evaluation at the end (once eval/fid.py exists)."""
    out_dir = tmp_path_factory.mktemp("stylegan2") / "run"
    evaluate = os.path.isfile(os.path.join(ROOT, "eval", "fid.py"))
    args = [*TINY, "train.log_every_kimg=0.004"] + (["eval.every_kimg=0.016"] if evaluate else [])
    checkpoint = check_run_folder(SCRIPT, args, out_dir, evaluations=1 if evaluate else 0)
    return out_dir, checkpoint, evaluate


def read_scalars(run_dir) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(glob.glob(os.path.join(run_dir, "tb", "events.out.tfevents*"))[0])
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_run_folder_scalars_and_checkpoint(tiny_run):
    out_dir, checkpoint, _ = tiny_run
    assert checkpoint["model"] == "stylegan2" and checkpoint["step"] == 4
    assert set(checkpoint["optimizers"]) == {"G", "D"} and "pl_mean" in checkpoint
    scalars = read_scalars(out_dir)
    for tag in ("Loss/D/adv", "Loss/G/adv", "Loss/scores/real", "Loss/scores/fake", "Loss/D/r1", "Loss/G/pl",
                "Augment/p", "Train/lr", "Progress/img_per_s"):
        assert tag in scalars, tag
    # Lazy regularizers fire at steps 0 and 2 only (intervals of 2), logged at 4 and 12 images.
    assert [s for s, _ in scalars["Loss/D/r1"]] == [4, 12] and [s for s, _ in scalars["Loss/G/pl"]] == [4, 12]
    assert all(math.isfinite(v) and v > 0 for _, v in scalars["Loss/D/r1"] + scalars["Loss/G/pl"])
    # Lazy regularization corrects Adam's lr and betas by c = interval / (interval + 1) = 2/3.
    group = checkpoint["optimizers"]["D"]["param_groups"][0]
    assert group["lr"] == pytest.approx(0.002 * 2 / 3) and group["betas"][1] == pytest.approx(0.99 ** (2 / 3))


def test_checkpoint_sampler_reproduces_the_ema_generator(tiny_run):
    out_dir, checkpoint, _ = tiny_run
    sampler = nets.load_sampler(checkpoint, "cpu", seed=0)
    images = sampler(torch.arange(4))
    assert images.shape == (4, 1, 16, 16) and sampler.channels == 1 and sampler.resolution == 16
    from nets.stylegan2 import build_generator
    G = build_generator(checkpoint["config"])
    G.load_state_dict(checkpoint["G_ema"])
    torch.testing.assert_close(Sampler(G.eval(), seed=0)(torch.arange(4)), images)
    raw = nets.load_sampler(checkpoint, "cpu", seed=0, use_ema=False)(torch.arange(4))
    assert not torch.allclose(raw, images)  # G and its EMA differ after training
    # psi = 0: every sample is the image of w_avg (up to its per-index noise).
    truncated = nets.load_sampler(checkpoint, "cpu", truncation=0.0, noise_mode="const")(torch.arange(3))
    torch.testing.assert_close(truncated[0], truncated[2])


def test_eval_fid_scores_the_best_checkpoint(tiny_run):
    out_dir, _, evaluate = tiny_run
    assert evaluate, "eval/fid.py is not in the tree yet"
    result = run_script("eval/fid.py", ["--ckpt", str(out_dir / "checkpoints" / "best.pt"), "--json",
                                        "--num-samples", "16"])
    scores = json.loads(result.stdout.strip().splitlines()[-1])
    with open(out_dir / "metrics.jsonl") as f:
        in_training = json.loads(f.readlines()[-1])
    # The same 16 samples (sample i depends on (seed, i)) against the same reals: the training-time FID.
    assert scores["num_fake"] == 16 and scores["num_real"] == in_training["num_real"] == 32
    assert scores["fid"] == pytest.approx(in_training["fid"], rel=1e-4)


def test_resume_is_deterministic(tmp_path):
    check_resume_is_deterministic(SCRIPT, TINY, tmp_path, kimg_first=0.008, kimg_total=0.016)


def test_two_processes_match_one(tmp_path):
    # R1 and PL fire at steps 0 and 2, style mixing at p 0.9 in every G pass; ADA adapts p from both ranks.
    check_two_processes_match_one(SCRIPT, [*TINY, "augment.ada=true", "augment.p=0.5", "augment.ada_interval=2",
                                           "augment.ada_kimg=0.01"], tmp_path)


def test_bf16_matches_fp32_losses(tiny_run, tmp_path):
    out_dir, _, _ = tiny_run
    run_script(SCRIPT, [*TINY, "precision=bf16", "train.kimg=0.004", "train.log_every_kimg=0.004",
                        f"out_dir={tmp_path / 'bf16'}"])
    fp32, bf16 = read_scalars(out_dir), read_scalars(tmp_path / "bf16")
    # Step 0's D loss and scores come from the initial networks: the same up to bf16 rounding.
    for tag in ("Loss/D/adv", "Loss/scores/real", "Loss/scores/fake"):
        assert bf16[tag][0][1] == pytest.approx(fp32[tag][0][1], abs=0.05), tag
    checkpoint = load_checkpoint(tmp_path / "bf16")
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in checkpoint["G"].values())


def test_train_speed_benchmark(tiny_run):
    _, checkpoint, _ = tiny_run
    result = run_script("benchmarks/train_speed.py", ["--config", "configs/stylegan2_tiny.yaml", "--steps", "2",
                                                      "--warmup", "1"])
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["model"] == "stylegan2" and report["batch_size"] == 4 and report["steps"] == 2
    assert report["img_per_s"] > 0 and report["img_per_s"] * report["sec_per_kimg"] == pytest.approx(1000, rel=1e-2)
    assert (report["params_G"], report["params_D"]) == (checkpoint["params"]["G"], checkpoint["params"]["D"])
    assert report["peak_mem_mb"] > 0 and report["losses_finite"] is True
    assert report["host_to_device_per_step"] == 0 and report["syncs_per_step"] == 0  # tests/test_host_transfers.py


def test_bad_config_is_one_line_exit_2(tmp_path):
    # A batch the minibatch-std groups cannot split is found when the task is built: still one line, status 2.
    result = run_script(SCRIPT, [*TINY, "model.mbstd_group_size=3", f"out_dir={tmp_path}"], expect_status=2)
    assert "model.mbstd_group_size" in result.stderr and "Traceback" not in result.stderr
    for override, key in [("augment.policy=color,rotate", "augment.policy"),
                          ("augment.ada_p_max=1.0", "augment.ada_p_max"),
                          ("data.resolution=24", "data.resolution"),
                          ("train.r1_interval=0", "train.r1_interval")]:
        with pytest.raises(ConfigError, match=key):
            build_config(StyleGAN2Config, os.path.join(ROOT, "configs", "stylegan2_tiny.yaml"), [override])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 needs a GPU")
def test_fp16_keeps_one_loss_scaler_per_optimizer(tmp_path):
    run_script(SCRIPT, [*TINY, "precision=fp16", f"out_dir={tmp_path}"])
    checkpoint = load_checkpoint(tmp_path)
    assert set(checkpoint["scalers"]) == {"G", "D"}
    assert all(torch.isfinite(t).all() for t in checkpoint["G_ema"].values() if t.is_floating_point())


# ---------------------------------------------------------------------------
# benchmarks/discriminator_probe.py

def test_discriminator_probe_separates_an_untrained_generator_from_the_data(tmp_path):
    """An untrained G's samples are easy to tell from particle frames: the probe's D, continuing
    from the checkpoint with G frozen, must learn to separate them without augmentation."""
    from accelerate import Accelerator
    from training.config import to_dict
    from training.data import ImageBatches, load_images
    from training.loop import Context
    config = build_config(StyleGAN2Config, os.path.join(ROOT, "configs", "stylegan2_tiny.yaml"), [])
    images = load_images(config.data.path, config.data.resolution, config.data.channels)
    data = ImageBatches(images, config.train.batch_size, config.seed)
    task = StyleGAN2Task(Context(config, Accelerator(cpu=True), None, data, None))
    path = tmp_path / "untrained.pt"
    torch.save({"model": "stylegan2", "config": to_dict(config), "kimg": 0.0, **task.state_dict()}, path)
    result = run_script("benchmarks/discriminator_probe.py",
                        ["--ckpt", str(path), "--steps", "80", "--policies", "none", "translation"])
    probed = json.loads(result.stdout)["policies"]
    assert set(probed) == {"none", "translation"}
    plain = probed["none"]
    assert plain["accuracy"] >= 0.9 and plain["d_loss_last"] < plain["d_loss_first"] - 0.3, plain
    assert plain["mean_logit_real"] > 0 > plain["mean_logit_fake"], plain

    missing = run_script("benchmarks/discriminator_probe.py", ["--ckpt", str(tmp_path / "nope.pt")], expect_status=2)
    assert missing.stderr.count("\n") == 1 and "no such file" in missing.stderr
