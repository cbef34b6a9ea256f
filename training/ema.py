"""Exponential moving average of generator weights (what samples and metrics use)."""

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
    """ema <- beta * ema + (1 - beta) * model for parameters; buffers are copied."""
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.lerp_(p.detach().to(p_ema.dtype), 1 - beta)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)
