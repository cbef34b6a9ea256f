"""Progress of long work: a bar on a terminal, plain lines otherwise, always on stderr.

Every script shows its long phases (training steps, generating samples,
extracting features) through this one display:

    from training.progress import Progress, write

    with Progress("real features", total=len(images), unit="img") as bar:
        for batch in batches:
            ...
            bar.update(len(batch))          # or bar.set(amount_done)
            bar.set_postfix({"G": 1.23})    # optional fields after the rate, e.g. losses
        with bar.paused():                  # time that must not count towards the rate and ETA
            ...
    write("kimg 2.00: fid 41.2")            # a line on stdout that does not tear a bar on the terminal

`Progress(label, total=None, *, unit="", done=0, rate_unit=None, rate_scale=1, enabled=None, stream=None)`:

- `label` None makes a bar that shows nothing, for functions whose progress
  label is optional (`compute_features(..., progress="real features")`);
- `total` None shows no percentage or ETA; `done` is where a resumed job starts;
- the rate is `rate_scale` x units per second, named `rate_unit` (default
  "<unit>/s"); training counts kimg and shows img/s with rate_unit="img/s",
  rate_scale=1000;
- `enabled` defaults to "this is the main process" (RANK unset or 0), so under
  torchrun or Accelerate one process reports; `stream` defaults to sys.stderr,
  so `--json` output on stdout stays clean.

What it prints:

- stderr a terminal: one line redrawn in place at most 10 times a second and
  cut to the terminal's width,
  `train |###.....................| 0.352/10 kimg 3.5% | 38.2 img/s | 9s elapsed | ETA 4m12s | G/total 0.81`,
  ended with a newline when the bar closes;
- otherwise (CI, nohup, a SLURM log, a pipe): the same text as a plain line,
  `train: 0.352/10 kimg 3.5% | 38.2 img/s | 9s elapsed | ETA 4m12s | G/total 0.81`,
  at the first update, then at most every SMALLGAN_PROGRESS_INTERVAL seconds
  (default 30; 0 prints every update), and once more when the bar closes
  (`... | done in 4m21s`): a log is never silent for long and holds no
  carriage returns.

A bar opened while another is open (an evaluation inside training) pauses
the outer one: its line stays, the inner bar draws below it, and the outer
bar's rate and ETA count its own work alone. The rate leaves out the work
before the first update too (warm-up, a first compilation). `update` and
`set` take plain Python numbers: a bar never synchronizes a GPU.
"""

import contextlib
import math
import os
import shutil
import sys
import threading
import time
import warnings

INTERVAL_ENV = "SMALLGAN_PROGRESS_INTERVAL"
DEFAULT_INTERVAL_S = 30.0  # between plain lines when stderr is not a terminal
REDRAW_S = 0.1             # between redraws on a terminal
BAR_WIDTH = 24

_open_bars: list["Progress"] = []  # the innermost last; only it draws
# Lines come from several threads at once (benchmarks/study.py reports each variant from its own thread
# while a watcher redraws the bar): one holder at a time, and each line leaves in one write.
_output_lock = threading.RLock()


def is_main_process() -> bool:
    """RANK unset (one process) or 0: torchrun and accelerate launch set it on every process."""
    return int(os.environ.get("RANK", "0")) == 0


def line_interval() -> float:
    """Seconds between plain progress lines, from SMALLGAN_PROGRESS_INTERVAL."""
    text = os.environ.get(INTERVAL_ENV)
    if text is None:
        return DEFAULT_INTERVAL_S
    try:
        value = float(text)
        if value >= 0 and math.isfinite(value):
            return value
    except ValueError:
        pass
    warnings.warn(f"{INTERVAL_ENV}={text!r} is not a number of seconds >= 0; using {DEFAULT_INTERVAL_S:g}",
                  stacklevel=3)
    return DEFAULT_INTERVAL_S


def format_duration(seconds: float) -> str:
    """A clock-like duration: 42s, 12m05s, 3h07m, 5d04h."""
    seconds = max(0, int(round(seconds)))
    minutes, s = divmod(seconds, 60)
    hours, m = divmod(minutes, 60)
    days, h = divmod(hours, 24)
    if days:
        return f"{days}d{h:02d}h"
    if hours:
        return f"{hours}h{m:02d}m"
    if minutes:
        return f"{minutes}m{s:02d}s"
    return f"{s}s"


def describe_duration(seconds: float) -> str:
    """A duration in words, rounded as a person would: ~40 seconds, ~12 minutes, ~3 hours, ~2 months."""
    for name, length in (("year", 365.25 * 86400), ("month", 30.44 * 86400), ("week", 7 * 86400),
                         ("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= 1.5 * length or (name in ("year", "day", "hour", "minute") and seconds >= length):
            count = seconds / length
            count_text = f"{count:.1f}".rstrip("0").rstrip(".") if count < 3 else f"{count:.0f}"
            return f"~{count_text} {name}{'' if count_text == '1' else 's'}"
    seconds = max(1, round(seconds))
    return f"~{seconds} second{'' if seconds == 1 else 's'}"


def _amount(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}"


def _number(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class Progress:
    """A progress display for one phase of work; see the module docstring."""

    def __init__(self, label: str | None, total: float | None = None, *, unit: str = "", done: float = 0,
                 rate_unit: str | None = None, rate_scale: float = 1.0, enabled: bool | None = None, stream=None):
        self.label, self.total, self.unit = label, total, unit
        self.rate_unit, self.rate_scale = rate_unit or f"{unit or 'it'}/s", rate_scale
        self.done = self.initial = done
        self.postfix: dict = {}
        self.enabled = label is not None and (is_main_process() if enabled is None else enabled)
        self.stream = stream or sys.stderr
        self.terminal = self.enabled and _is_terminal(self.stream)
        self.interval = REDRAW_S if self.terminal else line_interval()
        self.started = time.perf_counter()
        self.paused_s, self._paused_at, self._pauses = 0.0, None, 0
        self._first = None         # (active seconds, done) at the first update: where the rate starts
        self._shown_at = -math.inf
        self._on_screen = False    # a terminal line without its newline
        self.closed = not self.enabled
        if self.enabled:
            if _open_bars:
                _open_bars[-1]._pause()
            _open_bars.append(self)
            if self.terminal:
                self._show(self.started)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        self.close(finished=kind is None)

    # -- what callers use

    def update(self, amount: float = 1) -> None:
        """`amount` more units done."""
        self.set(self.done + amount)

    def set(self, done: float) -> None:
        """The amount done so far (e.g. kimg)."""
        self.done = done
        if self.closed:
            return
        now = time.perf_counter()
        if self._first is None:
            self._first = (self._active_s(now), done)
        if now - self._shown_at < self.interval:
            return
        if not self.terminal and self.total is not None and done >= self.total:
            return  # the closing line reports it
        self._show(now)

    @contextlib.contextmanager
    def paused(self):
        """Time inside does not count towards this bar's rate and ETA (e.g. an evaluation inside training)."""
        self._pause()
        try:
            yield
        finally:
            self._resume()

    def set_postfix(self, fields: dict) -> None:
        """Extra `name value` fields after the rate (shown at the next redraw or line)."""
        self.postfix = dict(fields)

    def close(self, finished: bool = True) -> None:
        """The last line (with the total time when `finished`); the enclosing bar resumes."""
        if self.closed:
            return
        self.closed = True
        now = time.perf_counter()
        if finished:
            self._show(now, final=True)
        if self._on_screen:
            self._emit("\n")
            self._on_screen = False
        _open_bars.remove(self)
        if _open_bars:
            _open_bars[-1]._resume()

    # -- the rest

    def _active_s(self, now: float) -> float:
        paused = self.paused_s + (now - self._paused_at if self._paused_at is not None else 0.0)
        return now - self.started - paused

    def rate(self, now: float | None = None) -> float | None:
        """rate_scale x units per second of this bar's own time, from the first update on."""
        now = time.perf_counter() if now is None else now
        active = self._active_s(now)
        if self._first is not None and self.done > self._first[1] and active > self._first[0]:
            return (self.done - self._first[1]) / (active - self._first[0]) * self.rate_scale
        if self.done > self.initial and active > 0:
            return (self.done - self.initial) / active * self.rate_scale
        return None

    def text(self, now: float | None = None, final: bool = False) -> str:
        """The progress line without the drawn bar."""
        now = time.perf_counter() if now is None else now
        unit = f" {self.unit}" if self.unit else ""
        amount = f"{_amount(self.done)}/{_amount(self.total)}{unit}" if self.total is not None \
            else f"{_amount(self.done)}{unit}"
        parts = [amount + (f" {100 * self.done / self.total:.1f}%" if self.total else "")]
        rate = self.rate(now)
        if rate is not None:
            parts.append(f"{_number(float(rate))} {self.rate_unit}")
        if final:
            parts.append(f"done in {format_duration(now - self.started)}")
        else:
            parts.append(f"{format_duration(now - self.started)} elapsed")
            if rate and self.total is not None and self.total > self.done:
                parts.append(f"ETA {format_duration((self.total - self.done) / rate * self.rate_scale)}")
        parts += [f"{name} {_number(value)}" for name, value in self.postfix.items()]
        return " | ".join(parts)

    def _show(self, now: float, final: bool = False) -> None:
        self._shown_at = now
        text = self.text(now, final)
        if not self.terminal:
            self._emit(f"{self.label}: {text}\n")
            return
        columns = shutil.get_terminal_size().columns
        if self.total:
            filled = int(BAR_WIDTH * min(max(self.done / self.total, 0.0), 1.0))
            line = f"{self.label} |{'#' * filled}{'.' * (BAR_WIDTH - filled)}| {text}"
        else:
            line = f"{self.label}: {text}"
        with _output_lock:
            self._emit("\r" + line[:max(columns - 1, 10)] + "\x1b[K")  # never wrap: \r redraws one row only
            self._on_screen = True

    def _emit(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed pipe must not end the work it reports on
            pass

    def _pause(self) -> None:
        """Keep this line on the terminal and stop this bar's clock (pauses nest)."""
        if self._on_screen:
            self._emit("\n")
            self._on_screen = False
        self._pauses += 1
        if self._pauses == 1:
            self._paused_at = time.perf_counter()

    def _resume(self) -> None:
        self._pauses -= 1
        if self._pauses:
            return
        now = time.perf_counter()
        self.paused_s += now - self._paused_at
        self._paused_at = None
        if self.terminal and not self.closed:
            self._show(now)


def write(message: str, file=None) -> None:
    """Print one line (stdout by default) on the main process, around the bar on the terminal."""
    if not is_main_process():
        return
    file = file or sys.stdout
    with _output_lock:
        bar = _open_bars[-1] if _open_bars else None
        if bar is not None and bar._on_screen:
            bar._emit("\r\x1b[K")
            bar._on_screen = False
        file.write(message + "\n")  # one write: print() sends the newline separately, so threads' lines could merge
        file.flush()
        if bar is not None and bar.terminal:
            bar._show(time.perf_counter())
