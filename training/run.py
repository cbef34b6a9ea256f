"""The run folder and everything written into it.

    out_dir/config.yaml          resolved config
    out_dir/tb/                  TensorBoard events
    out_dir/metrics.jsonl        one JSON object per evaluation
    out_dir/samples/             PNG grids from fixed latents
    out_dir/checkpoints/         last.pt, best.pt

Only the main process writes; the other processes get a Run whose writing
methods do nothing, so the training loops call them unconditionally.
"""

import json
import os

import torch
import yaml

from training.checkpoint import save_checkpoint
from training.config import default_out_dir, save_yaml, to_dict
from training.images import make_grid, save_png


class Run:
    def __init__(self, config, accelerator, config_path: str | None = None):
        from accelerate.utils import broadcast_object_list

        self.accelerator = accelerator
        self.is_main = accelerator.is_main_process
        if not config.out_dir:  # every process must agree on one timestamped name: the main one picks it
            chosen = [default_out_dir(config_path) if self.is_main else None]
            if accelerator.num_processes > 1:
                broadcast_object_list(chosen)
            config.out_dir = chosen[0]
        self.out_dir = config.out_dir
        self.config = config
        self.writer = None
        if self.is_main:
            for sub in ("samples", "checkpoints", "tb"):
                os.makedirs(os.path.join(self.out_dir, sub), exist_ok=True)
            for name in os.listdir(self.path("checkpoints")):
                if ".tmp" in name:  # a save cut short by a killed process; the file it replaces is intact
                    os.remove(self.path("checkpoints", name))
            self.save_config()
            print("resolved config:\n  " + yaml.safe_dump(to_dict(config), sort_keys=False).rstrip().replace("\n", "\n  "))
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(os.path.join(self.out_dir, "tb"))

    def save_config(self) -> None:
        """(Re)write config.yaml, e.g. once the data have filled in what the config left to them."""
        if self.is_main:
            save_yaml(self.config, os.path.join(self.out_dir, "config.yaml"))

    def path(self, *parts: str) -> str:
        return os.path.join(self.out_dir, *parts)

    @staticmethod
    def global_step(kimg: float) -> int:
        """TensorBoard's step axis: images shown, so curves of runs with different batches line up."""
        return int(round(kimg * 1000))

    def log_scalars(self, scalars: dict, kimg: float) -> None:
        if self.writer:
            for name, value in scalars.items():
                self.writer.add_scalar(name, float(value), self.global_step(kimg))

    def log_metrics(self, record: dict, kimg: float) -> None:
        """Append to metrics.jsonl and log each number as Metrics/<name>."""
        if not self.is_main:
            return
        with open(self.path("metrics.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")
        self.log_scalars({f"Metrics/{k}": v for k, v in flatten(record).items()
                          if isinstance(v, (int, float)) and k not in ("step", "kimg")}, kimg)
        self.writer.flush()

    def save_samples(self, images_uint8: torch.Tensor, kimg: float, name: str = "fakes") -> None:
        """A grid PNG in samples/ and the same grid in TensorBoard."""
        if not self.is_main:
            return
        grid = make_grid(images_uint8)
        save_png(grid, self.path("samples", f"{name}{int(round(kimg * 1000)):09d}.png"))
        self.writer.add_image(f"Samples/{name}", grid if grid.ndim == 3 else grid[:, :, None],
                              self.global_step(kimg), dataformats="HWC")

    def save_checkpoint(self, state: dict, name: str) -> None:
        if self.is_main:
            save_checkpoint(state, self.path("checkpoints", name))

    def close(self) -> None:
        if self.writer:
            self.writer.close()


def flatten(record: dict, prefix: str = "") -> dict:
    """{"stats": {"pixel_w1": 1.0}} -> {"stats/pixel_w1": 1.0}: nested metrics get slash-grouped names."""
    flat = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
