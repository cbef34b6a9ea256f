"""Just-in-time build of the CUDA extension in ops/csrc.

The extension is compiled on first use (never at import) with
torch.utils.cpp_extension and ninja into

    $SMALLGAN_OPS_CACHE or $XDG_CACHE_HOME/smallgan/ops or ~/.cache/smallgan/ops
        /<key>/          finished build (appears atomically, by rename)
        /<key>.lock      build lock
        /<key>.failed    reason of a recent failed build

where <key> hashes the sources, the torch and CUDA versions, the toolkit, the
Python ABI and the GPU architectures. Processes started together (torchrun)
build once: the first takes the lock and compiles into a private temporary
folder, the others wait and then load the result. The lock is an flock(2)
lock, which the kernel drops when its holder dies, so a build killed halfway
leaves nothing that blocks the next start; its temporary folder is removed by
the next build. Waiting is bounded (SMALLGAN_OPS_BUILD_TIMEOUT seconds).

When the extension cannot be had (no GPU, PyTorch without CUDA, no nvcc,
ninja or C++ compiler, a TORCH_CUDA_ARCH_LIST with no code for this GPU, or a
failed build), `load()` raises BuildUnavailable and the ops use the PyTorch
reference; ops/_dispatch.py warns once with the reason. A build that loads
is then checked against the reference before its first use
(ops/_selfcheck.py).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import importlib.machinery
import importlib.util
import os
import re
import shutil
import sys
import time
import uuid

import torch

ENV_CACHE = "SMALLGAN_OPS_CACHE"
ENV_TIMEOUT = "SMALLGAN_OPS_BUILD_TIMEOUT"
DEFAULT_TIMEOUT_S = 900.0
# Other processes do not retry a failed build for this long (delete
# <key>.failed to retry at once).
FAILED_BUILD_HOLDOFF_S = 600.0

CSRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc")
SOURCES = ["ops.cpp", "upfirdn2d.cu", "bias_act.cu"]
HEADERS = ["common.h", "upfirdn2d.h", "bias_act.h", "launch.h"]


class BuildUnavailable(RuntimeError):
    """The extension cannot be built or loaded here; the message says why."""


# ----------------------------------------------------------------------------
# Environment.


def cache_root() -> str:
    """Folder that holds the builds."""
    if os.environ.get(ENV_CACHE):
        return os.path.abspath(os.path.expanduser(os.environ[ENV_CACHE]))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "smallgan", "ops")


def find_cuda_home() -> str | None:
    """The CUDA toolkit root: $CUDA_HOME or $CUDA_PATH, else the one that
    holds nvcc and the CUDA headers. (torch's own guess takes the parent of
    whatever `nvcc` is on PATH, which is wrong when that is a wrapper script.)"""
    candidates = [c for c in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")) if c]
    if not candidates:
        nvcc = shutil.which("nvcc")
        if nvcc:
            candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
        candidates += ["/usr/local/cuda", "/opt/cuda"]
    for home in candidates:
        if os.path.isfile(os.path.join(home, "bin", "nvcc")) and os.path.isfile(
            os.path.join(home, "include", "cuda_runtime.h")
        ):
            return home
    return None


def default_arch_list() -> str:
    """$TORCH_CUDA_ARCH_LIST cut to the entries that run on the current GPU (the others would only
    lengthen the build), else the architecture of the current GPU."""
    capability = torch.cuda.get_device_capability()
    if os.environ.get("TORCH_CUDA_ARCH_LIST"):
        return runnable_arch_list(os.environ["TORCH_CUDA_ARCH_LIST"], capability)
    return "{}.{}".format(*capability)


def parse_arch_list(arch_list: str) -> list[tuple[int, int, str, bool]]:
    """(major, minor, suffix 'a'/'f'/'', with PTX) for each entry of an arch
    list like '8.6;9.0+PTX' or '9.0a'."""
    entries = []
    for entry in re.split(r"[;\s,]+", arch_list.strip()):
        if not entry:
            continue
        match = re.fullmatch(r"(\d+)\.(\d+)([af]?)(\+PTX)?", entry)
        if not match:
            raise BuildUnavailable(f"cannot parse CUDA architecture {entry!r} (expected e.g. '9.0' or '8.6+PTX')")
        entries.append((int(match[1]), int(match[2]), match[3], bool(match[4])))
    if not entries:
        raise BuildUnavailable("empty CUDA architecture list")
    return entries


def arch_flags(arch_list: str) -> list[str]:
    """nvcc -gencode flags for an arch list like '8.6;9.0+PTX' or '9.0a'."""
    flags = []
    for major, minor, suffix, ptx in parse_arch_list(arch_list):
        arch = f"{major}{minor}{suffix}"
        flags.append(f"-gencode=arch=compute_{arch},code=sm_{arch}")
        if ptx:
            flags.append(f"-gencode=arch=compute_{arch},code=compute_{arch}")
    return flags


def runs_on(entry: tuple[int, int, str, bool], capability: tuple[int, int]) -> bool:
    """Whether code built for one parse_arch_list entry runs on a GPU of compute `capability`:
    machine code for X.Y runs on X.Z with Z >= Y ('a' code only on X.Y itself); PTX for X.Y is
    compiled by the driver for any later GPU."""
    arch_major, arch_minor, suffix, ptx = entry
    major, minor = capability
    if ptx and (arch_major, arch_minor) <= (major, minor):
        return True
    return arch_major == major and (arch_minor == minor or (arch_minor < minor and suffix != "a"))


def runnable_arch_list(arch_list: str, capability: tuple[int, int]) -> str:
    """The entries of `arch_list` that run on `capability` ('8.0;9.0+PTX' on 9.0 -> '9.0+PTX'); all of
    it when none does, so that check_arch_list names the problem."""
    kept = [f"{major}.{minor}{suffix}{'+PTX' if ptx else ''}" for major, minor, suffix, ptx
            in parse_arch_list(arch_list) if runs_on((major, minor, suffix, ptx), capability)]
    return ";".join(kept) if kept else arch_list


def check_arch_list(arch_list: str, capability: tuple[int, int]) -> None:
    """Raises BuildUnavailable when nothing built for `arch_list` can run on a
    GPU of compute `capability` (see runs_on), instead of a build whose every launch fails
    with "no kernel image is available for execution on the device"."""
    if any(runs_on(entry, capability) for entry in parse_arch_list(arch_list)):
        return
    major, minor = capability
    raise BuildUnavailable(
        f"TORCH_CUDA_ARCH_LIST={arch_list!r} has no code that runs on this GPU (compute capability "
        f"{major}.{minor}); add '{major}.{minor}' to it or unset it"
    )


def build_key(arch_list: str, cuda_home: str) -> str:
    """Hash of everything the compiled extension depends on."""
    h = hashlib.sha256()
    for name in SOURCES + HEADERS:
        with open(os.path.join(CSRC, name), "rb") as fh:
            h.update(name.encode() + b"\0" + fh.read() + b"\0")
    for part in (torch.__version__, torch.version.cuda, cuda_home, arch_list, sys.implementation.cache_tag, sys.platform):
        h.update(str(part).encode() + b"\0")
    return h.hexdigest()[:20]


# ----------------------------------------------------------------------------
# Locked, atomic build into the cache.


@contextlib.contextmanager
def build_lock(path: str, timeout: float):
    """Exclusive flock on `path`, waiting at most `timeout` seconds.

    flock locks belong to the open file: the kernel releases them when the
    holder exits or is killed, so a dead builder never leaves a stale lock.
    Raises TimeoutError when a live holder keeps it longer than `timeout`.
    """
    import filelock  # a PyTorch dependency

    lock = filelock.FileLock(path)
    try:
        lock.acquire(timeout=timeout, poll_interval=0.2)
    except filelock.Timeout:
        raise TimeoutError(f"waited {timeout:.0f} s for the build lock {path}") from None
    try:
        yield
    finally:
        lock.release()


def ensure_built(target: str, build_fn, timeout: float) -> str:
    """Makes sure the folder `target` holds a finished build and returns it.

    build_fn(tmp_dir) compiles into an empty private folder; it is renamed to
    `target` only when it succeeds, so `target` never holds a partial build.
    """
    if os.path.isdir(target):
        return target
    os.makedirs(os.path.dirname(target), exist_ok=True)
    failed = target + ".failed"
    _raise_if_recently_failed(failed)
    with build_lock(target + ".lock", timeout):
        if os.path.isdir(target):  # another process built it while we waited
            return target
        _raise_if_recently_failed(failed)
        # Holding the lock, no one else is building this key: any temporary
        # folder left is from a build that was killed.
        for stale in glob.glob(glob.escape(target) + ".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = f"{target}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        os.makedirs(tmp)
        try:
            build_fn(tmp)
        except Exception as e:
            shutil.rmtree(tmp, ignore_errors=True)
            with open(failed, "w") as fh:
                fh.write(_one_line(e))
            raise
        os.replace(tmp, target)
        with contextlib.suppress(FileNotFoundError):
            os.remove(failed)
    return target


def _raise_if_recently_failed(failed: str):
    try:
        age = time.time() - os.path.getmtime(failed)
    except FileNotFoundError:
        return
    if age < FAILED_BUILD_HOLDOFF_S:
        with open(failed) as fh:
            reason = fh.read().strip()
        raise BuildUnavailable(f"a build {age:.0f} s ago failed ({reason}); delete {failed} to retry now")


def _one_line(e: BaseException) -> str:
    """Short description of a build error: its last non-empty 'error' line."""
    text = str(e).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower()]
    line = (errors or lines or [type(e).__name__])[-1]
    return f"{type(e).__name__}: {line[:300]}"


# ----------------------------------------------------------------------------
# Compiling and loading.


def module_name(key: str) -> str:
    return f"smallgan_ops_{key}"


def compile_extension(build_dir: str, name: str, arch_list: str, cuda_home: str, verbose: bool = False):
    """Compiles and links the extension into build_dir with ninja (no GPU needed)."""
    import torch.utils.cpp_extension as cpp

    if not cpp.is_ninja_available():
        raise BuildUnavailable("ninja is not installed (pip install ninja)")
    # torch fixed its CUDA_HOME guess at import time; use the toolkit found here.
    cpp.CUDA_HOME = cuda_home
    cpp.load(
        name=name,
        sources=[os.path.join(CSRC, s) for s in SOURCES],
        extra_include_paths=[CSRC],
        extra_cflags=["-O3"],
        extra_cuda_cflags=["-O3"] + arch_flags(arch_list),
        build_directory=build_dir,
        with_cuda=True,
        is_python_module=True,
        verbose=verbose,
    )


def import_extension(build_dir: str, name: str):
    """Imports the compiled module from build_dir."""
    if name in sys.modules:
        return sys.modules[name]
    path = os.path.join(build_dir, name + importlib.machinery.EXTENSION_SUFFIXES[-1])
    if not os.path.isfile(path):
        path = os.path.join(build_dir, name + ".so")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[name] = module
    return module


def check_prerequisites() -> str:
    """Returns the CUDA toolkit root, or raises BuildUnavailable saying what is missing."""
    if torch.version.cuda is None:
        raise BuildUnavailable(f"this PyTorch ({torch.__version__}) was built without CUDA")
    if not torch.cuda.is_available():
        raise BuildUnavailable("no CUDA device is available")
    cuda_home = find_cuda_home()
    if cuda_home is None:
        raise BuildUnavailable("no CUDA toolkit found (nvcc and headers); set CUDA_HOME")
    import torch.utils.cpp_extension as cpp

    _put_python_scripts_on_path()
    if not cpp.is_ninja_available():
        raise BuildUnavailable("ninja is not installed (pip install ninja)")
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        raise BuildUnavailable(f"no C++ compiler ({compiler!r} not found)")
    return cuda_home


def _put_python_scripts_on_path() -> None:
    """Puts the folder of this Python's scripts on PATH when it is missing.

    pip installs ninja there; a virtual environment used without activating
    it (its python3 called by full path) otherwise has ninja but no way for
    torch.utils.cpp_extension to find it.
    """
    scripts = os.path.dirname(sys.executable)
    if shutil.which("ninja") is None and os.path.isfile(os.path.join(scripts, "ninja")):
        os.environ["PATH"] = scripts + os.pathsep + os.environ.get("PATH", "")


_module = None
_error: BuildUnavailable | None = None


def load():
    """The compiled extension module; raises BuildUnavailable (remembered for
    the rest of the process) when it cannot be built or loaded."""
    global _module, _error
    if _module is not None:
        return _module
    if _error is not None:
        raise _error
    try:
        cuda_home = check_prerequisites()
        arch_list = default_arch_list()
        check_arch_list(arch_list, torch.cuda.get_device_capability())
        key = build_key(arch_list, cuda_home)
        name = module_name(key)
        target = os.path.join(cache_root(), key)
        timeout = float(os.environ.get(ENV_TIMEOUT, DEFAULT_TIMEOUT_S))
        ensure_built(target, lambda tmp: compile_extension(tmp, name, arch_list, cuda_home), timeout)
        _module = import_extension(target, name)
    except BuildUnavailable as e:
        _error = e
    except Exception as e:  # compiler errors, timeouts, import errors
        _error = BuildUnavailable(f"building the CUDA extension failed: {_one_line(e)}")
        _error.__cause__ = e
    if _error is not None:
        raise _error
    return _module
