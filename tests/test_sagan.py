"""SAGAN: layers against explicit formulas, losses and schedules in closed form, and the
training script through the shared plumbing checks (run folder, resume, 2 processes == 1)."""

import json
import math
import os

import numpy as np
import pytest
import torch

from plumbing import (ROOT, check_resume_is_deterministic, check_run_folder, check_two_processes_match_one,
                      run_script)
from nets import load_sampler
from nets.sagan import (CPUSyncBatchNorm, SAGANModel, SelfAttention, build_discriminator, build_generator,
                        feature_resolutions)
from train_sagan import SAGANConfig, SAGANTask, d_loss, epoch_is_evaluated, g_loss
from training.config import build_config
from training.images import to_uint8
from training.seeding import latents_for_indices

SCRIPT = "train_sagan.py"
TINY = ["--config", "configs/sagan_tiny.yaml"]
NO_EVAL = ["eval.every_epochs=[]"]


# ---------------------------------------------------------------------------
# Layers

def explicit_attention(x, attention):
    """SAGAN eq. (1)-(3) written out: s_ji = q_j . k_i, beta_ji = softmax_i, o_j = sum_i beta_ji v_i."""
    def project(conv, x):
        return torch.einsum("oc,bchw->bohw", conv.weight[:, :, 0, 0], x).flatten(2) + conv.bias[None, :, None]
    q, k, v = (project(c, x) for c in (attention.query, attention.key, attention.value))  # [B, ch, N]
    b, c, h, w = x.shape
    out = torch.zeros(b, c, h * w, dtype=x.dtype)
    for n in range(b):
        for j in range(h * w):
            scores = torch.stack([torch.dot(q[n, :, j], k[n, :, i]) for i in range(h * w)])
            weights = torch.exp(scores - scores.max()) / torch.exp(scores - scores.max()).sum()
            out[n, :, j] = (v[n] * weights[None]).sum(1)
    return x + attention.gamma * out.view(b, c, h, w)


def test_self_attention_starts_as_identity_and_matches_the_explicit_formula():
    torch.manual_seed(0)
    attention = SelfAttention(16).double()
    x = torch.randn(2, 16, 4, 5, dtype=torch.float64)
    assert attention.gamma.item() == 0.0
    assert torch.equal(attention(x), x)
    with torch.no_grad():
        attention.gamma.fill_(0.7)
    assert attention.query.out_channels == attention.key.out_channels == 2
    torch.testing.assert_close(attention(x), explicit_attention(x, attention), rtol=1e-10, atol=1e-10)


def test_discriminator_is_spectrally_normalized_everywhere_and_has_no_batchnorm():
    torch.manual_seed(0)
    D = build_discriminator(SAGANModel(d_channels=8, d_attention=[8]), resolution=16, channels=1)
    convs = [m for m in D.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(convs) == 2 + 1 + 3  # strided convs 16->8->4, the 4x4 output conv, q/k/v
    assert all(torch.nn.utils.parametrize.is_parametrized(m, "weight") for m in convs)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in D.modules())
    with torch.no_grad():
        for _ in range(50):  # power iterations run in training-mode forwards
            D(torch.zeros(1, 1, 16, 16))
    for conv in convs:
        largest = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
        assert abs(largest.item() - 1) < 1e-3, conv


def test_generator_is_spectrally_normalized_with_the_paper_setting_and_plain_without():
    torch.manual_seed(0)
    model = SAGANModel(g_channels=8, g_attention=[8], g_spectral_norm=True)
    G = build_generator(model, resolution=16, channels=1)
    convs = [m for m in G.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert len(convs) == 3 + 3  # transposed convs to 4, 8 and 16 px, q/k/v
    assert all(torch.nn.utils.parametrize.is_parametrized(m, "weight") for m in convs)
    with torch.no_grad():
        for _ in range(50):
            G(torch.randn(2, model.z_dim))
    for conv in convs:  # a transposed convolution's operator is normalized over its output maps (dim 1)
        weight = conv.weight.detach()
        matrix = weight.transpose(0, 1).flatten(1) if isinstance(conv, torch.nn.ConvTranspose2d) else weight.flatten(1)
        assert abs(torch.linalg.matrix_norm(matrix, ord=2).item() - 1) < 1e-3, conv
    plain = build_generator(SAGANModel(g_channels=8, g_attention=[8]), resolution=16, channels=1)
    assert not any(torch.nn.utils.parametrize.is_parametrized(m) for m in plain.modules())


def test_networks_have_the_configured_shape():
    model = SAGANModel(z_dim=32, g_channels=8, d_channels=4, max_channels=24, g_attention=[8, 16], d_attention=[4])
    G, D = build_generator(model, 32, 3), build_discriminator(model, 32, 3)
    assert feature_resolutions(32) == [4, 8, 16]
    assert [m.out_channels for m in G.modules() if isinstance(m, torch.nn.ConvTranspose2d)] == [24, 16, 8, 3]
    assert [m.value.in_channels for m in G.modules() if isinstance(m, SelfAttention)] == [16, 8]
    assert [m.value.in_channels for m in D.modules() if isinstance(m, SelfAttention)] == [16]
    images = G(torch.randn(2, 32))
    assert images.shape == (2, 3, 32, 32) and images.abs().max() <= 1
    assert D(images).shape == (2,)


def test_cpu_sync_batchnorm_equals_batchnorm_in_a_process_group(tmp_path):
    """The multi-process BatchNorm's reductions, checked in a one-process gloo group against BatchNorm2d."""
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        plain, synced = torch.nn.BatchNorm2d(3), CPUSyncBatchNorm(3)
        with torch.no_grad():
            plain.weight.uniform_(0.5, 1.5), plain.bias.uniform_(-1, 1)
        synced.load_state_dict(plain.state_dict())
        x = torch.randn(4, 3, 5, 5) * 3 + 1
        xs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
        outputs = [plain(xs[0]), synced(xs[1])]
        torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-5, atol=1e-5)
        upstream = torch.randn_like(x)
        for out in outputs:
            (out * upstream).sum().backward()
        torch.testing.assert_close(xs[1].grad, xs[0].grad, rtol=1e-4, atol=1e-5)
        for name in ("weight", "bias"):
            torch.testing.assert_close(getattr(synced, name).grad, getattr(plain, name).grad, rtol=1e-5, atol=1e-5)
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            torch.testing.assert_close(getattr(synced, name), getattr(plain, name), rtol=1e-5, atol=1e-6)
    finally:
        dist.destroy_process_group()


# ---------------------------------------------------------------------------
# Losses and schedules

def test_losses_match_closed_form():
    real, fake = [2.0, -0.5, 0.3], [-1.5, 0.8, 4.0]
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    r, f = torch.tensor(real, dtype=torch.float64), torch.tensor(fake, dtype=torch.float64)

    loss_real, loss_fake = d_loss(r, f, "bce", real_label=0.9, fake_label=0.0)
    assert loss_real.item() == pytest.approx(mean([-0.9 * math.log(sig(v)) - 0.1 * math.log(1 - sig(v))
                                                   for v in real]), rel=1e-12)
    assert loss_fake.item() == pytest.approx(mean([-math.log(1 - sig(v)) for v in fake]), rel=1e-12)
    assert g_loss(f, "bce").item() == pytest.approx(mean([-math.log(sig(v)) for v in fake]), rel=1e-12)

    loss_real, loss_fake = d_loss(r, f, "hinge")
    assert loss_real.item() == pytest.approx(mean([max(0, 1 - v) for v in real]), rel=1e-12)
    assert loss_fake.item() == pytest.approx(mean([max(0, 1 + v) for v in fake]), rel=1e-12)
    assert g_loss(f, "hinge").item() == pytest.approx(-mean(fake), rel=1e-12)


def test_evaluation_epochs_follow_the_reference_schedule():
    evaluated = {e for e in range(0, 1001) if epoch_is_evaluated(e, [10, 20, 50], [200, 800])}
    assert evaluated == set(range(10, 200, 10)) | set(range(200, 800, 20)) | set(range(800, 1001, 50))
    assert not any(epoch_is_evaluated(e, [], []) for e in range(100))
    assert {e for e in range(1, 13) if epoch_is_evaluated(e, [3], [])} == {3, 6, 9, 12}


class Schedules:
    """SAGANTask's schedule methods on configs/sagan.yaml (batch 16) and a 300-image set, without networks."""
    epoch_of, lr_factor, eval_due = SAGANTask.epoch_of, SAGANTask.lr_factor, SAGANTask.eval_due

    def __init__(self, *overrides):
        self.config = build_config(SAGANConfig, os.path.join(ROOT, "configs", "sagan.yaml"), list(overrides))
        self.num_images = 300


def test_evaluation_steps_and_learning_rate_steps_come_from_epochs():
    schedules = Schedules()
    # epoch 10 ends inside step 187 (its images 2992..3007 include image 3000): evaluate after 188 steps
    assert [s for s in range(1, 400) if schedules.eval_due(s, done=False)] == [188, 375]
    assert schedules.eval_due(5, done=True)
    # the learning rate halves once the batch's first image is in epoch 500 (image 150000: step 9375)
    assert schedules.lr_factor(9374) == 1.0
    assert schedules.lr_factor(9375) == 0.5
    assert schedules.lr_factor(18750) == 0.25

    schedules = Schedules("eval.every_kimg=1")
    assert [s for s in range(1, 200) if schedules.eval_due(s, done=False)] == [63, 125, 188]
    schedules = Schedules("eval.every_epochs=[]")
    assert not any(schedules.eval_due(s, done=s == 99) for s in range(1, 100))


# ---------------------------------------------------------------------------
# The training script

def test_bad_attention_resolution_is_one_line_and_exit_2(tmp_path):
    result = run_script(SCRIPT, [*TINY, "model.g_attention=[16]", f"out_dir={tmp_path}"], expect_status=2)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "model.g_attention" in lines[0], result.stderr


def test_run_folder_evaluations_tensorboard_and_generation(tmp_path):
    """The tiny config evaluates FID/KID after epochs 1 and 2 and at the end (epoch 3): steps 4, 8, 12."""
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    run = tmp_path / "run"
    checkpoint = check_run_folder(SCRIPT, TINY, run, evaluations=3)
    with open(run / "metrics.jsonl") as f:
        assert [json.loads(line)["step"] for line in f] == [4, 8, 12]
    assert checkpoint["model"] == "sagan" and checkpoint["step"] == 12
    assert set(checkpoint) >= {"G", "G_ema", "D", "optimizers", "scalers"}
    # 4 steps per epoch, lr halved every 2 epochs: the last steps (epoch 2) run at half the rate
    assert [g["lr"] for g in checkpoint["optimizers"]["G"]["param_groups"]] == [1e-4]
    assert any(key.endswith("_u") for key in checkpoint["D"])  # spectral-norm power-iteration state

    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    assert {"Loss/D/real", "Loss/D/fake", "Loss/G/adv", "Loss/scores/real", "Loss/scores/fake",
            "Loss/scores/real_prob", "Loss/scores/fake_prob", "Grad/D/norm", "Grad/G/norm",
            "Train/lr_G", "Train/lr_D"} <= set(events.Tags()["scalars"])
    assert [e.value for e in events.Scalars("Train/lr_D")] == pytest.approx([2e-4] * 4 + [1e-4] * 2)

    sampler = load_sampler(checkpoint, "cpu", seed=3)
    assert (sampler.channels, sampler.resolution) == (1, 16)
    images = sampler(torch.arange(6))
    assert images.shape == (6, 1, 16, 16) and images.abs().max() <= 1
    torch.testing.assert_close(sampler(torch.tensor([4, 1])), images[[4, 1]])  # eval-mode BN: per index
    plain = load_sampler(checkpoint, "cpu", seed=3, use_ema=False)(torch.arange(6))
    assert not torch.allclose(plain, images)

    run_script("eval/generate.py", ["--ckpt", str(run / "checkpoints" / "best.pt"), "--num", "3", "--seed", "3",
                                    "--out", str(tmp_path / "png")])
    best = load_sampler(torch.load(run / "checkpoints" / "best.pt", weights_only=True), "cpu", seed=3)
    expected = to_uint8(best(torch.arange(3)))
    for i in range(3):
        png = torch.from_numpy(np.array(Image.open(tmp_path / "png" / f"{i:06d}.png")))
        assert torch.equal(png, expected[i, 0]), i


def test_resume_is_deterministic_with_diffaugment_hinge_and_spectral_norm_in_g(tmp_path):
    args = [*TINY, *NO_EVAL, "augment.policy=color,translation,cutout", "train.loss=hinge", "train.d_steps=2",
            "model.g_spectral_norm=true"]  # the paper's recipe: G's spectral-norm vectors resume too
    check_resume_is_deterministic(SCRIPT, args, tmp_path, kimg_first=0.048, kimg_total=0.096)


def test_two_processes_match_one_with_sync_batchnorm(tmp_path):
    args = [*TINY, *NO_EVAL, "augment.policy=translation,cutout"]
    check_two_processes_match_one(SCRIPT, args, tmp_path)


# ---------------------------------------------------------------------------
# The task in-process: what the sampler leaves alone and what a step touches

def tiny_task(overrides):
    from accelerate import Accelerator
    from training.data import ImageBatches, load_images
    from training.loop import Context
    config = build_config(SAGANConfig, os.path.join(ROOT, "configs", "sagan_tiny.yaml"), overrides)
    images = load_images(config.data.path, config.data.resolution, config.data.channels)
    data = ImageBatches(images, config.train.batch_size, config.seed, hflip=True, vflip=True)
    return SAGANTask(Context(config, Accelerator(cpu=True), None, data, None)), data


@pytest.fixture(scope="module")
def task_without_ema():
    return tiny_task(["train.ema_halflife_kimg=0"])[0]


def test_sampler_without_ema_uses_eval_mode_and_leaves_training_state_alone(task_without_ema):
    task = task_without_ema
    assert task.G_ema is None and "G_ema" not in task.state_dict()
    before = {k: v.clone() for k, v in task.G.state_dict().items()}
    sample = task.sampler()
    first = sample(torch.arange(4))
    assert task.G.training
    for key, value in task.G.state_dict().items():
        assert torch.equal(value, before[key]), key  # running statistics untouched
    torch.testing.assert_close(sample(torch.tensor([2, 3])), first[2:])


def test_generator_step_leaves_discriminator_untouched(task_without_ema):
    task = task_without_ema
    D_before = {k: v.clone() for k, v in task.D.state_dict().items() if not k.endswith(("_u", "_v"))}
    G_before = [p.clone() for p in task.G.parameters()]
    stats = task.g_step(step=0, index=0)
    assert set(stats) == {"Loss/G/adv", "Grad/G/norm"}
    assert all(p.requires_grad and p.grad is None for p in task.D.parameters())
    for key, value in D_before.items():
        assert torch.equal(task.D.state_dict()[key], value), key
    assert any(not torch.equal(a, b) for a, b in zip(G_before, task.G.parameters()))


def batchnorm_statistics(G) -> dict:
    """{layer: (running mean, running var)} of every BatchNorm layer of G."""
    return {name: (m.running_mean.clone(), m.running_var.clone())
            for name, m in G.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}


def own_batch_statistics(G, z: torch.Tensor) -> dict:
    """The moments of G's activations at each BatchNorm input when G normalizes one large batch
    with its own batch statistics: what eval-mode statistics should reproduce."""
    import copy
    G = copy.deepcopy(G).train()
    moments = {}
    hooks = [m.register_forward_hook(lambda m, args, out, name=name: moments.__setitem__(
        name, (args[0].mean((0, 2, 3)), args[0].var((0, 2, 3)))))
        for name, m in G.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        G(z)
    for hook in hooks:
        hook.remove()
    return moments


def statistics_error(statistics: dict, own: dict) -> float:
    """Largest mean offset (in own standard deviations) or log variance ratio over all channels."""
    return max(max(((mean - own_mean) / own_var.sqrt()).abs().max().item(), (var / own_var).log().abs().max().item())
               for name, (own_mean, own_var) in own.items() for mean, var in [statistics[name]])


def test_ema_generator_normalizes_with_statistics_of_its_own_weights():
    """G_ema's BatchNorm statistics must be the moments of G_ema's own activations. Copying the live
    G's running statistics (update_ema copies buffers) or averaging them alongside the weights gives
    the moments of other weights; recomputing them from G_ema reproduces its own, layer by layer,
    and that is what the sampler uses and the checkpoint holds."""
    from training.ema import ema_beta
    task, data = tiny_task(["train.ema_halflife_kimg=1", "train.ema_rampup=0", "train.g_lr=0.002", "train.d_lr=0.002"])
    t = task.config.train
    averaged = batchnorm_statistics(task.G)
    for step in range(40):
        task.train_step(data.batch(step), step)
        beta = ema_beta(t.batch_size, t.ema_halflife_kimg, (step + 1) * t.batch_size)
        for name, (mean, var) in batchnorm_statistics(task.G).items():
            averaged[name][0].lerp_(mean, 1 - beta)
            averaged[name][1].lerp_(var, 1 - beta)
    copied = batchnorm_statistics(task.G_ema)
    assert all(torch.equal(copied[name][0], mean) for name, (mean, _) in batchnorm_statistics(task.G).items())

    own = own_batch_statistics(task.G_ema, torch.randn(4096, task.config.model.z_dim, generator=torch.Generator().manual_seed(5)))
    samples = task.sampler()(torch.arange(6))
    recomputed = batchnorm_statistics(task.G_ema)
    errors = {"recomputed": statistics_error(recomputed, own), "copied": statistics_error(copied, own),
              "averaged": statistics_error(averaged, own)}
    assert errors["recomputed"] < 0.1 and errors["copied"] > 5 * errors["recomputed"] \
        and errors["averaged"] > 5 * errors["recomputed"], errors

    saved = task.state_dict()["G_ema"]
    for name, (mean, var) in recomputed.items():
        assert torch.equal(saved[f"{name}.running_mean"], mean) and torch.equal(saved[f"{name}.running_var"], var)
    with torch.no_grad():
        expected = task.G_ema.eval()(latents_for_indices(torch.arange(6), task.config.model.z_dim, task.config.seed))
    torch.testing.assert_close(samples, expected)
    # the same weights get the same statistics: a resumed run samples like an uninterrupted one
    task.load_state_dict(task.state_dict())
    torch.testing.assert_close(task.sampler()(torch.arange(6)), samples)
