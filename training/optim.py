"""Adam with the fastest update the device has: one fused kernel per step on a GPU, multi-tensor
(foreach) operations on the CPU, instead of a Python loop over the parameters.

    opt = adam(G.parameters(), device, lr=0.002, betas=(0.0, 0.99), eps=1e-8)
    load_optimizer_state(opt, checkpoint["optimizers"]["G"])   # keeps this device's implementation

Fused Adam also takes GradScaler's inf check on the device (fp16), so a skipped step costs no
host synchronization.
"""

from collections.abc import Iterable

import torch

IMPLEMENTATION_KEYS = ("fused", "foreach")


def adam(params: Iterable[torch.nn.Parameter], device: torch.device, **hyperparameters) -> torch.optim.Adam:
    if torch.device(device).type == "cuda":
        return torch.optim.Adam(params, fused=True, **hyperparameters)
    return torch.optim.Adam(params, foreach=True, **hyperparameters)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a saved optimizer state, keeping `optimizer`'s own implementation: a checkpoint stores its
    writer's (fused on a GPU, foreach or none on the CPU, none before this module existed) in its
    parameter groups, and loading would otherwise bring that one back."""
    groups = [{**saved, **{key: group.get(key) for key in IMPLEMENTATION_KEYS}}
              for saved, group in zip(state["param_groups"], optimizer.param_groups)]
    optimizer.load_state_dict({**state, "param_groups": groups})
