"""Network architectures. `load_sampler` rebuilds any model's generator from its checkpoint."""

import importlib

# checkpoint["model"] -> module defining `sampler_from_checkpoint(checkpoint, device, **options)`
MODELS = {
    "stylegan2": "nets.stylegan2",
    "sagan": "nets.sagan",
    "singan": "nets.singan",
}


def load_sampler(checkpoint: dict, device, seed: int = 0, truncation: float = 1.0, use_ema: bool = True, **options):
    """A callable mapping sample indices (LongTensor) to images in [-1, 1].

    Sample i depends only on (seed, i), so any batching or sharding over
    processes produces the same images. The callable has `channels` and
    `resolution` attributes. Model-specific options (e.g. SinGAN's output size)
    pass through `options`.
    """
    name = checkpoint["model"]
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r} in checkpoint (known: {', '.join(MODELS)})")
    module = importlib.import_module(MODELS[name])
    return module.sampler_from_checkpoint(checkpoint, device, seed=seed, truncation=truncation,
                                          use_ema=use_ema, **options)
