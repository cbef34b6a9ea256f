"""Exponential moving average of generator weights (what samples and metrics use)."""

from collections.abc import Iterable

import torch


def ema_beta(batch_size: int, halflife_kimg: float, images_seen: int = 0, rampup: float | None = None) -> float:
    """Per-step decay for a half-life measured in images (StyleGAN2's convention).

    With `rampup`, the half-life is capped at `rampup * images_seen` early in
    training so the average does not drag along the random initialization.
    """
    halflife_images = halflife_kimg * 1000
    if rampup is not None:
        halflife_images = min(halflife_images, images_seen * rampup)
    return 0.5 ** (batch_size / max(halflife_images, 1e-8))


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, beta: float) -> None:
    """ema <- beta * ema + (1 - beta) * model for parameters; buffers are copied. One multi-tensor
    operation for each (a few kernels for the whole network, not one per parameter)."""
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - beta)
    ema_buffers, buffers = list(ema.buffers()), list(model.buffers())
    if ema_buffers:
        torch._foreach_copy_(ema_buffers, buffers)


@torch.no_grad()
def recompute_batchnorm_statistics(model: torch.nn.Module, inputs: Iterable[torch.Tensor | tuple]) -> None:
    """Every BatchNorm layer's running mean and variance := the mean over `inputs` of the batch
    statistics `model` itself produces, each layer fed by the already-normalized layers before it.

    An averaged model must not keep the running statistics of the model it averages: those are
    the moments of other weights' activations. The model's mode and momenta are restored.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    was_training = model.training
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average: every batch counts the same
    model.train()
    for x in inputs:  # a tensor, or a tuple of a model's inputs (latents and labels)
        model(*x) if isinstance(x, tuple) else model(x)
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    model.train(was_training)
