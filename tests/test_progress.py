"""training/progress.py and where it is used: bars on a terminal, plain lines elsewhere, during the work.

The display's arithmetic (rate, ETA, line interval, pauses) runs on a fake
clock; a toy training and eval/fid.py --json run with stderr captured as a
non-terminal and show that progress lines arrive while the work goes on and
that stdout's last line stays the JSON object.
"""

import io
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from plumbing import ROOT
from test_eval_fid import PixelFeatures, run_main, write_pngs
from training import progress
from training.config import DataConfig, TrainConfig
from training.loop import cpu_speed_notice
from training.progress import Progress, describe_duration, format_duration


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(progress.time, "perf_counter", fake.perf_counter)
    return fake


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


# ---------------------------------------------------------------------------
# The display

def test_plain_lines_at_the_first_update_every_interval_and_at_the_end(clock, monkeypatch):
    monkeypatch.setenv(progress.INTERVAL_ENV, "30")
    stream = io.StringIO()
    bar = Progress("fit", total=100, unit="step", stream=stream)
    for t, done in ((10, 1), (20, 2), (40, 3), (55, 4), (71, 5)):
        clock.now = 1000 + t
        bar.set(done)
    clock.now = 1000 + 80
    bar.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and len(lines) == 4
    # first update (t=10): no rate yet beyond the time since the start: 1 step in 10 s
    assert lines[0] == "fit: 1/100 step 1.0% | 0.1 step/s | 10s elapsed | ETA 16m30s"
    # t=40, 30 s after the last line: rate from the first update on, (3 - 1) / (40 - 10) s
    assert lines[1] == "fit: 3/100 step 3.0% | 0.0667 step/s | 40s elapsed | ETA 24m15s"
    assert lines[2].startswith("fit: 5/100 step 5.0% | 0.0656 step/s | 1m11s elapsed")  # 4 / 61 s
    assert lines[3] == "fit: 5/100 step 5.0% | 0.0571 step/s | done in 1m20s"  # 4 / 70 s


def test_interval_zero_prints_every_update_and_the_total_only_once(clock, monkeypatch):
    monkeypatch.setenv(progress.INTERVAL_ENV, "0")
    stream = io.StringIO()
    with Progress("gen", total=3, unit="img", stream=stream) as bar:
        for _ in range(3):
            clock.now += 1
            bar.update()
    lines = stream.getvalue().splitlines()
    assert [line.split(" |")[0] for line in lines] == [
        "gen: 1/3 img 33.3%", "gen: 2/3 img 66.7%", "gen: 3/3 img 100.0%"]
    assert "done in 3s" in lines[-1]


def test_terminal_bar_redraws_one_row_and_ends_with_a_newline(clock, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    stream = Terminal()
    with Progress("extract", total=10, unit="img", stream=stream) as bar:
        for step in range(10):
            clock.now += 0.5
            bar.set_postfix({"loss": 0.123456} | ({"note": "long " * 30} if step == 9 else {}))
            bar.update()
    text = stream.getvalue()
    assert text.endswith("\n") and text.count("\n") == 1
    frames = [frame.replace("\x1b[K", "").rstrip("\n") for frame in text.split("\r")[1:]]
    assert len(frames) == 12  # opening, ten updates, the final one
    assert max(len(frame) for frame in frames) == 99  # cut to the terminal's width: a wrapped line would not redraw
    assert frames[0] == "extract |........................| 0/10 img 0.0% | 0s elapsed"
    assert frames[1] == "extract |##......................| 1/10 img 10.0% | 2 img/s | 0s elapsed | ETA 4s | loss 0.123"
    assert frames[-1].startswith("extract |########################| 10/10 img 100.0% | 2 img/s | done in 5s |")


def test_inner_bar_pauses_the_outer_one(clock, monkeypatch):
    monkeypatch.setenv(progress.INTERVAL_ENV, "0")
    stream = io.StringIO()
    outer = Progress("train", total=4, unit="kimg", rate_unit="img/s", rate_scale=1000, stream=stream)
    clock.now += 1
    outer.set(1)
    clock.now += 1
    outer.set(2)
    with Progress("eval", total=2, unit="img", stream=stream) as inner:
        clock.now += 100
        inner.update(2)
    with outer.paused():
        clock.now += 50  # saving, loading a network: not training either
    clock.now += 1
    outer.set(3)
    outer.close()
    lines = stream.getvalue().splitlines()
    assert [line.split(":")[0] for line in lines] == ["train", "train", "eval", "train", "train"]
    assert "| 1000 img/s |" in lines[3]  # (3 - 1) kimg in the 2 s of training, not in 152 s
    assert "ETA 1s" in lines[3]
    assert "done in 2m33s" in lines[4]  # the wall clock still counts everything


def test_write_clears_and_redraws_the_terminal_bar(clock, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    stream = Terminal()
    with Progress("train", total=2, unit="kimg", stream=stream) as bar:
        clock.now += 1
        bar.update()
        progress.write("kimg 1.00: fid 42")
        assert stream.getvalue().endswith("1/2 kimg 50.0% | 1 kimg/s | 1s elapsed | ETA 1s\x1b[K")
        assert "\r\x1b[K\rtrain |" in stream.getvalue()  # cleared before the message, drawn again after
    assert capsys.readouterr().out == "kimg 1.00: fid 42\n"


def test_lines_written_from_threads_at_once_stay_whole():
    class SlowStream(io.StringIO):  # a write that yields to other threads, as a pipe to a busy reader does
        def write(self, text):
            time.sleep(0.002)
            return super().write(text)

    stream = SlowStream()
    names = [f"variant-{i}: finished now" for i in range(8)]
    threads = [threading.Thread(target=progress.write, args=(name, stream)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(stream.getvalue().splitlines()) == sorted(names)


def test_only_the_main_process_reports(monkeypatch, capsys):
    stream = io.StringIO()
    monkeypatch.setenv("RANK", "1")
    with Progress("gen", total=2, stream=stream) as bar:
        bar.update(2)
    progress.write("hello")
    monkeypatch.setenv("RANK", "0")
    with Progress(None, total=2, stream=stream) as bar:  # no label: an optional bar that is off
        bar.update(2)
    assert stream.getvalue() == "" and capsys.readouterr().out == ""


def test_bad_interval_warns_and_uses_the_default(monkeypatch):
    monkeypatch.setenv(progress.INTERVAL_ENV, "often")
    with pytest.warns(UserWarning, match=progress.INTERVAL_ENV):
        assert progress.line_interval() == progress.DEFAULT_INTERVAL_S


def test_durations():
    assert [format_duration(s) for s in (0.4, 42, 725, 3 * 3600 + 7 * 60, 5 * 86400 + 4 * 3600)] == \
        ["0s", "42s", "12m05s", "3h07m", "5d04h"]
    assert [describe_duration(s) for s in (1, 40, 60, 720, 5400, 3 * 86400, 8 * 86400, 36 * 86400, 59 * 86400,
                                           800 * 86400)] == \
        ["~1 second", "~40 seconds", "~1 minute", "~12 minutes", "~1.5 hours", "~3 days", "~8 days", "~5 weeks",
         "~1.9 months", "~2.2 years"]


def test_cpu_speed_notice_names_the_cpu_config_when_the_wait_is_long():
    class Config:
        data, train = DataConfig(resolution=64), TrainConfig(kimg=3000)

    # 1700 s/kimg x 3000 kimg = 5.1e6 s = 59 days
    assert cpu_speed_notice(Config, "stylegan2", 1700.0) == \
        "64 px on CPU: ~1700 s/kimg, 3000 kimg would take ~1.9 months; configs/stylegan2_cpu32.yaml runs in minutes"
    assert cpu_speed_notice(Config, "stylegan2", 1700.0, resumed_at_kimg=2999.5) == \
        "64 px on CPU: ~1700 s/kimg, the remaining 0.5 kimg would take ~14 minutes"
    Config.data = DataConfig(resolution=32)
    assert cpu_speed_notice(Config, "sagan", 6.6) == "32 px on CPU: ~6.6 s/kimg, 3000 kimg would take ~6 hours"


# ---------------------------------------------------------------------------
# In the tools, with stderr not a terminal

class TimedStream(io.StringIO):
    """stderr that notes, for each line, how many feature batches had been extracted when it was written."""

    def __init__(self, extractor):
        super().__init__()
        self.extractor, self.lines, self.partial = extractor, [], ""

    def write(self, text: str) -> int:
        self.partial += text
        while "\n" in self.partial:
            line, self.partial = self.partial.split("\n", 1)
            self.lines.append((self.extractor.calls, line))
        return super().write(text)


class CountingFeatures(PixelFeatures):
    calls = 0

    def __call__(self, images):
        CountingFeatures.calls += 1
        return super().__call__(images)


def test_fid_json_shows_each_phase_while_it_runs(tmp_path, monkeypatch, capsys):
    real, fake = write_pngs(tmp_path / "real", 10, seed=0), write_pngs(tmp_path / "fake", 9, seed=1, shift=30)
    extractor = CountingFeatures()
    monkeypatch.setattr("eval.fid.feature_extractor", lambda device: extractor)
    monkeypatch.setenv(progress.INTERVAL_ENV, "0")
    stderr = TimedStream(extractor)
    monkeypatch.setattr(sys, "stderr", stderr)
    code, out, _ = run_main(["--real", real, "--fake", fake, "--batch-size", "4", "--no-cache", "--json"], capsys)
    assert code == 0
    assert len(out.splitlines()) == 1 and json.loads(out.splitlines()[-1])["num_fake"] == 9
    assert "\r" not in stderr.getvalue()
    # Each line was written right after the batch it reports, before the next one was extracted.
    assert [(calls, line.split(" |")[0]) for calls, line in stderr.lines] == [
        (1, "real features: 4/10 img 40.0%"), (2, "real features: 8/10 img 80.0%"),
        (3, "real features: 10/10 img 100.0%"),
        (4, "fake features: 4/9 img 44.4%"), (5, "fake features: 8/9 img 88.9%"),
        (6, "fake features: 9/9 img 100.0%")]


def test_training_progress_arrives_during_the_run(tmp_path):
    """A toy training with an evaluation half way: its lines come while the process still works."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **{progress.INTERVAL_ENV: "0"})
    command = [sys.executable, "tests/toy_gan.py", "data.path=builtin:particles?count=8", "data.resolution=16",
               "train.batch_size=8", "train.kimg=0.064", "train.log_every_kimg=0.032", "eval.every_kimg=0.032",
               "eval.num_samples=8", "eval.kid_subsets=2", "eval.kid_subset_size=4", f"out_dir={tmp_path / 'run'}"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    arrived = {"stdout": [], "stderr": []}  # (seconds, still running, line)

    def read(name, pipe):
        for line in pipe:
            arrived[name].append((time.monotonic(), process.poll() is None, line.rstrip("\n")))

    readers = [threading.Thread(target=read, args=item) for item in (("stdout", process.stdout),
                                                                     ("stderr", process.stderr))]
    for reader in readers:
        reader.start()
    assert process.wait(timeout=300) == 0, arrived
    for reader in readers:
        reader.join()
    stderr = arrived["stderr"]
    assert not any("\r" in line for _, _, line in stderr)

    train = [(t, running, line) for t, running, line in stderr if line.startswith("train: ")]
    done = [float(line.split()[1].split("/")[0]) for _, _, line in train]
    # every step but the last, which the closing line reports
    assert done == pytest.approx([0.008 * k for k in range(1, 8)] + [0.064]), train
    assert "img/s" in train[0][2] and "ETA" in train[0][2] and "done in" in train[-1][2]
    assert all(running for _, running, _ in train[:-1])
    assert "G/total" not in train[3][2] and "G/total" in train[4][2]  # losses join at log_every_kimg
    notice = [line for _, _, line in stderr if line.startswith("16 px on CPU: ~")]
    assert len(notice) == 1 and "0.064 kimg would take" in notice[0]

    # The evaluation after step 4 shows its own bar between the training lines of steps 4 and 5 ...
    order = [line for _, _, line in stderr]
    eval_bar = [i for i, line in enumerate(order) if line.startswith("generated features: 8/8 img")]
    assert len(eval_bar) == 2 and order.index(train[3][2]) < eval_bar[0] < order.index(train[4][2])
    # ... and the line of step 4 arrived well before that evaluation's result on stdout.
    result = next(t for t, _, line in arrived["stdout"] if line.startswith("kimg 0.03: fid"))
    assert train[3][0] < result
