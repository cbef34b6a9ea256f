"""Checks every training script must pass, shared by the per-model test files.

    from plumbing import check_run_folder, check_resume_is_deterministic, check_two_processes_match_one
"""

import json
import os
import socket
import subprocess
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A data set small enough for CPU tests: 32 built-in frames at 16x16.
TINY_DATA = ["data.path=builtin:particles?count=32", "data.resolution=16"]


def free_port() -> int:
    """A TCP port nobody listens on now (the OS picks it): parallel test workers never share one."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_script(script: str, args: list[str], nproc: int = 1, timeout: int = 600,
               expect_status: int | None = 0) -> subprocess.CompletedProcess:
    """Run a training/eval script from the repo root, on `nproc` CPU processes via torchrun."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    if nproc == 1:
        command = [sys.executable, script, *args]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                   "--master_port", str(free_port()), script, *args]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if expect_status is not None:
        assert result.returncode == expect_status, (
            f"{' '.join(command)} exited {result.returncode}\nstdout:\n{result.stdout[-3000:]}\n"
            f"stderr:\n{result.stderr[-5000:]}")
    return result


def load_checkpoint(run_dir, name: str = "last.pt") -> dict:
    return torch.load(os.path.join(run_dir, "checkpoints", name), map_location="cpu", weights_only=True)


def assert_state_close(a: dict, b: dict, rtol: float = 0.0, atol: float = 0.0, path: str = "") -> None:
    """Every tensor in two nested state dicts equal (to tolerance), same keys."""
    assert set(a) == set(b), f"{path}: keys differ: {set(a) ^ set(b)}"
    for key in a:
        x, y = a[key], b[key]
        where = f"{path}.{key}" if path else str(key)
        if isinstance(x, dict):
            assert_state_close(x, y, rtol, atol, where)
        elif isinstance(x, torch.Tensor):
            if x.is_floating_point():
                torch.testing.assert_close(x, y, rtol=rtol, atol=atol, msg=lambda m: f"{where}: {m}")
            else:
                assert torch.equal(x, y), where


def check_run_folder(script: str, args: list[str], out_dir, evaluations: int) -> dict:
    """A short run writes config.yaml, TensorBoard events, sample grids, last.pt (+ best.pt and
    metrics.jsonl when it evaluates); returns the last checkpoint."""
    run_script(script, [*args, f"out_dir={out_dir}"])
    assert os.path.isfile(os.path.join(out_dir, "config.yaml"))
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(out_dir, "tb")))
    assert len([f for f in os.listdir(os.path.join(out_dir, "samples")) if f.endswith(".png")]) >= 2
    checkpoint = load_checkpoint(out_dir)
    if evaluations:
        with open(os.path.join(out_dir, "metrics.jsonl")) as f:
            records = [json.loads(line) for line in f]
        assert len(records) == evaluations
        for record in records:
            assert record["fid"] >= 0 and "kid" in record and record["kimg"] > 0
        best = load_checkpoint(out_dir, "best.pt")
        assert best["best_fid"] == min(r["fid"] for r in records)
    return checkpoint


def check_resume_is_deterministic(script: str, args: list[str], tmp_path, kimg_first: float, kimg_total: float,
                                  networks=("G", "G_ema", "D")) -> None:
    """kimg_first, then --resume auto to kimg_total == kimg_total in one go, bit for bit on CPU."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run_script(script, [*args, f"train.kimg={kimg_total}", f"out_dir={straight}"])
    run_script(script, [*args, f"train.kimg={kimg_first}", f"out_dir={resumed}"])
    assert load_checkpoint(resumed)["step"] < load_checkpoint(straight)["step"]
    run_script(script, [*args, f"train.kimg={kimg_total}", f"out_dir={resumed}", "--resume", "auto"])
    a, b = load_checkpoint(straight), load_checkpoint(resumed)
    assert a["step"] == b["step"]
    for name in networks:
        assert_state_close(a[name], b[name], path=name)
    assert_state_close(a["optimizers"], b["optimizers"], path="optimizers")


def check_two_processes_match_one(script: str, args: list[str], tmp_path, networks=("G", "G_ema", "D"),
                                  rtol: float = 1e-4, atol: float = 1e-5) -> None:
    """torchrun with 2 processes == 1 process with the same global batch and seed."""
    one, two = tmp_path / "one", tmp_path / "two"
    run_script(script, [*args, f"out_dir={one}"])
    run_script(script, [*args, f"out_dir={two}"], nproc=2)
    a, b = load_checkpoint(one), load_checkpoint(two)
    assert a["step"] == b["step"] > 0
    for name in networks:
        assert_state_close(a[name], b[name], rtol=rtol, atol=atol, path=name)
