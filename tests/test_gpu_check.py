"""benchmarks/gpu_check.py on a machine without CUDA: it completes, skips every
GPU step with a reason, writes valid results; its time box, its parsing and
its sample export work.

Run: python -m pytest tests/test_gpu_check.py -q
"""

import json
import os
import sys
import time
import zipfile

import pytest
import torch

import nets
from benchmarks import gpu_check
from eval import generate
from nets.stylegan2 import build_generator
from ops import _build
from plumbing import ROOT, run_script
from train_stylegan2 import StyleGAN2Config
from training.checkpoint import load_checkpoint, save_checkpoint
from training.config import build_config, to_dict

GPU_STEPS = ["ops_build", "gpu_tests", "ops_speed", "train_speed", "training", "samples"]


def test_without_cuda_every_gpu_step_is_skipped_with_a_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # CUDA absent even on a GPU machine
    out = tmp_path / "out"
    run_script("benchmarks/gpu_check.py", ["--out", str(out), "--work", str(tmp_path / "work"), "--budget-s", "60"])
    with open(out / "gpu_check.json") as f:
        results = json.load(f)
    assert results["finished"] and list(results["steps"]) == ["environment", *GPU_STEPS]
    environment = results["steps"]["environment"]
    assert environment["status"] == "ok" and environment["torch"] == torch.__version__
    assert environment["cuda_available"] is False
    markdown = (out / "gpu_check.md").read_text()
    for name in GPU_STEPS:
        step = results["steps"][name]
        assert step["status"] == "skipped" and "no CUDA device" in step["reason"], (name, step)
        assert f"## {name}: skipped: no CUDA device" in markdown
    assert sorted(os.listdir(out)) == ["gpu_check.json", "gpu_check.log", "gpu_check.md"]


def test_time_box_stops_the_whole_process_group(tmp_path):
    # A child that starts a grandchild, both meant to outlive the box.
    pid_file = tmp_path / "grandchild.pid"
    code = ("import subprocess, sys, time; "
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            f"open({str(pid_file)!r}, 'w').write(str(p.pid)); print('started', flush=True); time.sleep(60)")
    start = time.monotonic()
    outcome = gpu_check.run_boxed([sys.executable, "-c", code], 3.0, str(tmp_path / "log"))
    assert outcome.timed_out and outcome.status() == "timeout" and time.monotonic() - start < 15
    assert "started" in outcome.output
    grandchild = int(pid_file.read_text())
    time.sleep(0.5)
    try:  # gone, or a zombie waiting for init to reap it
        with open(f"/proc/{grandchild}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        state = "gone"
    assert state in ("gone", "Z"), f"grandchild {grandchild} still running (state {state})"
    finished = gpu_check.run_boxed([sys.executable, "-c", "print('{\"a\": 1}')"], 30.0, str(tmp_path / "log2"))
    assert finished.ok and gpu_check.last_json(finished.output) == {"a": 1}


def test_output_parsing():
    # ops_speed prints an indented object; train_speed one line after other output.
    text = 'warning: x\n{\n "summary": {\n  "ref_ms": 2.5\n }\n}\n'
    assert gpu_check.last_json(text) == {"summary": {"ref_ms": 2.5}}
    assert gpu_check.last_json('{"a": 1}\nnoise\n{"b": 2}\n{broken\n') == {"b": 2}
    assert gpu_check.last_json("no json here") is None
    # pytest -v -rfE lines, as far as they got, and a test file that could not be imported.
    output = ("tests/test_ops.py::test_gpu_a[float32] PASSED [ 50%]\n"
              "tests/test_ops.py::test_gpu_b FAILED [100%]\n"
              "___ ERROR collecting tests/test_fid_metrics.py ___\n"
              "Traceback:\n"
              "E   ModuleNotFoundError: No module named 'pytorch_fid'\n"
              "=== short test summary info ===\n"
              "FAILED tests/test_ops.py::test_gpu_b - assert 1 == 2\n"
              "ERROR tests/test_fid_metrics.py\n")
    assert gpu_check.parse_pytest(output, "/nonexistent.xml") == {
        "tests/test_ops.py::test_gpu_a[float32]": {"status": "passed"},
        "tests/test_ops.py::test_gpu_b": {"status": "failed"},
        "tests/test_fid_metrics.py": {"status": "collection_error",
                                      "message": "ModuleNotFoundError: No module named 'pytorch_fid'"},
    }


def test_sample_export_matches_generate_and_fits(tmp_path, monkeypatch):
    config = to_dict(build_config(StyleGAN2Config, os.path.join(ROOT, "configs", "stylegan2_tiny.yaml"),
                                  []))
    torch.manual_seed(0)
    generator = build_generator(config)
    run_dir = tmp_path / "run"
    save_checkpoint({"model": "stylegan2", "config": config, "step": 7, "kimg": 0.028, "wallclock_s": 1.0,
                     "G_ema": generator.state_dict()}, str(run_dir / "checkpoints" / "last.pt"))
    # Parts of a few PNGs, and float32 G_ema "too large": several zips, a float16 checkpoint.
    monkeypatch.setattr(gpu_check, "PART_BYTES", 3500)
    out = tmp_path / "out"
    out.mkdir()
    result = gpu_check.export_samples(str(run_dir), str(out), num_samples=20)
    parts = result["sample_files"]
    assert len(parts) >= 2 and parts == ["samples.zip"] + [f"samples-{i}.zip" for i in range(2, len(parts) + 1)]
    assert result["checkpoint_dtype"] == "float16"
    names = []
    for part in parts:
        assert (out / part).stat().st_size <= 3500
        names += zipfile.ZipFile(out / part).namelist()
    assert names == [f"{i:06d}.png" for i in range(20)]
    assert len(zipfile.ZipFile(out / "real.zip").namelist()) == result["real_images"] == 32
    # The same PNG bytes as eval/generate.py writes from the training's checkpoint.
    assert generate.main(["--ckpt", str(run_dir / "checkpoints" / "last.pt"), "--num", "14",
                          "--out", str(tmp_path / "generated")]) == 0
    for part in parts:
        with zipfile.ZipFile(out / part) as archive:
            for name in archive.namelist():
                if int(name[:6]) < 14:
                    assert archive.read(name) == (tmp_path / "generated" / name).read_bytes(), name
    # The float16 copy holds G_ema alone, rounded, and rebuilds the generator.
    slim = load_checkpoint(str(out / "last.pt"))
    assert set(slim) == {"format_version", "model", "config", "step", "kimg", "wallclock_s", "G_ema"}
    for name, tensor in generator.state_dict().items():
        assert slim["G_ema"][name].dtype == torch.float16
        torch.testing.assert_close(slim["G_ema"][name].float(), tensor, rtol=2**-11, atol=1e-7)
    indices = torch.arange(4)
    with torch.no_grad():
        expected = nets.load_sampler(load_checkpoint(str(run_dir / "checkpoints" / "last.pt")), "cpu")(indices)
        torch.testing.assert_close(nets.load_sampler(slim, "cpu")(indices), expected, rtol=0, atol=0.02)


def test_a_build_cut_by_its_time_box_leaves_its_failed_marker(tmp_path):
    target = tmp_path / "cache" / "key"
    started = tmp_path / "started"
    code = ("import sys, time; sys.path.insert(0, sys.argv[1]); from benchmarks import gpu_check; "
            "from ops import _build; gpu_check.leave_failed_marker_at_time_box(); "
            "_build.ensure_built(sys.argv[2], lambda tmp: (open(sys.argv[3], 'w').close(), time.sleep(60)), 60)")
    # The box leaves room for importing torch on a loaded machine before the build starts.
    outcome = gpu_check.run_boxed([sys.executable, "-c", code, ROOT, str(target), str(started)], 25.0,
                                  str(tmp_path / "log"))
    assert outcome.timed_out and started.exists(), outcome.output
    marker = tmp_path / "cache" / "key.failed"
    assert marker.exists() and "time box" in marker.read_text(), outcome.output
    assert not target.exists() and not list((tmp_path / "cache").glob("key.tmp-*"))
    with pytest.raises(_build.BuildUnavailable, match="delete .*key.failed to retry"):
        _build.ensure_built(str(target), lambda tmp: None, 10)  # the next process does not build again


def test_later_steps_use_the_reference_ops_when_the_build_failed(tmp_path, monkeypatch):
    args = gpu_check.argparse.Namespace(out=str(tmp_path / "out"), work=str(tmp_path / "work"), budget_s=500.0)
    check = gpu_check.Check(args)
    check.cuda = True
    environments = []

    def fake_run(cmd, timeout, log_path, env=None):
        environments.append(dict(env))
        output = '{"built": false, "error": "BuildUnavailable: no nvcc"}' if "--probe-ops" in cmd else "0 passed"
        return gpu_check.Outcome(0, 0.1, False, output)
    monkeypatch.setattr(gpu_check, "run_boxed", fake_run)
    check.ops_build()
    check.gpu_tests()
    assert check.report.step("ops_build")["status"] == "failed" and not check.ops_cuda
    assert environments[0].get("SMALLGAN_OPS_IMPL") is None  # the build itself ran as asked
    assert environments[1]["SMALLGAN_OPS_IMPL"] == "ref"


def test_train_speed_variants_run_one_after_the_other_in_one_process():
    """The probe behind the train_speed step, on the tiny config: bf16 then fp32 (the Accelerator's precision
    changes in between), one JSON line each, with the host transfers counted."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from benchmarks import gpu_check; "
            "gpu_check.probe_train_speed([3, 4], config='configs/stylegan2_tiny.yaml', steps=2, warmup=1)")
    result = run_script("-c", [code, ROOT])
    rows = gpu_check.json_lines(result.stdout)
    assert [(r["run"], r["precision"]) for r in rows] == [("bf16, reference ops", "bf16"),
                                                          ("fp32, reference ops", "fp32")], result.stdout
    for row in rows:
        assert row["img_per_s"] > 0 and row["losses_finite"] and row["seconds"] > 0
        assert row["host_to_device_per_step"] == 0 and row["syncs_per_step"] == 0
