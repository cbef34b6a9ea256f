"""The shared training loop and run folder, proved on a stand-in GAN (tests/toy_gan.py)."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from plumbing import (ROOT, TINY_DATA, check_resume_is_deterministic, check_run_folder,
                      check_two_processes_match_one, load_checkpoint, run_script)
from training.checkpoint import CheckpointError, load_checkpoint as load_checked, save_checkpoint

TOY = "tests/toy_gan.py"
ARGS = [*TINY_DATA, "train.batch_size=8", "eval.every_kimg=0", "train.log_every_kimg=0.016"]


def test_run_folder_and_checkpoint_contents(tmp_path):
    checkpoint = check_run_folder(TOY, [*ARGS, "train.kimg=0.08", "train.sample_every_kimg=0.04"],
                                  tmp_path / "run", evaluations=0)
    assert checkpoint["model"] == "toy" and checkpoint["step"] == 10 and checkpoint["kimg"] == 0.08
    assert checkpoint["config"]["train"]["batch_size"] == 8
    assert set(checkpoint) >= {"G", "G_ema", "D", "optimizers", "rng", "config", "best_fid", "wallclock_s"}
    # G: Linear(8 -> 8*4*4) + Conv2d(8 -> 1, 3x3); D: Conv2d(1 -> 8, 3x3) + Linear(8 -> 1)
    assert checkpoint["params"] == {"G": 8 * 128 + 128 + 8 * 9 + 1, "D": 9 * 8 + 8 + 8 + 1}
    samples = sorted(os.listdir(tmp_path / "run" / "samples"))
    assert samples == ["fakes000000000.png", "fakes000000040.png", "fakes000000080.png"]


def test_tensorboard_holds_losses_and_throughput(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    run_script(TOY, [*ARGS, "train.kimg=0.048", f"out_dir={tmp_path}"])
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"Loss/G/total", "Loss/D/total", "Progress/img_per_s", "Progress/kimg"} <= set(tags)
    steps = [e.step for e in events.Scalars("Progress/kimg")]
    assert steps == [16, 32, 48]  # logged every 16 images, on an images-shown axis
    assert "Samples/fakes" in events.Tags()["images"]


def test_resume_is_deterministic(tmp_path):
    check_resume_is_deterministic(TOY, ARGS, tmp_path, kimg_first=0.04, kimg_total=0.096)


def test_two_processes_match_one(tmp_path):
    check_two_processes_match_one(TOY, [*ARGS, "train.kimg=0.08"], tmp_path)


def test_crash_in_one_process_ends_the_job_with_an_error(tmp_path):
    start = time.time()
    result = run_script(TOY, [*ARGS, "train.kimg=0.4", "crash_at_step=3", f"out_dir={tmp_path}"], nproc=2,
                        timeout=180, expect_status=None)
    assert result.returncode != 0
    assert "deliberate crash on rank 1" in result.stderr
    assert time.time() - start < 170


def test_bad_data_path_is_one_line_and_exit_2(tmp_path):
    result = run_script(TOY, ["data.path=/no/such/folder", f"out_dir={tmp_path / 'r'}"], expect_status=2)
    assert result.stderr.strip().splitlines() == [
        "error: data.path: /no/such/folder does not exist; give a folder, a .zip, an image, a .npy/.npz stack, "
        "file.h5:/dataset or builtin:particles"]


def test_missing_or_corrupt_resume_checkpoint_is_one_line_and_keeps_the_run(tmp_path):
    run_dir = tmp_path / "r"
    run_script(TOY, [*ARGS, "train.kimg=0.016", f"out_dir={run_dir}"])
    before = (run_dir / "checkpoints" / "last.pt").read_bytes()
    result = run_script(TOY, [*ARGS, f"out_dir={run_dir}", "--resume", str(tmp_path / "none.pt")], expect_status=2)
    assert len(result.stderr.strip().splitlines()) == 1 and "checkpoint not found" in result.stderr
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(before[: len(before) // 2])
    result = run_script(TOY, [*ARGS, f"out_dir={run_dir}", "--resume", str(corrupt)], expect_status=2)
    assert len(result.stderr.strip().splitlines()) == 1 and "damaged" in result.stderr
    result = run_script(TOY, [*ARGS, "data.resolution=8", f"out_dir={run_dir}", "--resume", "auto"], expect_status=2)
    assert "data.resolution=16" in result.stderr
    assert (run_dir / "checkpoints" / "last.pt").read_bytes() == before  # nothing already written is lost


def test_checkpoints_load_without_unpickling_code(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint({"model": "toy", "config": {}, "w": torch.ones(2)}, str(path))
    assert load_checked(str(path))["w"].tolist() == [1, 1]
    torch.save({"model": "toy", "config": {}, "bad": CheckpointError("pickled object")}, path)
    with pytest.raises(CheckpointError, match="damaged or not a checkpoint"):
        load_checked(str(path))


SAVE_FOREVER = """
import sys, torch
sys.path.insert(0, {root!r})
from training.checkpoint import save_checkpoint
i = 0
while True:
    i += 1
    save_checkpoint({{"model": "toy", "config": {{}}, "i": i, "w": torch.full((4_000_000,), float(i))}}, {path!r})
    print(i, flush=True)
"""


def test_kill_during_save_leaves_a_loadable_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint({"model": "toy", "config": {}, "i": 0, "w": torch.zeros(4_000_000)}, str(path))
    for delay in (0.0, 0.05, 0.12):
        writer = subprocess.Popen([sys.executable, "-c", SAVE_FOREVER.format(root=ROOT, path=str(path))],
                                  stdout=subprocess.PIPE, text=True)
        writer.stdout.readline()  # one save has completed; the next is under way
        time.sleep(delay)
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        state = load_checked(str(path))
        assert torch.all(state["w"] == state["i"])  # a whole checkpoint, old or new, never a torn one
    assert load_checked(str(path))["i"] > 0
