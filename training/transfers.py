"""Count the host-to-device copies and the device-to-host synchronizations of a piece of code.

    with HostTransfers(device) as transfers:
        task.train_step(data.batch(step), step)
    transfers.to_device, transfers.syncs      # how many of each; transfers.events says what and where

A training step that waits for the device (`.item()`, `float(t)`, `if t:`, `.cpu()`, an
operation whose output size depends on device values) or copies numbers from the host one by
one stalls a GPU that is launch-bound. The counter sees every call into torch's Python API
(a TorchFunctionMode) and counts:

- a host-to-device copy: `.to(device)`, `.cuda()` or `copy_` of a host tensor into a device one;
  `torch.tensor(data, device=...)` and the like; a host tensor (not a 0-dim scalar, which travels
  as a kernel argument) used in an operation together with device tensors;
- a synchronization: reading a device tensor on the host (`item`, `float`, `int`, `bool`,
  `tolist`, `numpy`, `cpu`, printing, `torch.equal`, ...), `copy_` of a device tensor into a host
  one, and operations whose output size depends on device values (`nonzero`, `masked_select`,
  `unique`, boolean-mask indexing, one-argument `where`).

On a GPU the tensors' devices say which is which. On the CPU, where host and device are one,
the counter keeps track of what the code meant for the host: a tensor is on the host when it was
made without a device or with the string "cpu" (from Python data, `torch.arange(n)`, a draw from
a host generator, torch's own `torch.tensor(1.0, device="cpu")`) or computed from such tensors
alone, and on the device otherwise (parameters, buffers, tensors made with a torch.device such as
the training device, everything computed from device tensors). So `.to(device)` and
`device=device` with a torch.device are moves to the device, `.cpu()` and `.to("cpu")` moves to
the host. Tensors made before the counter started count as device tensors: start it before the
first step, so the optimizers' host-side step counters are known as host tensors.
"""

import os
import traceback

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakTensorKeyDictionary

Tensor = torch.Tensor
READS = {Tensor.item, Tensor.tolist, Tensor.numpy, Tensor.cpu, Tensor.__float__, Tensor.__int__, Tensor.__bool__,
         Tensor.__index__, Tensor.__complex__, Tensor.__format__, Tensor.__repr__, Tensor.__array__, torch.equal,
         Tensor.equal, torch.allclose, Tensor.allclose, torch.is_nonzero, Tensor.is_nonzero}
DATA_DEPENDENT_SIZE = {torch.nonzero, Tensor.nonzero, torch.argwhere, Tensor.argwhere, torch.masked_select,
                       Tensor.masked_select, torch.unique, Tensor.unique, torch.unique_consecutive,
                       Tensor.unique_consecutive, torch.repeat_interleave, Tensor.repeat_interleave}
FROM_DATA = {torch.tensor, torch.as_tensor, torch.asarray, Tensor.new_tensor}
MOVES = {Tensor.to, Tensor.cuda}
INDEXING = {Tensor.__getitem__, Tensor.__setitem__, Tensor.index_put_, Tensor.index_put, torch.index_put}
HERE = os.path.abspath(__file__)


def _tensors(args, kwargs) -> list[torch.Tensor]:
    return [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]


def _where_called() -> str:
    """file:line of the innermost caller outside torch and this module."""
    torch_dir = os.path.dirname(os.path.abspath(torch.__file__))
    for frame in reversed(traceback.extract_stack()[:-1]):
        path = os.path.abspath(frame.filename)
        if path != HERE and not path.startswith(torch_dir):
            return f"{os.path.relpath(path)}:{frame.lineno}"
    return "?"


class HostTransfers(TorchFunctionMode):
    """See the module docstring. `device`: the training device."""

    def __init__(self, device: torch.device | str):
        super().__init__()
        self.emulated = torch.device(device).type == "cpu"
        self.host = WeakTensorKeyDictionary()  # the CPU's host tensors (emulated mode)
        self.events: list[tuple[str, str, str]] = []  # (kind, function, file:line)

    @property
    def to_device(self) -> int:
        return sum(kind == "to_device" for kind, _, _ in self.events)

    @property
    def syncs(self) -> int:
        return sum(kind == "sync" for kind, _, _ in self.events)

    def on_device(self, t: torch.Tensor) -> bool:
        return t not in self.host if self.emulated else t.device.type != "cpu"

    def _record(self, kind: str, func) -> None:
        self.events.append((kind, getattr(func, "__name__", str(func)), _where_called()))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        inputs = _tensors(args, kwargs)
        device_inputs = [t for t in inputs if self.on_device(t)]
        host_inputs = [t for t in inputs if not self.on_device(t)]
        out = func(*args, **kwargs)

        if func in READS:
            if inputs and self.on_device(inputs[0]):
                self._record("sync", func)
            if func is Tensor.cpu:
                self._tag_host(out)
            return out
        if func in DATA_DEPENDENT_SIZE or (func is torch.where and len(args) + len(kwargs) == 1) or (
                func in INDEXING and any(t.dtype == torch.bool and self.on_device(t) for t in inputs[1:])):
            if device_inputs:
                self._record("sync", func)
        if func is Tensor.copy_:
            destination, source = args[0], args[1]
            if self.on_device(destination) and not self.on_device(source):
                self._record("to_device", func)
            elif not self.on_device(destination) and self.on_device(source):
                self._record("sync", func)
            return out
        target = self._target(func, args, kwargs)
        if target == "device":
            if func in FROM_DATA or host_inputs:
                self._record("to_device", func)
            self._untag(out)
            return out
        if target == "host":
            if device_inputs:
                self._record("sync", func)
            self._tag_host(out)
            return out
        if device_inputs:
            self._record_mixed(func, host_inputs)
        elif self.emulated and (host_inputs or (not inputs and not self._means_device(kwargs.get("device", "cpu")))):
            self._tag_host(out)  # computed from host tensors only, or made on the host
        return out

    def _target(self, func, args, kwargs) -> str | None:
        """Where a move or a tensor made from data goes: "device", "host" or None (stays)."""
        if func in FROM_DATA:
            device = kwargs.get("device")
            if func is Tensor.new_tensor:
                return "device" if device is not None or self.on_device(args[0]) else "host"
            if device is None:
                source = args[0] if args else kwargs.get("data")
                return None if isinstance(source, torch.Tensor) else "host"
            return "device" if self._means_device(device) else "host"
        if func is Tensor.cuda:
            return "device"
        if func is Tensor.to:
            targets = [a for a in (*args[1:], kwargs.get("device")) if isinstance(a, (str, torch.device, int))]
            others = [a for a in args[1:] if isinstance(a, torch.Tensor)]
            if others:
                return "device" if self.on_device(others[0]) else "host"
            if targets:
                return "device" if self._means_device(targets[0]) else "host"
        return None

    def _means_device(self, device) -> bool:
        if self.emulated:
            return not (isinstance(device, str) and torch.device(device).type == "cpu")
        return torch.device(device).type != "cpu"

    def _record_mixed(self, func, host_inputs: list[torch.Tensor]) -> None:
        """Host tensors used with device tensors are copied over (0-dim ones go as kernel arguments)."""
        for t in host_inputs:
            if t.dim() > 0:
                self._record("to_device", func)

    def _tag_host(self, out) -> None:
        if self.emulated:
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor):
                    self.host[t] = True

    def _untag(self, out) -> None:
        if self.emulated:
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor):
                    self.host.pop(t, None)
