"""Steady-state training steps copy nothing from the host and never wait for the device.

training.transfers.HostTransfers counts host-to-device copies and device-to-host
synchronizations; on the CPU it tells the two apart by what the code meant for the host
(see its docstring). Every model's steps 2..N are counted with everything switched on
(StyleGAN2: ADA at p = 0.5 with p adapting inside the window, lazy R1 and path length,
style mixing, flips; SAGAN: DiffAugment; SinGAN: a scale above the first), and faults put
into a real step show that the count would see a sync or a copy if one came back.
"""

import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from training.config import build_config  # noqa: E402
from training.loop import Context, ScalarAverager  # noqa: E402
from training.transfers import HostTransfers  # noqa: E402

STEPS = 6  # step 0 builds the optimizers' state; 1..5 are counted (two ADA updates, R1/PL at 2 and 4)
DEVICE = torch.device("cpu")
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def accelerator(cpu: bool = True):
    from accelerate import Accelerator
    return Accelerator(cpu=cpu)


def loop_task(script: str, config_name: str, overrides: list[str], cpu: bool = True):
    """(task, data) of a script on the shared loop, built as the loop builds them."""
    import importlib
    from training.data import ImageBatches, load_frames
    from training.labels import has_labels, load_labels
    from training.normalize import fit_normalization
    module = importlib.import_module(script)
    config_cls = {"train_stylegan2": "StyleGAN2Config", "train_sagan": "SAGANConfig"}[script]
    task_cls = {"train_stylegan2": "StyleGAN2Task", "train_sagan": "SAGANTask"}[script]
    config = build_config(getattr(module, config_cls), os.path.join(ROOT, "configs", config_name), overrides)
    images, names = load_frames(config.data.path, config.data.resolution, config.data.channels)
    labels = load_labels(config.data, names, len(images))[1] if has_labels(config.data) else None
    acc = accelerator(cpu)
    data = ImageBatches(images, config.train.batch_size, config.seed, hflip=True, vflip=True, device=acc.device,
                        normalization=fit_normalization(images, config.data), labels=labels)
    return getattr(module, task_cls)(Context(config, acc, None, data, None)), data


def stylegan2(cpu: bool = True, overrides: tuple[str, ...] = ()):
    return loop_task("train_stylegan2", "stylegan2_tiny.yaml",
                     ["augment.ada=true", "augment.p=0.5", "augment.ada_interval=2", "augment.ada_kimg=0.1",
                      *overrides], cpu)


def count_steps(step, steps: int = STEPS, device: torch.device = DEVICE) -> list[tuple[int, int, list]]:
    """(host-to-device copies, syncs, events) of each step after the first, the counter running from
    before the first (so host-side state made there, like Adam's step counters, is known as such)."""
    counts = []
    with HostTransfers(device) as transfers:
        for i in range(steps):
            before = len(transfers.events)
            step(i)
            events = transfers.events[before:]
            if i > 0:
                counts.append((sum(k == "to_device" for k, _, _ in events), sum(k == "sync" for k, _, _ in events),
                               events))
    return counts


def assert_no_transfers(counts) -> None:
    for i, (copies, syncs, events) in enumerate(counts, start=1):
        assert copies == 0 and syncs == 0, f"step {i}: {copies} host-to-device copies, {syncs} syncs: {events}"


def loop_steps(task, data):
    """The shared loop's per-step work: the batch, the step, the scalars summed for the next log."""
    averager = ScalarAverager(task.accelerator)

    def step(i):
        averager.add(task.train_step(data.batch(i), i))
    return step, averager


def test_stylegan2_steps_with_ada_copy_nothing_and_never_sync():
    task, data = stylegan2()
    step, averager = loop_steps(task, data)
    assert_no_transfers(count_steps(step))
    assert isinstance(task.ada.p, torch.Tensor) and float(task.ada.p) != 0.5  # p adapted inside the window
    logged = averager.pop()  # the logging step reads them, once
    assert logged["Augment/p"] == pytest.approx(float(task.ada.p), abs=0.1) and "Loss/D/r1" in logged


@requires_cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_gpu_stylegan2_steps_copy_nothing_and_never_sync(precision):
    """On the GPU itself (the devices say which is host), fused Adam and, for fp16, the loss scalers included."""
    task, data = stylegan2(cpu=False, overrides=(f"precision={precision}",))
    assert_no_transfers(count_steps(loop_steps(task, data)[0], device=task.device))


def test_sagan_steps_copy_nothing_and_never_sync():
    task, data = loop_task("train_sagan", "sagan_tiny.yaml", ["augment.policy=color,translation,cutout"])
    assert_no_transfers(count_steps(loop_steps(task, data)[0]))


def test_conditional_steps_copy_nothing_and_never_sync():
    """With labels: the real batch's labels and the fakes' drawn ones stay on the device too."""
    labelled = "data.path=builtin:particles-cond?count=32"
    task, data = stylegan2(overrides=(labelled,))
    assert data.labels is not None
    assert_no_transfers(count_steps(loop_steps(task, data)[0]))
    task, data = loop_task("train_sagan", "sagan_tiny.yaml", [labelled])
    assert_no_transfers(count_steps(loop_steps(task, data)[0]))


def test_singan_steps_copy_nothing_and_never_sync():
    from train_singan import SinGANConfig, SinGANTrainer, load_training_image
    config = build_config(SinGANConfig, os.path.join(ROOT, "configs", "singan_tiny.yaml"), ["eval.sifid=false"])
    trainer = SinGANTrainer(config, accelerator(), None, load_training_image(config)[0])
    trainer.begin_scale(0)
    trainer.G.eval().requires_grad_(False)
    trainer.begin_scale(1)  # above the first scale: the frozen scale 0 makes each step's input
    averager = ScalarAverager(accelerator())
    assert_no_transfers(count_steps(lambda i: averager.add(trainer.train_step(i)), steps=4))


FAULTS = {
    "item": ("sync", lambda logs, device: logs["Loss/D/adv"].item()),
    "float": ("sync", lambda logs, device: float(logs["Loss/G/adv"])),
    "if tensor": ("sync", lambda logs, device: bool(logs["Loss/scores/real"] > 0)),
    "cpu": ("sync", lambda logs, device: logs["Loss/D/adv"].cpu()),
    "nonzero": ("sync", lambda logs, device: torch.nonzero(logs["Loss/scores/fake"] > 0)),
    "tensor().to(device)": ("to_device", lambda logs, device: logs["Loss/D/adv"] * torch.tensor(2.0).to(device)),
    "tensor(device=)": ("to_device", lambda logs, device: torch.tensor([0.5, 0.5], device=device)),
    "host draw used on the device": ("to_device", lambda logs, device: logs["Loss/D/adv"] + torch.rand(4)),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_the_count_sees_a_sync_or_copy_put_into_a_real_step(fault):
    kind, extra = FAULTS[fault]
    task, data = stylegan2()
    real_step = task.train_step

    def faulty_step(real, i):
        logs = real_step(real, i)
        extra(logs, DEVICE)
        return logs
    task.train_step = faulty_step
    counts = count_steps(loop_steps(task, data)[0], steps=3)
    for copies, syncs, events in counts:
        assert (copies, syncs) == ((1, 0) if kind == "to_device" else (0, 1)), events
        assert events[0][2].startswith(os.path.join("tests", "test_host_transfers.py")), events  # where it happened
