"""Can a StyleGAN2 run's D tell its reals from its fakes, and which augmentation stops it?

    python benchmarks/discriminator_probe.py --ckpt runs/study-cpu32/stylegan2-reference/checkpoints/last.pt \
        [--steps 300] [--policies color,translation,cutout translation,cutout color translation cutout none]

A D at chance (logits near 0 on reals and fakes, D loss at 2 ln 2) gives G no signal: either G
matches the data as D sees it, or D cannot see the difference. Here G is frozen at the checkpoint,
and for each DiffAugment policy D continues from its checkpointed weights and optimizer through
`--steps` of the run's own D updates (logistic loss and lazy R1, the run's learning rate). If D
separates the same fakes from the reals under one policy and not under another, the augmentation
is what hides the difference. Prints one JSON object: per policy, D's loss averaged over the first
and the last 50 steps, and its accuracy on 256 unaugmented reals and 256 fakes at the end.
"""

import os
import sys

if __package__ in (None, ""):
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse
import json

import torch
from accelerate import Accelerator

from train_stylegan2 import StyleGAN2Config, StyleGAN2Task
from training.augment import parse_policy
from training.checkpoint import load_checkpoint
from training.config import exit_with_error, from_dict
from training.data import ImageBatches, load_images
from training.loop import Context
from training.normalize import fit_normalization

WINDOW = 50            # steps averaged for the first and last D loss
HELD_OUT = 256         # unaugmented reals and fakes D is scored on at the end
PROBE_STEPS = 10 ** 6  # step numbers for the probe's own batches and latents, past any run's training


def probe(checkpoint: dict, policy: str, steps: int) -> dict:
    config = from_dict(StyleGAN2Config, checkpoint["config"])
    config.augment.policy, config.augment.ada = policy, False
    images = load_images(config.data.path, config.data.resolution, config.data.channels)
    data = ImageBatches(images, config.train.batch_size, config.seed, hflip=config.data.hflip,
                        vflip=config.data.vflip, normalization=fit_normalization(images, config.data))
    task = StyleGAN2Task(Context(config, Accelerator(cpu=True), None, data, None))
    task.load_state_dict(checkpoint)
    task.policy = parse_policy(policy)
    G, D = task.G_plain.requires_grad_(False), task.D_plain
    losses = []
    for step in range(PROBE_STEPS, PROBE_STEPS + steps):
        logs = task.d_step(data.batch(step), step)
        losses.append(float(logs["Loss/D/adv"]))
    with torch.no_grad():
        fake = G(**task._latents("probe", 0, HELD_OUT))
        real = torch.cat([data.batch(2 * PROBE_STEPS + i) for i in range(HELD_OUT // data.batch_size)])
        real_logits, fake_logits = D(real).flatten(), D(fake).flatten()
    accuracy = ((real_logits > 0).float().mean() + (fake_logits < 0).float().mean()) / 2
    return {"d_loss_first": sum(losses[:WINDOW]) / len(losses[:WINDOW]),
            "d_loss_last": sum(losses[-WINDOW:]) / len(losses[-WINDOW:]),
            "accuracy": round(accuracy.item(), 3),
            "mean_logit_real": round(real_logits.mean().item(), 3), "mean_logit_fake": round(fake_logits.mean().item(), 3)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, help="a StyleGAN2 checkpoint (last.pt of a run)")
    parser.add_argument("--steps", type=int, default=300, help="D steps per policy")
    parser.add_argument("--policies", nargs="+", default=["color,translation,cutout", "translation,cutout", "color",
                                                           "translation", "cutout", "none"],
                        help="DiffAugment policies to probe ('none': no augmentation)")
    args = parser.parse_args(argv)
    if args.steps < WINDOW:
        exit_with_error(f"--steps must be at least {WINDOW}")
    if not os.path.isfile(args.ckpt):
        exit_with_error(f"--ckpt {args.ckpt}: no such file; pass a run's checkpoints/last.pt")
    checkpoint = load_checkpoint(args.ckpt)
    if checkpoint.get("model") != "stylegan2":
        exit_with_error(f"--ckpt {args.ckpt}: a {checkpoint.get('model')} checkpoint; the probe needs a StyleGAN2 one")
    result = {"ckpt": args.ckpt, "kimg": checkpoint["kimg"], "steps": args.steps, "threads": torch.get_num_threads(),
              "policies": {p: probe(checkpoint, "" if p == "none" else p, args.steps) for p in args.policies}}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
