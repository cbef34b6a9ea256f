"""StyleGAN2's mixed precision (StyleGAN2-ADA's anchor): reduced precision in the chosen
high-resolution blocks only, and a bf16 step close to the fp32 one."""

import os
import sys

import pytest
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from nets.stylegan2 import (Discriminator, FullyConnected, Generator, ToRGB, full_precision,  # noqa: E402
                            reduce_precision, reduced_precision_blocks)
from training.config import build_config  # noqa: E402
from training.data import ImageBatches, load_images  # noqa: E402
from training.loop import Context  # noqa: E402
from train_stylegan2 import StyleGAN2Config, StyleGAN2Task  # noqa: E402

# Relative L2 error of the whole gradient of G and of D, bf16 blocks against fp32, on the tiny config:
# bf16 keeps 8 bits of mantissa (0.4 % per rounding); measured 4.9 % for G and 3.8 % for D (each
# parameter tensor 2-7 %, small bias gradients that are sums of cancelling terms more).
GRADIENT_TOLERANCE = 0.10
LOSS_TOLERANCE = 0.02  # absolute, on softplus losses of 0.5-1.4; measured at most 0.005


def networks(resolution=32):
    torch.manual_seed(0)
    G = Generator(z_dim=16, w_dim=32, resolution=resolution, img_channels=3, mapping_layers=2, channel_base=256,
                  channel_max=32)
    D = Discriminator(resolution=resolution, img_channels=3, channel_base=256, channel_max=32, mbstd_group_size=2)
    return G, D


def test_chosen_blocks_follow_num_fp16_res_and_stop_at_8px():
    G, D = networks(resolution=32)
    assert [b.convs[0].resolution for b in reduced_precision_blocks(G, 2)] == [16, 32]
    assert reduced_precision_blocks(D, 2) == list(D.blocks)[:2]  # inputs at 32 and 16 px
    assert [b.convs[0].resolution for b in reduced_precision_blocks(G, 10)] == [8, 16, 32]  # never 4x4
    assert reduced_precision_blocks(D, 10) == list(D.blocks)  # down to the 8 -> 4 block; the 4x4 epilogue is not one
    assert reduced_precision_blocks(G, 0) == [] and reduced_precision_blocks(D, 0) == []


def test_only_the_chosen_blocks_run_in_reduced_precision():
    G, D = networks(resolution=32)
    chosen = reduce_precision(G, torch.bfloat16, 2) + reduce_precision(D, torch.bfloat16, 2)
    inside = {m for block in chosen for m in block.modules()}
    always_fp32 = {m for m in inside if isinstance(m, (ToRGB, FullyConnected))} | {
        m for t in inside if isinstance(t, ToRGB) for m in t.modules()}  # toRGB and the styles
    reduced = []

    def record(module, inputs, output):
        tensors = [t for t in (*inputs, output) if isinstance(t, torch.Tensor) and t.is_floating_point()]
        if any(t.dtype == torch.bfloat16 for t in (output,) if isinstance(t, torch.Tensor)):
            reduced.append(module)
        leaf = not any(True for _ in module.children()) or isinstance(module, FullyConnected)
        if leaf and module not in inside:
            assert all(t.dtype == torch.float32 for t in tensors), f"{type(module).__name__} outside the blocks"

    handles = [m.register_forward_hook(record) for net in (G, D) for m in net.modules()]
    z = torch.randn(4, 16)
    image = G(z, z_mix=torch.randn(4, 16), mix_cutoff=torch.tensor([1, 2, 3, 9]))
    logits = D(image)
    F.softplus(-logits).mean().backward()
    for h in handles:
        h.remove()
    assert image.dtype == torch.float32 and logits.dtype == torch.float32
    assert reduced and set(reduced) <= inside - always_fp32, [type(m).__name__ for m in set(reduced) - inside]
    assert any(type(m).__name__ == "SynthesisLayer" for m in reduced)  # the test is not empty: convs ran in bf16
    assert any(type(m).__name__ == "Conv2dLayer" for m in reduced)
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in (*G.parameters(), *D.parameters())
               if p.requires_grad and p is not G.synthesis.blocks[0].const)
    with full_precision(G, D):
        assert all(b.dtype == torch.float32 for b in chosen)
    assert all(b.dtype == torch.bfloat16 for b in chosen)


def tiny_task(precision: str, cpu: bool = True):
    config = build_config(StyleGAN2Config, os.path.join(ROOT, "configs", "stylegan2_tiny.yaml"),
                          [f"precision={precision}", "augment.p=0.5"])
    from accelerate import Accelerator
    accelerator = Accelerator(cpu=cpu)
    images = load_images(config.data.path, config.data.resolution, config.data.channels)
    data = ImageBatches(images, config.train.batch_size, config.seed, device=accelerator.device)
    return StyleGAN2Task(Context(config, accelerator, None, data, None)), data


def gradient(module) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in module.parameters() if p.grad is not None])


@pytest.mark.parametrize("reduced, cpu", [("bf16", True), pytest.param(
    "fp16", False, marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 needs a GPU"))],
    ids=["bf16", "gpu-fp16"])
def test_reduced_precision_step_stays_close_to_fp32(reduced, cpu, monkeypatch):
    """bf16 on the CPU; fp16 on a GPU (the GPU run compares with the GPU's own fp32, TF32 off)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    results = {}
    for precision in ("fp32", reduced):
        task, data = tiny_task(precision, cpu)
        assert task.G_ema.synthesis.blocks[-1].dtype == torch.float32  # samplers stay fp32
        inputs = task._latents("G", 0, task.batch)
        fake = task.G_plain(**inputs)
        loss_G = F.softplus(-task.D_plain(task._augment(fake, "G/fake", 0))).mean()
        loss_D = F.softplus(task.D_plain(task._augment(data.batch(0), "D/real", 0))).mean()
        (loss_G + loss_D).backward()
        grads = gradient(task.G_plain), gradient(task.D_plain)
        results[precision] = (loss_G.detach(), *grads, task.train_step(data.batch(0), 0))
    (loss32, g32, d32, logs32), (loss16, g16, d16, logs16) = results["fp32"], results[reduced]
    assert loss16 == pytest.approx(float(loss32), abs=LOSS_TOLERANCE)
    for reduced, exact in ((g16, g32), (d16, d32)):
        assert 0 < float((reduced - exact).norm() / exact.norm()) < GRADIENT_TOLERANCE
    for name in ("Loss/D/adv", "Loss/G/adv", "Loss/scores/real", "Loss/scores/fake"):
        assert float(logs16[name]) == pytest.approx(float(logs32[name]), abs=LOSS_TOLERANCE), name


def test_a_checkpoint_from_before_resumes_exactly():
    """A state written before num_fp16_res and the fused Adam (no such model key, Adam groups saying
    fused and foreach None) passes the resume check, loads into the fused Adam, and continues exactly
    as the run that wrote it."""
    import copy
    from training.config import to_dict
    from training.loop import check_resumable
    task, data = tiny_task("bf16")
    task.train_step(data.batch(0), 0)
    old = copy.deepcopy(task.state_dict())
    for optimizer in old["optimizers"].values():
        for group in optimizer["param_groups"]:
            group["foreach"], group["fused"] = None, None
    config = to_dict(task.config)
    del config["model"]["num_fp16_res"]
    check_resumable({"model": "stylegan2", "config": config, **old}, task.config, "stylegan2")
    resumed, _ = tiny_task("bf16")
    resumed.load_state_dict(old)
    assert all(g["fused"] for opt in (resumed.opt_G, resumed.opt_D) for g in opt.param_groups)
    task.train_step(data.batch(1), 1)
    resumed.train_step(data.batch(1), 1)
    for name in ("G", "D", "G_ema"):
        for key, value in task.state_dict()[name].items():
            assert torch.equal(value, resumed.state_dict()[name][key]), (name, key)
