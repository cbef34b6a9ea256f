"""Tests of the CUDA side of ops/ that need no GPU.

- The CUDA sources compile and link with nvcc (about 30-60 s on 2 cores).
- The kernel logic (ops/csrc/*.h) is compiled for the CPU with the host
  compiler and checked against the PyTorch reference: the same tiling,
  indexing and derivative code that runs on the GPU, block by block.
- The build cache: one build for several processes, a killed build's lock
  does not hang the next start, failures fall back with one warning.

Run: python -m pytest tests/test_ops_cuda_build.py -q
"""

import ctypes
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import pytest
import torch

import ops
from ops import _build, _dispatch, _selfcheck
from ops.bias_act import _bias_act_ref, activation_funcs
from ops.upfirdn2d import _upfirdn2d_ref

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(REPO, "ops", "csrc")


def _run_python(code, env=None, timeout=300):
    """Runs a snippet in a fresh interpreter at the repo root."""
    full_env = dict(os.environ, PYTHONPATH=REPO, **(env or {}))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ----------------------------------------------------------------------------
# nvcc.


def test_cuda_sources_compile_with_nvcc(tmp_path):
    # torch fixes its CUDA_HOME guess at import, so build in a fresh process
    # with the toolkit location and a target architecture set.
    code = f"""
        import os
        from ops import _build
        cuda_home = _build.find_cuda_home()
        assert cuda_home, "no CUDA toolkit found"
        key = _build.build_key("9.0", cuda_home)
        name = _build.module_name(key)
        target = os.path.join({str(tmp_path)!r}, key)
        _build.ensure_built(target, lambda tmp: _build.compile_extension(tmp, name, "9.0", cuda_home), timeout=60)
        module = _build.import_extension(target, name)
        print("BUILT", sorted(n for n in dir(module) if not n.startswith("_")))
        # The bindings accept the arguments ops/_custom.py passes (a signature
        # mismatch would raise TypeError) and refuse CPU tensors cleanly.
        import torch
        x = torch.zeros(1, 1, 4, 4)
        for call in (
            lambda: module.upfirdn2d(x, torch.ones(3), x, 2, 2, 1, 1, 2, 2, False, 4.0),
            lambda: module.bias_act(x, None, None, x, 1, 2, 0, 0.2, 1.4, -1.0),
            lambda: module.bias_act(x, torch.zeros(1), x, x, 1, 2, 1, 0.2, 1.4, 0.5),
        ):
            try:
                call()
            except RuntimeError as e:
                assert "must be on a CUDA device" in str(e), e
            else:
                raise AssertionError("CPU tensors were accepted")
        print("BINDINGS OK")
    """
    env = {"CUDA_HOME": "/usr/local/cuda", "TORCH_CUDA_ARCH_LIST": "9.0", "MAX_JOBS": "2"}
    result = _run_python(code, env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "BUILT ['bias_act', 'upfirdn2d']" in result.stdout and "BINDINGS OK" in result.stdout
    (build,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert any(p.name.endswith(".so") for p in build.iterdir())
    assert not list(tmp_path.glob("*.tmp-*"))


# ----------------------------------------------------------------------------
# CPU emulation of the kernels.


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    compiler = os.environ.get("CXX", "c++")
    lib_path = tmp_path_factory.mktemp("emulator") / "emulate.so"
    cmd = [compiler, "-std=c++17", "-O1", "-shared", "-fPIC", "-Wall", "-I", CSRC]
    subprocess.run(cmd + [os.path.join(CSRC, "emulate.cpp"), "-o", str(lib_path)], check=True)
    return ctypes.CDLL(str(lib_path))


def _ptr(t):
    return ctypes.c_void_p(t.data_ptr())


def emulate_upfirdn2d(lib, x, f, up, down, pad, flip_filter, gain, max_grid_y=65535):
    """Runs the kernel logic on the CPU; returns (y, plan, out-of-tile reads)."""
    (upx, upy), (downx, downy), (px0, px1, py0, py1) = up, down, pad
    f = f.to(x.dtype).contiguous()
    n, c, h, w = x.shape
    fh, fw = (f.shape[0], f.shape[0]) if f.ndim == 1 else f.shape
    out_h = (h * upy + py0 + py1 - fh + downy) // downy
    out_w = (w * upx + px0 + px1 - fw + downx) // downx
    y = torch.full((n, c, out_h, out_w), float("nan"), dtype=x.dtype)
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        y = y.contiguous(memory_format=torch.channels_last)
    ints = (ctypes.c_int64 * 16)(n, c, h, w, out_h, out_w, upx, upy, downx, downy, px0, py0, fh, fw, f.ndim == 1, flip_filter)
    strides = (ctypes.c_int64 * 8)(*x.stride(), *y.stride())
    plan = (ctypes.c_int64 * 5)()
    fn = lib.sg_emulate_upfirdn2d_f64 if x.dtype == torch.float64 else lib.sg_emulate_upfirdn2d_f32
    violations = fn(_ptr(x), _ptr(f), _ptr(y), ints, strides, ctypes.c_double(gain), ctypes.c_int64(max_grid_y), plan)
    return y, list(plan), violations


def _random_upfirdn2d_case(rng):
    up = (rng.choice([1, 2, 3]), rng.choice([1, 2, 4]))
    down = (rng.choice([1, 2, 3]), rng.choice([1, 2]))
    if rng.random() < 0.3:
        f = torch.randn(rng.randint(1, 8), dtype=torch.float64)
        fh = fw = f.shape[0]
    else:
        fh, fw = rng.randint(1, 7), rng.randint(1, 7)
        f = torch.randn(fh, fw, dtype=torch.float64)
    pad = tuple(rng.randint(-3, 5) for _ in range(4))
    shape = (rng.randint(1, 3), rng.randint(1, 5), rng.randint(1, 40), rng.randint(1, 40))
    out_h = (shape[2] * up[1] + pad[2] + pad[3] - fh + down[1]) // down[1]
    out_w = (shape[3] * up[0] + pad[0] + pad[1] - fw + down[0]) // down[0]
    if out_h < 1 or out_w < 1:
        return None
    return shape, f, up, down, pad


def test_emulated_upfirdn2d_kernel_matches_reference(emulator):
    rng = random.Random(0)
    checked = 0
    while checked < 150:
        case = _random_upfirdn2d_case(rng)
        if case is None:
            continue
        shape, f, up, down, pad = case
        x = torch.randn(shape, dtype=torch.float64)
        if rng.random() < 0.3:
            x = x.contiguous(memory_format=torch.channels_last)
        flip_filter, gain = rng.random() < 0.5, rng.choice([1.0, 2.5])
        max_grid_y = rng.choice([65535, 1, 2])  # small grids exercise the plane-group loop
        y, plan, violations = emulate_upfirdn2d(emulator, x, f, up, down, pad, flip_filter, gain, max_grid_y)
        expected = _upfirdn2d_ref(x, f, *up, *down, *pad, flip_filter, gain)
        assert violations == 0, (case, plan)
        torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12, msg=lambda m: f"{m}\n{case} plan={plan}")
        checked += 1


@pytest.mark.parametrize(
    "shape,up,down,pad",
    [
        ((32, 256, 4, 4), (2, 2), (1, 1), (2, 1, 2, 1)),  # G upsampling, 16 planes per block
        ((2, 3, 64, 64), (1, 1), (2, 2), (1, 1, 1, 1)),  # D downsampling, several tiles
        ((1, 2, 70, 9), (1, 1), (1, 1), (2, 2, 2, 2)),  # tall image, ragged tiles
    ],
)
def test_emulated_upfirdn2d_stylegan_shapes_float32(emulator, shape, up, down, pad):
    x = torch.randn(shape)
    f = ops.setup_filter([1, 3, 3, 1])
    y, plan, violations = emulate_upfirdn2d(emulator, x, f, up, down, pad, False, 4.0)
    assert violations == 0 and plan[3] <= 256 and plan[4] <= 48 * 1024
    torch.testing.assert_close(y, _upfirdn2d_ref(x, f, *up, *down, *pad, False, 4.0), rtol=1e-5, atol=1e-5)


def test_emulated_upfirdn2d_large_filter_shrinks_tiles(emulator):
    # A 32x32 filter with down 2 needs a smaller tile to fit 48 KiB.
    x = torch.randn(1, 2, 80, 80, dtype=torch.float64)
    f = torch.randn(32, 32, dtype=torch.float64)
    y, plan, violations = emulate_upfirdn2d(emulator, x, f, (1, 1), (2, 2), (16, 15, 16, 15), True, 1.0)
    assert violations == 0 and plan[4] <= 48 * 1024 and plan[0] * plan[1] < 32 * 32
    torch.testing.assert_close(y, _upfirdn2d_ref(x, f, 1, 1, 2, 2, 16, 15, 16, 15, True, 1.0))


def emulate_bias_act(lib, x, b, dy, dim, act, alpha, gain, clamp, order):
    x = x.contiguous()
    out = torch.empty_like(x)
    fn = lib.sg_emulate_bias_act_f64 if x.dtype == torch.float64 else lib.sg_emulate_bias_act_f32
    fn.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int64] * 3 + [ctypes.c_int] * 2 + [ctypes.c_double] * 3
    fn(
        _ptr(x),
        _ptr(b) if b is not None else None,
        _ptr(dy) if dy is not None else None,
        _ptr(out),
        x.numel(),
        x.stride(dim),
        x.shape[dim],
        activation_funcs[act].code,
        order,
        alpha,
        gain,
        clamp,
    )
    return out


@pytest.mark.parametrize("act", list(activation_funcs))
@pytest.mark.parametrize("clamp", [-1.0, 0.6])
def test_emulated_bias_act_kernel_matches_autograd(emulator, act, clamp):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64) * 3
    x[0, 0, 0, :3] = torch.tensor([0.0, 25.0, -30.0], dtype=torch.float64)  # kink, softplus threshold, far tail
    b = torch.randn(5, dtype=torch.float64)
    dy = torch.randn_like(x)
    alpha, gain, dim = 0.3, 1.7, 3
    z = (x + b).requires_grad_()
    y = _bias_act_ref(z, None, dim, act, alpha, gain, clamp)
    (d1,) = torch.autograd.grad(y, z, torch.ones_like(y), create_graph=True)
    d2 = None
    if d1.requires_grad:  # not for linear, whose derivative is a constant
        (d2,) = torch.autograd.grad(d1, z, torch.ones_like(d1), allow_unused=True)
    d2 = torch.zeros_like(z) if d2 is None else d2
    kwargs = dict(dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)
    torch.testing.assert_close(emulate_bias_act(emulator, x, b, None, order=0, **kwargs), y.detach())
    torch.testing.assert_close(emulate_bias_act(emulator, x, b, dy, order=1, **kwargs), dy * d1.detach())
    torch.testing.assert_close(emulate_bias_act(emulator, x, b, dy, order=2, **kwargs), dy * d2.detach())
    # float32 and no bias
    x32 = x.float()
    expected = _bias_act_ref(x32, None, dim, act, alpha, gain, clamp)
    torch.testing.assert_close(emulate_bias_act(emulator, x32, None, None, order=0, **kwargs), expected)


def test_upfirdn2d_size_check_allows_64bit_offsets(emulator):
    # The kernel addresses memory with 64-bit offsets: only single images,
    # the plane count and image coordinates must fit 32 bits.
    def fits(n, c, h, w, up=1, down=1, pad=0, taps=4):
        out = (h * up + 2 * pad - taps + down) // down, (w * up + 2 * pad - taps + down) // down
        ints = (ctypes.c_int64 * 16)(n, c, h, w, *out, up, up, down, down, pad, pad, taps, taps, 0, 0)
        return bool(emulator.sg_upfirdn2d_sizes_fit(ints))

    assert fits(64, 512, 256, 256)  # 2^31 elements: refused before, fine now
    assert fits(1024, 1024, 128, 128, up=2, pad=2)  # 2^34 elements in, 2^36 out
    assert fits(1, 1, 40000, 40000, down=2, pad=1)  # 1.6e9 pixels in one image
    assert not fits(1, 1, 50000, 50000)  # one image of more than 2^31 pixels
    assert not fits(2**16, 2**15, 4, 4)  # 2^31 planes
    assert not fits(1, 1, 2, 2**30, up=2, pad=1)  # upsampled coordinates past 2^31


class EmulatedExtension:
    """The two bindings of the compiled extension (ops/csrc/ops.cpp), run by
    the CPU emulation of the kernels; float16/bfloat16 go through float32."""

    def __init__(self, lib):
        self.lib = lib

    def upfirdn2d(self, x, f, y, up_x, up_y, down_x, down_y, pad_x0, pad_y0, flip_filter, gain):
        fw = f.shape[-1]
        fh = f.shape[0]
        # The binding gets no far-side padding: the output size implies it.
        pad_x1 = y.shape[3] * down_x - x.shape[3] * up_x - pad_x0 + fw - down_x
        pad_y1 = y.shape[2] * down_y - x.shape[2] * up_y - pad_y0 + fh - down_y
        wide = x if x.dtype == torch.float64 else x.float()
        result, _, violations = emulate_upfirdn2d(self.lib, wide, f, (up_x, up_y), (down_x, down_y),
                                                  (pad_x0, pad_x1, pad_y0, pad_y1), flip_filter, gain)
        assert violations == 0 and result.shape == y.shape
        y.copy_(result)

    def bias_act(self, x, b, dy, out, dim, act, order, alpha, gain, clamp):
        (name,) = [n for n, spec in activation_funcs.items() if spec.code == act]

        def wide(t):
            return t if t is None or t.dtype == torch.float64 else t.float()

        out.copy_(emulate_bias_act(self.lib, wide(x), wide(b), wide(dy), dim, name, alpha, gain, clamp, order))


def test_self_check_passes_on_the_emulated_kernels(emulator):
    _selfcheck.verify(EmulatedExtension(emulator), torch.device("cpu"))
    # in whatever mode the first op call happens
    with torch.inference_mode():
        _selfcheck.verify(EmulatedExtension(emulator), torch.device("cpu"), dtypes=(torch.float32,))


class WrongFilterOrientation(EmulatedExtension):
    def upfirdn2d(self, x, f, y, *args):
        super().upfirdn2d(x, f, y, *args[:-2], not args[-2], args[-1])


class SkipsLastPixel(EmulatedExtension):
    def upfirdn2d(self, x, f, y, *args):
        last = y[..., -1, -1].clone()
        super().upfirdn2d(x, f, y, *args)
        y[..., -1, -1] = last


class FirstDerivativeForSecond(EmulatedExtension):
    def bias_act(self, x, b, dy, out, dim, act, order, *args):
        super().bias_act(x, b, dy, out, dim, act, min(order, 1), *args)


class WrongHalfPrecision(EmulatedExtension):
    def bias_act(self, x, b, dy, out, *args):
        super().bias_act(x, b, dy, out, *args)
        if out.dtype == torch.bfloat16:
            out.mul_(1.1)


class NoKernelImage(EmulatedExtension):
    def upfirdn2d(self, *args):
        raise RuntimeError("smallgan ops: upfirdn2d launch failed: no kernel image is available for execution "
                           "on the device")


@pytest.mark.parametrize("broken,message", [
    (WrongFilterOrientation, "upfirdn2d mixed forward float32: relative error"),
    (SkipsLastPixel, "upfirdn2d upsample2d forward float32: 6 of 720 values are NaN"),
    (FirstDerivativeForSecond, "bias_act lrelu derivative 2 float32: relative error"),
    (WrongHalfPrecision, "bias_act lrelu forward bfloat16: relative error"),
    (NoKernelImage, "upfirdn2d upsample2d forward float32: smallgan ops: upfirdn2d launch failed: no kernel image"),
], ids=lambda v: v.__name__ if isinstance(v, type) else "")
def test_self_check_catches_broken_kernels(emulator, broken, message):
    with pytest.raises(_selfcheck.KernelCheckFailed) as failure:
        _selfcheck.verify(broken(emulator), torch.device("cpu"))
    assert str(failure.value).startswith(message), failure.value


def test_failed_self_check_falls_back_with_one_warning(monkeypatch):
    checks = []

    def failing_check(module, device):
        checks.append(device)
        raise _selfcheck.KernelCheckFailed("upfirdn2d upsample2d forward float32: relative error 3.1e-01")

    monkeypatch.setattr(_build, "load", lambda: "the extension")
    monkeypatch.setattr(_selfcheck, "verify", failing_check)
    monkeypatch.setattr(_selfcheck, "_passed", False)
    monkeypatch.setattr(_selfcheck, "_failure", None)
    monkeypatch.setattr(_dispatch, "_warned", False)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Test GPU")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert not _dispatch.extension_available()
        assert not _dispatch.extension_available()
    assert checks == [torch.device("cuda", 0)]  # checked once, the failure remembered
    (message,) = [str(w.message) for w in caught]
    assert "reference instead of the CUDA kernels" in message
    assert "first-use check on Test GPU (compute capability 9.0): upfirdn2d upsample2d forward float32" in message

    # A passing check is also made once, and the CUDA path is used.
    monkeypatch.setattr(_selfcheck, "_failure", None)
    monkeypatch.setattr(_selfcheck, "verify", lambda module, device: checks.append(device))
    assert _dispatch.extension_available() and _dispatch.extension_available()
    assert len(checks) == 2


def test_self_check_runs_when_first_reached_inside_torch_compile(emulator, monkeypatch):
    # Under torch.compile the first op call may come while dynamo traces: the
    # check then runs as Python at trace time, with real tensors and autograd.
    compiling = []

    def check_on_cpu(module, device):
        compiling.append(torch.compiler.is_compiling())
        verify(module, torch.device("cpu"), dtypes=(torch.float32,))

    verify = _selfcheck.verify
    monkeypatch.setattr(_build, "load", lambda: EmulatedExtension(emulator))
    monkeypatch.setattr(_selfcheck, "verify", check_on_cpu)
    monkeypatch.setattr(_selfcheck, "_passed", False)
    monkeypatch.setattr(_selfcheck, "_failure", None)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)

    def step(x):
        with torch.no_grad():
            return x * 2 if _dispatch.extension_available() else x - 1

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = torch.compile(step, fullgraph=True, backend="aot_eager")(torch.ones(3))
    assert torch.equal(result, torch.full((3,), 2.0)) and compiling == [True]
    assert not [w for w in caught if "smallgan ops" in str(w.message)]


def test_arch_list_must_cover_the_device():
    for arch_list in ("9.0", "8.0;9.0", "8.0 9.0a", "8.0+PTX", "7.5;8.6+PTX", "9.0f"):
        _build.check_arch_list(arch_list, (9, 0))
    _build.check_arch_list("8.0", (8, 6))  # sm_80 machine code runs on 8.6
    for arch_list, capability in [("8.0;8.6", (9, 0)), ("9.0", (8, 0)), ("9.0+PTX", (8, 9)), ("8.6a", (8, 9)),
                                  ("10.0", (9, 0))]:
        with pytest.raises(_build.BuildUnavailable, match="has no code that runs on this GPU"):
            _build.check_arch_list(arch_list, capability)


def test_arch_list_is_cut_to_what_runs_on_the_device(monkeypatch):
    """A long TORCH_CUDA_ARCH_LIST builds only the code this GPU can run (a shorter build); one with
    nothing for it is left whole, for check_arch_list's error."""
    assert _build.runnable_arch_list("7.5;8.0;8.6;9.0+PTX;9.0a;10.0", (9, 0)) == "9.0+PTX;9.0a"
    assert _build.runnable_arch_list("8.0 8.6a 8.9", (8, 9)) == "8.0;8.9"
    assert _build.runnable_arch_list("7.5+PTX;10.0", (9, 0)) == "7.5+PTX"
    assert _build.runnable_arch_list("8.0;8.6", (9, 0)) == "8.0;8.6"
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "7.0;8.0;9.0")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 6))
    assert _build.default_arch_list() == "8.0"


def test_tensor_arguments_must_be_on_the_input_device():
    x = torch.randn(1, 2, 4, 4)
    with pytest.raises(ValueError, match="b is on meta but x is on cpu"):
        ops.bias_act(x, torch.zeros(2, device="meta"), act="lrelu")
    with pytest.raises(ValueError, match="the filter is on meta but x is on cpu"):
        ops.upfirdn2d(x, ops.setup_filter([1, 3, 3, 1], device="meta"), up=2)


# ----------------------------------------------------------------------------
# Build cache and locking.


def test_cache_root_and_arch_flags(monkeypatch, tmp_path):
    monkeypatch.setenv(_build.ENV_CACHE, str(tmp_path / "c"))
    assert _build.cache_root() == str(tmp_path / "c")
    monkeypatch.delenv(_build.ENV_CACHE)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert _build.cache_root() == str(tmp_path / "smallgan" / "ops")
    assert _build.arch_flags("9.0") == ["-gencode=arch=compute_90,code=sm_90"]
    assert _build.arch_flags("8.6;9.0a+PTX") == [
        "-gencode=arch=compute_86,code=sm_86",
        "-gencode=arch=compute_90a,code=sm_90a",
        "-gencode=arch=compute_90a,code=compute_90a",
    ]
    with pytest.raises(_build.BuildUnavailable):
        _build.arch_flags("Hopper")
    assert _build.build_key("9.0", "/usr/local/cuda") != _build.build_key("8.0", "/usr/local/cuda")
    assert _build.build_key("9.0", "/usr/local/cuda") == _build.build_key("9.0", "/usr/local/cuda")


# A stand-in build: records that it ran, takes a while, writes an artifact.
FAKE_BUILD = """
import os, sys, time
from ops import _build
target, log = sys.argv[1], sys.argv[2]
def build(tmp):
    with open(log, "a") as fh:
        fh.write(f"{os.getpid()}\\n")
    time.sleep(1.0)
    with open(os.path.join(tmp, "artifact"), "w") as fh:
        fh.write("ok")
_build.ensure_built(target, build, timeout=60)
print("READY", open(os.path.join(target, "artifact")).read())
"""


def test_concurrent_processes_build_once(tmp_path):
    target, log = str(tmp_path / "key"), str(tmp_path / "builds.log")
    env = dict(os.environ, PYTHONPATH=REPO)
    procs = [
        subprocess.Popen([sys.executable, "-c", FAKE_BUILD, target, log], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert all("READY ok" in out for out in outputs)
    with open(log) as fh:
        assert len(fh.read().split()) == 1


def test_killed_build_leaves_no_stale_lock(tmp_path):
    target = str(tmp_path / "key")
    # A builder that takes the lock, starts its temporary folder and hangs.
    hang = f"""
import os, sys, time
from ops import _build
def build(tmp):
    print("BUILDING", flush=True)
    time.sleep(600)
_build.ensure_built({target!r}, build, timeout=60)
"""
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.Popen([sys.executable, "-c", hang], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "BUILDING"
        # While it lives, waiting is bounded.
        with pytest.raises(TimeoutError):
            _build.ensure_built(target, lambda tmp: None, timeout=0.5)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert os.path.exists(target + ".lock") and len(list(tmp_path.glob("key.tmp-*"))) == 1
    start = time.monotonic()
    _build.ensure_built(target, lambda tmp: open(os.path.join(tmp, "artifact"), "w").close(), timeout=5)
    assert time.monotonic() - start < 5
    assert os.path.isfile(os.path.join(target, "artifact"))
    assert not list(tmp_path.glob("key.tmp-*"))  # the killed build's leftovers are gone


def test_failed_build_is_not_retried_at_once(tmp_path):
    target = str(tmp_path / "key")
    calls = []

    def failing(tmp):
        calls.append(tmp)
        raise RuntimeError("nvcc: error: something broke")

    with pytest.raises(RuntimeError):
        _build.ensure_built(target, failing, timeout=5)
    with pytest.raises(_build.BuildUnavailable, match="something broke"):
        _build.ensure_built(target, failing, timeout=5)
    assert len(calls) == 1 and not os.path.exists(target)
    os.remove(target + ".failed")
    _build.ensure_built(target, lambda tmp: None, timeout=5)
    assert os.path.isdir(target)


def test_load_without_gpu_reports_why_and_builds_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv(_build.ENV_CACHE, str(tmp_path))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(_build, "_module", None)
    monkeypatch.setattr(_build, "_error", None)
    with pytest.raises(_build.BuildUnavailable, match="no CUDA device|without CUDA"):
        _build.load()
    assert not list(tmp_path.iterdir())


def test_fallback_warns_once(monkeypatch):
    def unavailable():
        raise _build.BuildUnavailable("no compiler (test)")

    monkeypatch.setattr(_build, "load", unavailable)
    monkeypatch.setattr(_dispatch, "_warned", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert not _dispatch.extension_available()
        assert not _dispatch.extension_available()
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "no compiler (test)" in messages[0]


def test_cpu_tensors_never_trigger_a_build(monkeypatch):
    def must_not_build():
        raise AssertionError("a CPU op tried to build the extension")

    monkeypatch.setattr(_build, "load", must_not_build)
    x = torch.randn(1, 2, 4, 4)
    ops.upfirdn2d(x, ops.setup_filter([1, 2, 1]), up=2, impl="cuda")
    ops.bias_act(x, act="lrelu", impl="cuda")
    ops.bias_act(x, act="lrelu")


def test_environment_forces_reference(monkeypatch):
    monkeypatch.setenv(_dispatch.ENV_IMPL, "ref")
    assert _dispatch.forced_ref()
    monkeypatch.setenv(_dispatch.ENV_IMPL, "fast")
    with pytest.raises(ValueError):
        _dispatch.forced_ref()
    monkeypatch.delenv(_dispatch.ENV_IMPL)
    assert not _dispatch.forced_ref()
