"""Adam as one fused kernel per step (on a GPU and on the CPU alike) instead of a Python loop over the
parameters.

    opt = adam(G.parameters(), lr=0.002, betas=(0.0, 0.99), eps=1e-8)
    load_optimizer_state(opt, checkpoint["optimizers"]["G"])   # keeps the fused implementation

On a GPU fused Adam also takes GradScaler's inf check on the device (fp16), so a skipped step costs
no host synchronization. On the CPU it is the fastest of the three implementations too: one step
for stylegan2_cpu32's G (56 tensors, 375 k parameters, 1 thread) took 1.0 ms fused, 2.2-3.4 ms
foreach and 3.1-3.8 ms with the loop.
"""

from collections.abc import Iterable

import torch

IMPLEMENTATION_KEYS = ("fused", "foreach")


def adam(params: Iterable[torch.nn.Parameter], **hyperparameters) -> torch.optim.Adam:
    """Fused Adam; the parameters must already be on their device."""
    return torch.optim.Adam(params, fused=True, **hyperparameters)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a saved optimizer state, keeping `optimizer`'s own implementation: a checkpoint stores its
    writer's in its parameter groups (none, the per-parameter loop, before this module existed), and
    loading would otherwise bring that one back."""
    groups = [{**saved, **{key: group.get(key) for key in IMPLEMENTATION_KEYS}}
              for saved, group in zip(state["param_groups"], optimizer.param_groups)]
    optimizer.load_state_dict({**state, "param_groups": groups})
