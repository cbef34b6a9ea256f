"""Several nodes on one machine: torchrun's c10d rendezvous, elastic restarts and lost peers.

Two torchrun launches on localhost stand for two nodes (gloo on the CPU). The
StyleGAN2 runs share one two-process reference run; the lost-peer tests use the
stand-in GAN of tests/toy_gan.py, started as plain processes so that no agent
ends the survivor before it reports.
"""

import os
import re
import signal
import subprocess
import sys
import time

import psutil
import pytest
import torch

from plumbing import ROOT, TINY_DATA, assert_state_close, free_port, load_checkpoint

STYLEGAN2 = os.path.join(ROOT, "train_stylegan2.py")
# 6 steps of batch 4, a checkpoint every 2 steps: room to kill a worker after the first one.
TINY = ["--config", os.path.join(ROOT, "configs", "stylegan2_tiny.yaml"), "train.kimg=0.024"]
NETWORKS = ("G", "G_ema", "D", "optimizers")


def environment() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", PYTHONPATH=ROOT)


def torchrun(args: list[str], log, cwd=ROOT) -> subprocess.Popen:
    """Start `python -m torch.distributed.run ARGS` with stdout and stderr into the open file `log`."""
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", *args], cwd=cwd, env=environment(),
                            stdout=log, stderr=subprocess.STDOUT)


def finish(process: subprocess.Popen, log_path, timeout: float = 240) -> str:
    try:
        status = process.wait(timeout=timeout)
    finally:
        if process.poll() is None:
            kill_tree(process.pid)
    text = open(log_path).read()
    assert status == 0, f"exited {status}:\n{text[-6000:]}"
    return text


def kill_tree(pid: int) -> None:
    try:
        parent = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    for process in [*parent.children(recursive=True), parent]:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass


def assert_same_networks(a: dict, b: dict) -> None:
    assert a["step"] == b["step"] > 0
    for name in NETWORKS:
        assert_state_close(a[name], b[name], path=name)  # bit for bit: rtol = atol = 0


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run: one node, two processes."""
    folder = tmp_path_factory.mktemp("reference")
    with open(folder / "log", "w") as log:
        process = torchrun(["--nproc_per_node", "2", "--master_port", str(free_port()), STYLEGAN2, *TINY,
                            f"out_dir={folder / 'run'}"], log)
    finish(process, folder / "log")
    return load_checkpoint(folder / "run")


def test_two_nodes_match_one_node_and_only_rank_0_writes(reference, tmp_path):
    endpoint = f"127.0.0.1:{free_port()}"
    nodes = []
    for node_rank in (0, 1):  # each node in its own folder: a relative out_dir shows who writes
        cwd = tmp_path / f"node{node_rank}"
        cwd.mkdir()
        with open(tmp_path / f"log{node_rank}", "w") as log:
            nodes.append(torchrun(["--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(node_rank),
                                   "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", "two-nodes",
                                   STYLEGAN2, *TINY, "out_dir=run"], log, cwd=cwd))
    logs = [finish(process, tmp_path / f"log{i}") for i, process in enumerate(nodes)]
    # c10d assigns global ranks itself; global rank 0 is the node that printed the resolved config.
    main = [i for i, text in enumerate(logs) if "resolved config:" in text]
    assert len(main) == 1, logs
    files = {i: [os.path.join(d, f) for d, _, fs in os.walk(tmp_path / f"node{i}") for f in fs] for i in (0, 1)}
    assert files[1 - main[0]] == []
    assert_same_networks(load_checkpoint(tmp_path / f"node{main[0]}" / "run"), reference)


def test_killed_worker_is_restarted_and_the_run_resumes_exactly(reference, tmp_path):
    run_dir, log_path = tmp_path / "run", tmp_path / "log"
    last = run_dir / "checkpoints" / "last.pt"
    with open(log_path, "w") as log:
        agent = torchrun(["--nproc_per_node", "2", "--max-restarts", "1", "--rdzv-backend", "c10d",
                          "--rdzv-endpoint", f"127.0.0.1:{free_port()}", STYLEGAN2, *TINY, f"out_dir={run_dir}"], log)
    seen, killed_at, newest_before_restart = None, None, None
    deadline = time.time() + 240
    try:
        while agent.poll() is None and time.time() < deadline:
            if last.exists() and os.stat(last).st_mtime_ns != seen:
                seen = os.stat(last).st_mtime_ns
                step = load_checkpoint(run_dir)["step"]  # never torn: every version on disk loads
                if killed_at is None:
                    workers = {p.environ().get("RANK"): p for p in psutil.Process(agent.pid).children()}
                    workers["1"].send_signal(signal.SIGKILL)
                    killed_at = step
            restarted = killed_at is not None and "torchrun restart 1" in open(log_path).read()
            if restarted and newest_before_restart is None:
                newest_before_restart = load_checkpoint(run_dir)["step"]  # the old group is gone: nobody writes
            time.sleep(0.02)
    finally:
        text = finish(agent, log_path, timeout=max(1, deadline - time.time()))
    assert killed_at is not None and newest_before_restart is not None, text[-4000:]
    resumed = [int(s) for s in re.findall(r"resumed from \S*last\.pt at step (\d+)", text)]
    # The restart continued from the newest checkpoint, so less than its 2-step interval was done again.
    assert resumed == [newest_before_restart] and 2 <= newest_before_restart < reference["step"]
    assert newest_before_restart >= killed_at
    assert_same_networks(load_checkpoint(run_dir), reference)
    assert sorted(os.listdir(run_dir / "checkpoints")) == ["last.pt"]  # no torn temporary file left behind


TOY = os.path.join(ROOT, "tests", "toy_gan.py")
TOY_ARGS = [*TINY_DATA, "train.batch_size=8", "eval.every_kimg=0", "train.kimg=1000",
            "train.checkpoint_every_kimg=0.016", "train.sample_every_kimg=1000", "train.log_every_kimg=1000"]


def start_two_processes(tmp_path, timeout_s: float) -> list[subprocess.Popen]:
    """Ranks 0 and 1 as two plain processes (what two nodes' workers are to each other)."""
    port, processes = free_port(), []
    for rank in (0, 1):
        env = dict(environment(), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                   LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2")
        processes.append(subprocess.Popen(
            [sys.executable, TOY, *TOY_ARGS, f"train.collective_timeout_s={timeout_s}", f"out_dir={tmp_path / 'run'}"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / f"err{rank}", "w")))
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    deadline = time.time() + 120
    while not last.exists() and time.time() < deadline and all(p.poll() is None for p in processes):
        time.sleep(0.02)
    assert last.exists(), open(tmp_path / "err0").read()[-3000:]
    return processes


@pytest.mark.parametrize("peer_signal", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "frozen"])
def test_lost_peer_ends_the_survivor_naming_it(tmp_path, peer_signal):
    # gloo fails at once when a killed peer's sockets close; a frozen peer (or a node that vanished
    # without closing its connections) is caught by the collective timeout.
    timeout_s = 8.0
    survivor, peer = start_two_processes(tmp_path, timeout_s)
    try:
        peer.send_signal(peer_signal)
        lost_at = time.time()
        status = survivor.wait(timeout=timeout_s + 30)
        seconds = time.time() - lost_at
    finally:
        for process in (survivor, peer):
            process.kill()
            process.wait()
    message = open(tmp_path / "err0").read().strip().splitlines()[-1]
    assert status == 1
    assert message.startswith("error: rank 0 of 2 stops: rank 1 stopped responding"), message
    assert "the collective failed with:" in message
    if peer_signal == signal.SIGKILL:
        assert seconds < timeout_s
    else:
        assert "Timed out" in message and timeout_s <= seconds < timeout_s + 10
    torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)  # what was written is intact


def test_restart_without_out_dir_is_one_line_and_exit_2(tmp_path):
    # A restarted worker cannot know the timestamped folder of the first attempt.
    env = dict(environment(), TORCHELASTIC_RESTART_COUNT="1")
    result = subprocess.run([sys.executable, TOY, *TOY_ARGS], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines() == [
        "error: out_dir: torchrun restarted the workers, but without out_dir the first attempt's run folder is "
        "unknown; set out_dir= for runs under torchrun --max-restarts, and continue this one with --resume auto "
        "out_dir=<its folder>"]
    assert os.listdir(tmp_path) == []  # no new run folder
