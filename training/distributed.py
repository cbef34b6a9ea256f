"""Several processes on one or several nodes: no hang when a peer is lost, and automatic resume.

torchrun restarts the whole group when one worker dies (`--max-restarts K`), so a
run survives a lost node if (1) the processes whose peer is gone stop instead of
waiting forever, and (2) the restarted workers continue from the last checkpoint.

- `process_group_kwargs(timeout_s)`: the collective timeout (`train.collective_timeout_s`)
  handed to Accelerate, instead of torch's 30 minutes.
- `restart_count()`: > 0 in a worker torchrun started again after a failure; the
  loop then resumes from out_dir/checkpoints/last.pt as if `--resume auto` were given,
  and `join_restarted_group` keeps the new group clear of the old one's keys.
- `watch_peers(rank, world, timeout_s)`: every process adds to a heartbeat counter
  in the rendezvous store (the TCPStore at MASTER_ADDR:MASTER_PORT that torchrun
  or init_process_group already runs). When a collective fails -- a killed peer
  closes its sockets and gloo fails at once; a frozen peer or a vanished node is
  caught by the timeout -- the process names the ranks whose heartbeat stopped in
  one line on stderr and exits with status 1, without the teardown that can hang
  or abort after a failed collective. A peer whose heartbeat stops for twice
  the timeout is reported the same way even when no collective fails (NCCL's
  own watchdog may end the process at the timeout first; then its log names the
  collective, not the peer).
"""

import datetime
import os
import re
import sys
import threading
import time

import torch

HEARTBEAT_S = 1.0  # seconds between heartbeats; a rank is lost when its counter stalls for 2.5 of them


def process_group_kwargs(timeout_s: float):
    """Accelerate's handler that sets the collective timeout of the default process group."""
    from accelerate.utils import InitProcessGroupKwargs
    return InitProcessGroupKwargs(timeout=datetime.timedelta(seconds=timeout_s))


def restart_count() -> int:
    """How often torchrun has restarted this worker's group (0 outside torchrun)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


def join_restarted_group(timeout_s: float) -> None:
    """In a group torchrun restarted, join the process group under a store prefix of this attempt.

    torchrun's agent keeps one store for all attempts, and the process group's keys
    (gloo's peer addresses, NCCL's unique id) carry no attempt number: a restarted
    worker could read the dead attempt's address and fail with "connection refused".
    Accelerate uses a process group that already exists.
    """
    if restart_count() == 0 or int(os.environ.get("WORLD_SIZE", "1")) == 1 or torch.distributed.is_initialized():
        return
    timeout = datetime.timedelta(seconds=timeout_s)
    store = torch.distributed.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                                       timeout=timeout)
    torch.distributed.init_process_group(
        "nccl" if torch.cuda.is_available() else "gloo", timeout=timeout, rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        store=torch.distributed.PrefixStore(f"smallgan/attempt{restart_count()}", store))


def is_communication_error(error: BaseException) -> bool:
    """A failed collective (peer gone, timeout, closed connection), as opposed to a bug in this process."""
    if isinstance(error, getattr(torch.distributed, "DistError", ())):
        return True
    return isinstance(error, RuntimeError) and bool(re.search(
        r"gloo|nccl|closed by peer|connection reset|broken pipe|timed out|timeout", str(error), re.IGNORECASE))


class PeerWatch:
    """Heartbeats in the rendezvous store, and the diagnosis of a failed collective."""

    def __init__(self, rank: int, world: int, timeout_s: float):
        self.rank, self.world, self.timeout_s = rank, world, timeout_s
        self.address = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
        # A connection of our own, so the heartbeat thread never shares one with the process group.
        self.store = torch.distributed.TCPStore(
            os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
            timeout=datetime.timedelta(seconds=min(timeout_s, 10.0)), wait_for_workers=False)
        # The agent's store outlives a restart: keys are per run and attempt.
        self.prefix = f"smallgan/{os.environ.get('TORCHELASTIC_RUN_ID', 'run')}/attempt{restart_count()}"
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="peer-heartbeat", daemon=True)
        self.thread.start()
        self.previous_hook = sys.excepthook
        sys.excepthook = self._uncaught

    def key(self, what: str, rank: int) -> str:
        return f"{self.prefix}/{what}/{rank}"

    def counters(self) -> list[int]:
        return [self.store.add(self.key("beat", r), 0) for r in range(self.world)]

    def stop(self) -> None:
        """Training is over on every process: no more stall checks, no more diagnosis."""
        self.stopped.set()
        self.thread.join(timeout=10)  # not inside a store call when the process exits
        sys.excepthook = self.previous_hook

    def _beat(self) -> None:
        # Peers are checked every quarter timeout, so the store serves world**2 reads per that period.
        check_every = max(HEARTBEAT_S, self.timeout_s / 4)
        last_check, seen, moved_at = 0.0, None, None
        while not self.stopped.wait(HEARTBEAT_S):
            try:
                self.store.add(self.key("beat", self.rank), 1)
                now = time.monotonic()
                if now - last_check < check_every:
                    continue
                last_check, counts = now, self.counters()
                if seen is None:
                    seen, moved_at = counts, [now] * self.world
                moved_at = [now if c != s else t for c, s, t in zip(counts, seen, moved_at)]
                seen = counts
                # A backstop at twice the timeout, so that a collective's own timeout reports first where it works.
                stalled = [r for r in range(self.world) if now - moved_at[r] >= 2 * self.timeout_s]
                if stalled and not self.stopped.is_set():
                    self._exit(f"{self._ranks(stalled)} stopped responding (no heartbeat for "
                               f"{2 * self.timeout_s:g} s)")
            except Exception:
                return  # the store's node is gone; the next collective fails and reports it

    def diagnose(self) -> str | None:
        """Which peers are gone: those that neither beat during 2.5 heartbeats nor reported a failure."""
        try:
            self.store.set(self.key("failed", self.rank), "1")
            before = self.counters()
            time.sleep(2.5 * HEARTBEAT_S)
            after = self.counters()
            failed = [r for r in range(self.world)
                      if r != self.rank and self.store.check([self.key("failed", r)])]
        except Exception:
            return (f"the rendezvous store at {self.address} is unreachable (the node that hosts it, "
                    f"the rendezvous endpoint, is gone)")
        lost = [r for r in range(self.world) if r != self.rank and r not in failed and after[r] == before[r]]
        if lost:
            return f"{self._ranks(lost)} stopped responding (no heartbeat for {2.5 * HEARTBEAT_S:g} s)"
        if failed:
            return f"{self._ranks(failed)} failed (its own error is in its log)"
        return None

    def _uncaught(self, kind, error, traceback) -> None:
        if self.stopped.is_set() or not isinstance(error, Exception):
            return self.previous_hook(kind, error, traceback)
        if not is_communication_error(error):
            try:  # a bug in this process: its own traceback, and the peers learn that it failed
                self.store.set(self.key("failed", self.rank), "1")
            except Exception:
                pass
            self.previous_hook(kind, error, traceback)
            self._exit(None)
        reason = self.diagnose()
        if reason is None:  # every peer is alive and well: the error is this process's own
            self.previous_hook(kind, error, traceback)
            self._exit(None)
        text = re.sub(r"^\[[^\]]*\]\s*", "", str(error).strip())  # gloo's source location
        first_sentence = re.split(r"\.\s|\n", text)[0][:200]
        self._exit(f"{reason}; the collective failed with: {first_sentence}")

    def _ranks(self, ranks: list[int]) -> str:
        return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(map(str, ranks))

    def _exit(self, reason: str | None) -> None:
        """One line naming the lost peer, then exit 1 at once: the process group's teardown after a
        failed collective can block or abort, and torchrun restarts (or ends) the group either way."""
        self.stopped.set()
        if reason:
            print(f"error: rank {self.rank} of {self.world} stops: {reason}; torchrun --max-restarts restarts "
                  f"the group from checkpoints/last.pt", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)


_watch: PeerWatch | None = None


def watch_peers(rank: int, world: int, timeout_s: float) -> None:
    """Start heartbeats and the lost-peer diagnosis for this process (nothing to do for one process)."""
    global _watch
    if world > 1 and "MASTER_ADDR" in os.environ and "MASTER_PORT" in os.environ:
        _watch = PeerWatch(rank, world, timeout_s)


def stop_watching() -> None:
    """Every process reached the end of training."""
    global _watch
    if _watch is not None:
        _watch.stop()
        _watch = None
