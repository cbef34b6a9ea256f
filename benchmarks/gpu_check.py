"""Every GPU fact the project lacks, in one unattended run of at most 9 minutes.

    python benchmarks/gpu_check.py --out DIR [--budget-s 540] [--work DIR2]

Made for a fresh GPU machine that has torch, accelerate, tensorboard, pyyaml
and ninja but no network (docs/gpu.md gives the command and what to bring
back). The steps, in this order, each in its own process with its own time
box, cut to what the budget has left so that a slow step cannot eat the rest:

1. environment: GPU, compute capability, memory, torch/CUDA/cuDNN, nvcc,
   driver, the Python packages the project uses (missing ones named);
2. ops_build: build of the CUDA ops into a fresh cache (its time), their
   first-use check against the reference, and whether ops called on GPU
   tensors really launch the kernels (kernel names seen by the profiler).
   TORCH_CUDA_ARCH_LIST is cut to what the GPU runs; a build its time box cuts
   leaves its .failed marker; when the ops are not in use, every later step
   runs with SMALLGAN_OPS_IMPL=ref instead of building again in its own box;
3. gpu_tests: `pytest tests -k "(gpu or fp16) and not gpu_check"`, pass/fail per test;
4. ops_speed: benchmarks/ops_speed.py, CUDA vs reference, forward+backward,
   float32/float16/bfloat16;
5. train_speed: benchmarks/train_speed.py's measurement on configs/small300.yaml,
   fp32, bf16, fp16 with the CUDA ops, fp32 and bf16 without them, and bf16
   with train.compile, all in one process (one cold start), as time allows,
   each row with the host-to-device copies and host synchronizations of a
   step (training/transfers.py);
6. training: small300 on builtin:particles for the minutes left, in bf16
   (fp16 when it measured faster with finite losses);
7. samples: from the training's last checkpoint, 5000 PNGs (sample i from
   seed 0 as eval/generate.py makes it) in DIR/samples.zip (a second part,
   samples-2.zip, only when one would pass 15 MiB), the 300 real frames in
   DIR/real.zip, a grid in DIR/grid.png, and DIR/last.pt holding G_ema
   alone (in float16 when float32 would pass 15 MiB), so FID can be scored on
   a CPU machine with eval/fid.py.

DIR/gpu_check.json (one object) and DIR/gpu_check.md are rewritten
atomically when a step starts and when it ends, so a kill at any moment
leaves valid files that say what finished and which step was running;
DIR/gpu_check.log holds the end of each step's output. Builds, the training
run folder and full logs stay in --work (default: a fresh temporary folder),
so DIR holds at most 8 files. Nothing needs the network, pytorch-fid or the
Inception weights; a step whose prerequisites are missing (no GPU, no
pytest, a failed build) is skipped with a line saying why.
"""

import os
import sys

if __package__ in (None, ""):
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse
import datetime
import importlib.metadata
import importlib.util
import io
import json
import math
import platform
import re
import shutil
import signal
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ElementTree
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.abspath(__file__)
CONFIG = os.path.join(ROOT, "configs", "small300.yaml")

DEFAULT_BUDGET_S = 540.0
# Seconds kept back for the training and the sample export; every step
# before them gets at most what is left after this.
TRAINING_RESERVE_S = 150.0
SAMPLES_BOX_S = 60.0
MIN_TRAINING_S = 30.0
# A step with less than this left is skipped rather than started.
MIN_STEP_S = 10.0

# -k also matches module names: this script's own CPU tests are not GPU tests.
GPU_TESTS = "(gpu or fp16) and not gpu_check"
OPS_DTYPES = ["float32", "float16", "bfloat16"]
# (label, precision, CUDA ops, train.compile): most wanted first.
TRAIN_SPEED_RUNS = [
    ("fp32", "fp32", True, False),
    ("bf16", "bf16", True, False),
    ("fp16", "fp16", True, False),
    ("bf16, reference ops", "bf16", False, False),
    ("fp32, reference ops", "fp32", False, False),
    ("bf16, train.compile", "bf16", True, True),
]
TRAIN_SPEED_STEPS, TRAIN_SPEED_WARMUP = 64, 16  # multiples of the lazy R1 (8) and path-length (4) intervals
TRAIN_SPEED_BOX_S = {False: 45, True: 180}  # seconds per variant, by train.compile (G and D compile in a minute+)
TRAIN_SPEED_KEYS = ("img_per_s", "sec_per_kimg", "peak_mem_mb", "losses_finite", "ops_impl", "batch_size", "params_G",
                    "params_D", "host_to_device_per_step", "syncs_per_step", "seconds")
NUM_SAMPLES = 5000
PART_BYTES = 15 * 2**20  # under the 16 MiB a file may have to come back from the GPU machine
REQUIRED_PACKAGES = ["torch", "accelerate", "tensorboard", "pyyaml", "ninja", "numpy", "scipy", "pillow", "tqdm",
                     "pytest", "triton", "pytorch-fid"]


# ----------------------------------------------------------------------------
# Results, written as they come.


class Report:
    """DIR/gpu_check.json, .md and .log, rewritten atomically after every change."""

    def __init__(self, out_dir: str, budget_s: float, work_dir: str):
        self.out_dir = out_dir
        self.started = time.monotonic()
        self.data = {
            "command": "python benchmarks/gpu_check.py " + " ".join(sys.argv[1:]),
            "started_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
            "budget_s": budget_s,
            "work_dir": work_dir,
            "elapsed_s": 0.0,
            "finished": False,
            "steps": {},
        }
        self.logs: list[str] = []

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def step(self, name: str) -> dict:
        return self.data["steps"].setdefault(name, {})

    def log(self, name: str, text: str) -> None:
        self.logs.append(f"===== {name} =====\n{text.rstrip()}\n")
        self.save()

    def save(self) -> None:
        self.data["elapsed_s"] = round(self.elapsed(), 1)
        _write_atomic(os.path.join(self.out_dir, "gpu_check.json"), json.dumps(self.data, indent=1) + "\n")
        _write_atomic(os.path.join(self.out_dir, "gpu_check.md"), render_markdown(self.data))
        _write_atomic(os.path.join(self.out_dir, "gpu_check.log"), "".join(self.logs)[-4_000_000:])


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def say(message: str) -> None:
    """Progress on stderr, one line per event."""
    print(f"[gpu_check] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------
# Time-boxed subprocesses.


class Outcome:
    def __init__(self, returncode, seconds: float, timed_out: bool, output: str):
        self.returncode, self.seconds, self.timed_out, self.output = returncode, seconds, timed_out, output

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def status(self) -> str:
        return "timeout" if self.timed_out else ("ok" if self.returncode == 0 else "failed")

    def tail(self, chars: int = 2000) -> str:
        return self.output[-chars:]


_running: subprocess.Popen | None = None


def run_boxed(cmd: list[str], timeout: float, log_path: str, env: dict | None = None) -> Outcome:
    """Runs cmd in its own process group with stdout+stderr to log_path; at
    the timeout the whole group gets SIGTERM, then SIGKILL 10 s later, so
    nothing it started (pytest's subprocesses, compile workers) lives on."""
    global _running
    start = time.monotonic()
    timed_out = False
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, process_group=0)
        _running = proc
        try:
            proc.wait(timeout=max(timeout, 0.1))
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
        finally:
            _running = None
    with open(log_path, "rb") as log:
        output = log.read().decode("utf-8", "replace")
    return Outcome(proc.returncode, time.monotonic() - start, timed_out, output)


def _kill_group(proc: subprocess.Popen) -> None:
    for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _stop_on_signal(signum, frame):
    if _running is not None:
        _kill_group(_running)
    raise SystemExit(128 + signum)


def json_lines(text: str) -> list[dict]:
    """Every line of text that is one JSON object, in order."""
    found = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                found.append(value)
    return found


def last_json(text: str):
    """The last JSON object in text that starts at the beginning of a line
    (one line, or indented over several), or None."""
    decoder = json.JSONDecoder()
    for match in reversed(list(re.finditer(r"^\{", text, re.MULTILINE))):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


# ----------------------------------------------------------------------------
# The run.


class Check:
    def __init__(self, args):
        self.args = args
        self.out_dir = os.path.abspath(args.out)
        os.makedirs(self.out_dir, exist_ok=True)
        self.work = os.path.abspath(args.work or tempfile.mkdtemp(prefix="gpu_check-"))
        os.makedirs(self.work, exist_ok=True)
        self.report = Report(self.out_dir, args.budget_s, self.work)
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", SMALLGAN_OPS_CACHE=os.path.join(self.work, "ops_cache"))
        # ninja and pytest installed next to this Python count even when its folder is not on PATH.
        self.env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + self.env.get("PATH", "")
        self.cuda = False
        self.ops_cuda = False

    # Budget ----------------------------------------------------------------

    def left(self) -> float:
        return self.args.budget_s - self.report.elapsed()

    def box(self, wanted: float, reserve: float = TRAINING_RESERVE_S) -> float:
        """Seconds a step may take: `wanted`, cut so that `reserve` stays for what follows."""
        return min(wanted, self.left() - reserve)

    def begin(self, name: str, **info) -> dict:
        entry = self.report.step(name)
        entry.update(status="running", started_at_s=round(self.report.elapsed(), 1), **info)
        self.report.save()
        say(f"{name}: started ({self.left():.0f} s of the budget left)")
        return entry

    def end(self, name: str, status: str, **info) -> None:
        entry = self.report.step(name)
        started = entry.get("started_at_s", round(self.report.elapsed(), 1))
        entry.update(status=status, seconds=round(self.report.elapsed() - started, 1), **info)
        self.report.save()
        reason = f": {info['reason']}" if info.get("reason") else ""
        say(f"{name}: {status}{reason}")

    def skip(self, name: str, reason: str) -> None:
        self.report.step(name).update(status="skipped", reason=reason)
        self.report.save()
        say(f"{name}: skipped: {reason}")

    def python(self, *args: str) -> list[str]:
        return [sys.executable, *args]

    def boxed(self, name: str, cmd: list[str], timeout: float, env: dict | None = None, log_name: str | None = None):
        log_path = os.path.join(self.work, f"{log_name or name}.log")
        outcome = run_boxed(cmd, timeout, log_path, env or self.env)
        self.report.log(log_name or name, f"$ {' '.join(cmd)}\n(exit {outcome.returncode}, {outcome.seconds:.1f} s"
                                          f"{', killed at the time box' if outcome.timed_out else ''})\n"
                                          + outcome.tail(20000))
        return outcome

    # Steps -----------------------------------------------------------------

    def run(self) -> None:
        self.guarded("environment", self.environment)
        for step in (self.ops_build, self.gpu_tests, self.ops_speed, self.train_speed, self.training):
            name = step.__name__
            if not self.cuda:
                self.skip(name, "no CUDA device (torch.cuda.is_available() is False)")
                continue
            self.guarded(name, step)
        if not self.cuda:
            self.skip("samples", "no CUDA device (torch.cuda.is_available() is False)")
        self.report.data["finished"] = True
        self.report.save()
        say(f"done in {self.report.elapsed():.0f} s; results in {self.out_dir}")

    def guarded(self, name: str, step) -> None:
        """Runs a step; an error in gpu_check itself fails that step, not the run."""
        try:
            step()
        except Exception as e:
            import traceback

            self.report.log(name, traceback.format_exc())
            self.end(name, "failed", reason=f"gpu_check error: {type(e).__name__}: {e}")

    def environment(self) -> None:
        self.begin("environment")
        import torch

        info = {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "torch_cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "cuda_available": torch.cuda.is_available(),
            "TORCH_CUDA_ARCH_LIST": os.environ.get("TORCH_CUDA_ARCH_LIST"),
        }
        self.cuda = bool(info["cuda_available"])
        packages = {}
        for name in REQUIRED_PACKAGES:
            try:
                packages[name] = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                packages[name] = None
        info["packages"] = packages
        missing = [name for name, version in packages.items() if version is None]
        if missing:
            info["missing_packages"] = missing
            say(f"environment: not installed: {', '.join(missing)} (steps that need them are skipped)")
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            info.update(gpu=props.name, gpu_count=torch.cuda.device_count(),
                        compute_capability=f"{props.major}.{props.minor}",
                        gpu_memory_gib=round(props.total_memory / 2**30, 1),
                        multiprocessors=props.multi_processor_count)
        from ops import _build

        cuda_home = _build.find_cuda_home()
        info["cuda_home"] = cuda_home
        info["nvcc"] = _command_line([os.path.join(cuda_home, "bin", "nvcc"), "--version"], r"release [^\n]*") \
            if cuda_home else None
        if shutil.which("nvidia-smi"):
            info["nvidia_smi"] = _command_line(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,"
                                                "clocks.max.sm,power.limit", "--format=csv,noheader"], r".+")
        info["ninja"] = _command_line(["ninja", "--version"], r".+", self.env)
        self.end("environment", "ok", **info)

    def ops_build(self) -> None:
        self.begin("ops_build")
        outcome = self.boxed("ops_build", self.python(SCRIPT, "--probe-ops"), self.box(240))
        result = last_json(outcome.output) or {}
        self.ops_cuda = bool(result.get("cuda_path_used"))
        status = outcome.status() if outcome.status() != "ok" or self.ops_cuda else "failed"
        reason = result.get("error") or ("" if outcome.ok else f"exit {outcome.returncode}: {_last_line(outcome)}")
        if not self.ops_cuda:  # the later steps' processes would each try the build again inside their own boxes
            self.env["SMALLGAN_OPS_IMPL"] = "ref"
            result["later_steps"] = "SMALLGAN_OPS_IMPL=ref"
        self.end("ops_build", status, **result, **({"reason": reason} if reason else {}))

    def gpu_tests(self) -> None:
        if importlib.util.find_spec("pytest") is None:
            return self.skip("gpu_tests", "pytest is not installed")
        self.begin("gpu_tests", selection=f'-k "{GPU_TESTS}"')
        junit = os.path.join(self.work, "gpu_tests.xml")
        cmd = self.python("-m", "pytest", "tests", "-k", GPU_TESTS, "-v", "-rfE", "--tb=short", "-p",
                          "no:cacheprovider", "--continue-on-collection-errors", f"--junitxml={junit}")
        outcome = self.boxed("gpu_tests", cmd, self.box(150))
        tests = parse_pytest(outcome.output, junit)
        counts = {}
        for result in tests.values():
            counts[result["status"]] = counts.get(result["status"], 0) + 1
        failed = counts.get("failed", 0) + counts.get("error", 0)
        ran = sum(counts.get(s, 0) for s in ("passed", "failed", "error"))
        unimportable = [f"{t} ({r['message']})" for t, r in tests.items() if r["status"] == "collection_error"]
        info = {"not_collected": unimportable} if unimportable else {}
        if outcome.timed_out:
            status, info["reason"] = "timeout", _last_line(outcome)
        elif failed or not ran:
            status, info["reason"] = "failed", f"{failed} failed of {ran} run" if ran else _last_line(outcome)
        else:  # test files that could not be imported are named in not_collected, not counted as failures
            status = "ok"
            if counts.get("skipped"):  # on a GPU machine a GPU test should not skip
                info["note"] = f"{counts['skipped']} of the selected tests skipped"
        self.end("gpu_tests", status, counts=counts, tests=tests, **info)

    def ops_speed(self) -> None:
        if not self.ops_cuda:
            return self.skip("ops_speed", "the CUDA ops are not in use (see ops_build)")
        self.begin("ops_speed")
        results, statuses = {}, []
        for dtype in OPS_DTYPES:
            timeout = self.box(60)
            if timeout < MIN_STEP_S:
                results[dtype] = {"status": "skipped", "reason": "budget used up"}
                continue
            outcome = self.boxed("ops_speed", self.python("benchmarks/ops_speed.py", "--device", "cuda", "--dtype",
                                                          dtype, "--reps", "20"), timeout,
                                 log_name=f"ops_speed_{dtype}")
            report = last_json(outcome.output) if outcome.ok else None
            if report is None or "summary" not in report:
                results[dtype] = {"status": outcome.status(), "reason": _last_line(outcome)}
            else:
                results[dtype] = {"status": "ok", "summary": report["summary"],
                                  "cases": {c["case"]: {k: v for k, v in c.items() if k.endswith(("_ms", "_ref"))}
                                            for c in report["cases"]}}
            statuses.append(results[dtype]["status"])
            self.report.step("ops_speed")["by_dtype"] = results
            self.report.save()
        self.end("ops_speed", "ok" if statuses and all(s == "ok" for s in statuses) else "failed", by_dtype=results)

    def train_speed(self) -> None:
        if importlib.util.find_spec("accelerate") is None:
            return self.skip("train_speed", "accelerate is not installed")
        self.begin("train_speed", config="configs/small300.yaml", steps=TRAIN_SPEED_STEPS, warmup=TRAIN_SPEED_WARMUP)
        runs, wanted = [], []
        for index, (label, precision, cuda_ops, compile_) in enumerate(TRAIN_SPEED_RUNS):
            runs.append({"run": label, "precision": precision, "ops": "cuda" if cuda_ops else "ref",
                         "compile": compile_})
            if cuda_ops and not self.ops_cuda:
                runs[-1].update(status="skipped", reason="the CUDA ops are not in use (see ops_build)")
            else:
                wanted.append(index)
        # Every variant in one process: the imports, CUDA context and data come up once, not once per variant.
        timeout = self.box(60 + sum(TRAIN_SPEED_BOX_S[TRAIN_SPEED_RUNS[i][3]] for i in wanted))
        if wanted and timeout >= MIN_STEP_S:
            cmd = self.python(SCRIPT, "--probe-train-speed", ",".join(str(i) for i in wanted))
            outcome = self.boxed("train_speed", cmd, timeout)
            measured = {row.get("run"): row for row in json_lines(outcome.output)}
        else:
            outcome, measured = None, {}
        for index in wanted:
            row, result = runs[index], measured.get(runs[index]["run"])
            if outcome is None:
                row.update(status="skipped", reason=f"budget: {max(timeout, 0):.0f} s left for the variants")
            elif result is None:
                row.update(status="timeout" if outcome.timed_out else outcome.status(), reason=_last_line(outcome))
            elif "error" in result:
                row.update(status="failed", reason=result["error"])
            else:
                row.update(status="ok", **{key: result.get(key) for key in TRAIN_SPEED_KEYS})
        ok = [r for r in runs if r["status"] == "ok"]
        self.end("train_speed", "ok" if ok else "failed", runs=runs)

    def chosen_precision(self) -> tuple[str, float | None, str]:
        """(precision, its measured img/s or None, why) for the training run."""
        speed = {}
        for row in self.report.step("train_speed").get("runs", []):
            if row.get("status") == "ok" and not row["compile"] and row["ops"] == ("cuda" if self.ops_cuda else "ref"):
                speed[row["precision"]] = row
        bf16, fp16 = speed.get("bf16"), speed.get("fp16")
        if fp16 and fp16.get("losses_finite") and (not bf16 or fp16["img_per_s"] > bf16["img_per_s"]):
            return "fp16", fp16["img_per_s"], "fp16 measured faster than bf16 with finite losses"
        if bf16:
            return "bf16", bf16["img_per_s"], "bf16 (fp16 " + ("not measured)" if not fp16 else
                                                             "was not faster with finite losses)")
        fallback = speed.get("fp32")
        return "bf16", fallback["img_per_s"] if fallback else None, "bf16 (not measured; speed guessed from fp32)"

    def training(self) -> None:
        if importlib.util.find_spec("accelerate") is None:
            self.skip("training", "accelerate is not installed")
            return self.skip("samples", "no training run")
        precision, img_per_s, why = self.chosen_precision()
        seconds = self.left() - SAMPLES_BOX_S - 5
        if seconds < MIN_TRAINING_S:
            self.skip("training", f"budget: {max(seconds, 0):.0f} s left for it")
            return self.skip("samples", "no training run")
        # Startup (imports, data, the first sample grid) takes about 20 s; aim
        # the kimg at 85% of the rest and let the time box cut a slow run, which
        # still leaves the last periodic checkpoint.
        if img_per_s:
            kimg = max(round(img_per_s * (seconds - 25) * 0.85 / 1000, 1), 0.5)
            every = max(round(kimg / 5, 1), 0.5)
        else:
            kimg, every = 1000.0, 2.0
        run_dir = os.path.join(self.work, "train")
        shutil.rmtree(run_dir, ignore_errors=True)
        overrides = [f"out_dir={run_dir}", f"precision={precision}", f"train.kimg={kimg}", "eval.every_kimg=0",
                     f"train.checkpoint_every_kimg={every}", f"train.sample_every_kimg={every}"]
        self.begin("training", precision=precision, why=why, kimg_planned=kimg, overrides=overrides,
                   ops="cuda" if self.ops_cuda else "ref")
        outcome = self.boxed("training", self.python("train_stylegan2.py", "--config", CONFIG, *overrides), seconds)
        checkpoint = os.path.join(run_dir, "checkpoints", "last.pt")
        has_checkpoint = os.path.isfile(checkpoint)
        status = "ok" if outcome.ok else ("timeout" if outcome.timed_out and has_checkpoint else outcome.status())
        info = {} if outcome.ok else {"reason": _last_line(outcome) if not outcome.timed_out else
                                      "stopped at its time box; the last periodic checkpoint is used"}
        self.end("training", status, **info)
        if not has_checkpoint:
            return self.skip("samples", "the training wrote no checkpoint")
        self.begin("samples")
        outcome = self.boxed("samples", self.python(SCRIPT, "--export-samples", run_dir, "--out", self.out_dir),
                             max(self.left() - 2, 5))
        result = last_json(outcome.output) or {}
        self.end("samples", outcome.status(), **result,
                 **({"reason": _last_line(outcome)} if not outcome.ok else {}))
        if result.get("training_scalars"):
            self.report.step("training")["scalars"] = result.pop("training_scalars")
            self.report.step("samples").pop("training_scalars", None)
            self.report.save()


def _command_line(cmd: list[str], pattern: str, env: dict | None = None) -> str | None:
    """The first match of pattern in cmd's output, or a short note why there is none."""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20, env=env).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unavailable ({type(e).__name__})"
    match = re.search(pattern, out)
    return match.group(0).strip() if match else None


def _last_line(outcome: Outcome) -> str:
    if outcome.timed_out:
        return f"killed at its time box after {outcome.seconds:.0f} s"
    lines = [ln.strip() for ln in outcome.output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if re.search(r"error|exception|failed", ln, re.IGNORECASE)]
    return ((errors or lines or ["no output"])[-1])[:300]


def parse_pytest(output: str, junit_path: str) -> dict:
    """{test id: {"status", "message"?}} from pytest -v lines (there even when
    pytest was killed), with failure messages from its JUnit XML when written."""
    tests = {}
    for match in re.finditer(r"^(tests/\S+::\S+) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)", output, re.MULTILINE):
        tests[match[1]] = {"status": match[2].lower()}
    # A module that cannot be imported (say, it needs a package this machine lacks).
    for match in re.finditer(r"^ERROR (tests/[^\s:]+\.py)(?: - (.*))?$", output, re.MULTILINE):
        message = (match[2] or "").strip()
        if not message:  # the first "E   ..." line of that module's error report
            found = re.search(rf"ERROR collecting {re.escape(match[1])}.*?^E +(.+?)$", output, re.MULTILINE | re.DOTALL)
            message = found[1] if found else ""
        tests[match[1]] = {"status": "collection_error", "message": message.strip()[:500]}
    if os.path.isfile(junit_path):
        try:
            root = ElementTree.parse(junit_path).getroot()
        except ElementTree.ParseError:
            return tests
        for case in root.iter("testcase"):
            if not case.get("classname"):  # a collection error, already listed
                continue
            path = case.get("classname").replace(".", "/")
            test_id = f"{path}.py::{case.get('name')}"
            for kind in ("failure", "error", "skipped"):
                element = case.find(kind)
                if element is not None:
                    entry = tests.setdefault(test_id, {"status": "failed" if kind == "failure" else kind})
                    entry["message"] = (element.get("message") or "").strip()[:500]
    return tests


# ----------------------------------------------------------------------------
# Probes, each run in its own process by the steps above.


class TimeBoxExceeded(Exception):
    """run_boxed's SIGTERM, raised where the process is (inside a build: ops._build writes its .failed marker)."""


def leave_failed_marker_at_time_box() -> None:
    """A build cut by its time box then counts as a failed build, so the steps after it do not start it again."""
    def stop(signum, frame):
        raise TimeBoxExceeded("cut by gpu_check's time box")
    signal.signal(signal.SIGTERM, stop)


def probe_ops() -> dict:
    """Builds the ops (timed), runs their first-use check, and sees which
    kernels a forward+backward of the public ops launches."""
    import torch

    import ops
    from ops import _build, _dispatch, _selfcheck

    leave_failed_marker_at_time_box()
    result = {"cache": _build.cache_root()}
    start = time.perf_counter()
    try:
        module = _build.load()
    except _build.BuildUnavailable as e:
        return dict(result, built=False, build_s=round(time.perf_counter() - start, 1), error=str(e))
    result.update(built=True, build_s=round(time.perf_counter() - start, 1), arch_list=_build.default_arch_list())
    start = time.perf_counter()
    try:
        _selfcheck.verify_once(module)
        result.update(self_check="passed")
    except _selfcheck.KernelCheckFailed as e:
        result.update(self_check="failed", error=str(e))
    result["self_check_s"] = round(time.perf_counter() - start, 3)
    x = torch.randn(8, 16, 16, 16, device="cuda", requires_grad=True)
    b = torch.zeros(16, device="cuda")
    f = ops.setup_filter([1, 3, 3, 1], device="cuda")
    result["cuda_path_used"] = _dispatch.use_cuda(x, None)
    try:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            y = ops.bias_act(ops.upsample2d(x, f), b, act="lrelu")
            y.square().sum().backward()
            torch.cuda.synchronize()
        names = sorted({event.name for event in prof.events()})
        result["kernels_seen"] = [n for n in names if "upfirdn2d_kernel" in n or "bias_act_kernel" in n]
    except Exception as e:  # a profiler without CUPTI: the dispatch answer above still stands
        result["kernels_seen"] = f"profiler unavailable ({type(e).__name__}: {e})"
    return result


def probe_train_speed(indices: list[int], config: str = CONFIG, steps: int = TRAIN_SPEED_STEPS,
                      warmup: int = TRAIN_SPEED_WARMUP) -> None:
    """Times the TRAIN_SPEED_RUNS variants at `indices` one after the other in this process, printing one
    JSON line each as it finishes ({"run", "seconds", train_speed's keys} or {"run", "error"})."""
    import gc

    import torch
    from accelerate.state import AcceleratorState

    from benchmarks import train_speed

    module = train_speed.script_module("train_stylegan2.py")
    for index in indices:
        label, precision, cuda_ops, compile_ = TRAIN_SPEED_RUNS[index]
        os.environ["SMALLGAN_OPS_IMPL"] = "auto" if cuda_ops else "ref"  # read at every op call
        start = time.monotonic()
        try:
            result = train_speed.measure(module, config, [f"precision={precision}",
                                                          f"train.compile={str(compile_).lower()}"], steps, warmup)
            row = {"run": label, "seconds": round(time.monotonic() - start, 1), **result}
        except Exception as e:  # one variant's failure (an fp16 overflow, a compile error) is its row's
            row = {"run": label, "error": f"{type(e).__name__}: {e}"[:300]}
        print(json.dumps(row), flush=True)
        AcceleratorState._reset_state(reset_partial_state=True)  # the next variant's precision
        torch._dynamo.reset()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def export_samples(run_dir: str, out_dir: str, num_samples: int = NUM_SAMPLES) -> dict:
    """The training's last checkpoint as DIR/last.pt (G_ema), samples.zip,
    real.zip and grid.png; returns what was written."""
    import torch
    from PIL import Image

    import nets
    from training.checkpoint import load_checkpoint, save_checkpoint
    from training.data import load_images
    from training.images import make_grid, save_png, to_uint8

    checkpoint = load_checkpoint(os.path.join(run_dir, "checkpoints", "last.pt"))
    result = {"step": checkpoint["step"], "kimg": checkpoint["kimg"],
              "train_wallclock_s": round(checkpoint["wallclock_s"], 1)}
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sampler = nets.load_sampler(checkpoint, device, seed=0)

    def png(image: torch.Tensor) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(make_grid(image[None], columns=1)).save(buffer, format="PNG")
        return buffer.getvalue()

    parts, archive, size = [], None, 0
    start = time.perf_counter()
    with torch.no_grad():
        for first in range(0, num_samples, 500):
            images = to_uint8(sampler(torch.arange(first, min(first + 500, num_samples)))).cpu()
            if first == 0:
                save_png(make_grid(images[:64], columns=8), os.path.join(out_dir, "grid.png"))
            for index, image in enumerate(images, start=first):
                data = png(image)
                if archive is None or size + len(data) + 200 > PART_BYTES:
                    if archive is not None:
                        archive.close()
                    name = "samples.zip" if not parts else f"samples-{len(parts) + 1}.zip"
                    parts.append(name)
                    archive, size = zipfile.ZipFile(os.path.join(out_dir, name + ".tmp"), "w"), 0
                archive.writestr(f"{index:06d}.png", data)  # stored: PNGs are compressed already
                size += len(data) + 100 + 2 * len("000000.png")
    archive.close()
    for name in parts:
        os.replace(os.path.join(out_dir, name + ".tmp"), os.path.join(out_dir, name))
    result.update(samples=num_samples, sample_files=parts, sample_seed=0,
                  samples_s=round(time.perf_counter() - start, 1))

    real = load_images(checkpoint["config"]["data"]["path"], checkpoint["config"]["data"]["resolution"],
                       checkpoint["config"]["data"]["channels"])
    with zipfile.ZipFile(os.path.join(out_dir, "real.zip.tmp"), "w") as archive:
        for index, image in enumerate(real):
            archive.writestr(f"{index:06d}.png", png(image))
    os.replace(os.path.join(out_dir, "real.zip.tmp"), os.path.join(out_dir, "real.zip"))
    result["real_images"] = len(real)

    # G_ema alone; in float16 when float32 would not come back (load_state_dict casts it back).
    g_ema = checkpoint["G_ema"]
    float_bytes = sum(t.numel() * 4 for t in g_ema.values() if t.is_floating_point())
    dtype = torch.float32 if float_bytes < PART_BYTES - 2**20 else torch.float16
    g_ema = {k: t.to(dtype) if t.is_floating_point() else t for k, t in g_ema.items()}
    slim = {key: checkpoint[key] for key in ("model", "config", "step", "kimg", "wallclock_s", "params")
            if key in checkpoint}
    save_checkpoint({**slim, "G_ema": g_ema}, os.path.join(out_dir, "last.pt"))
    result.update(checkpoint="last.pt", checkpoint_dtype=str(dtype).removeprefix("torch."),
                  checkpoint_mib=round(os.path.getsize(os.path.join(out_dir, "last.pt")) / 2**20, 2))
    result["training_scalars"] = training_scalars(os.path.join(run_dir, "tb"))
    return result


def training_scalars(tb_dir: str) -> dict:
    """Last value of every TensorBoard scalar of the run, and the mean img/s."""
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        return {"note": "tensorboard is not installed"}
    if not os.path.isdir(tb_dir):
        return {}
    events = EventAccumulator(tb_dir, size_guidance={"scalars": 0})
    events.Reload()
    scalars = {}
    for tag in events.Tags().get("scalars", []):
        values = [e.value for e in events.Scalars(tag)]
        scalars[tag] = round(values[-1], 5) if math.isfinite(values[-1]) else str(values[-1])
        if tag == "Progress/img_per_s" and len(values) > 1:
            scalars["Progress/img_per_s_mean_after_first"] = round(sum(values[1:]) / len(values[1:]), 2)
    return scalars


# ----------------------------------------------------------------------------
# Markdown.


def render_markdown(data: dict) -> str:
    steps = data["steps"]
    lines = ["# gpu_check", "", f"`{data['command']}`, started {data['started_utc']} UTC, "
             f"{data['elapsed_s']:.0f} s of {data['budget_s']:.0f} s"
             f"{'' if data['finished'] else ' (not finished: the results so far)'}.", ""]
    for name, entry in steps.items():
        status = entry.get("status", "?")
        seconds = f", {entry['seconds']:.0f} s" if "seconds" in entry else ""
        reason = f": {entry['reason']}" if entry.get("reason") else ""
        reason += f" ({entry['note']})" if entry.get("note") else ""
        lines += [f"## {name}: {status}{seconds}{reason}", ""]
        if status != "skipped":
            lines += _STEP_LINES[name](entry) + [""]
    return "\n".join(lines)


def _environment_lines(e: dict) -> list[str]:
    keys = ["gpu", "compute_capability", "gpu_memory_gib", "multiprocessors", "nvidia_smi", "torch", "torch_cuda",
            "cudnn", "nvcc", "cuda_home", "ninja", "python", "cpu_count", "TORCH_CUDA_ARCH_LIST", "missing_packages"]
    return [f"- {k}: {e[k]}" for k in keys if k in e]


def _ops_build_lines(e: dict) -> list[str]:
    keys = ["arch_list", "built", "build_s", "self_check", "self_check_s", "cuda_path_used", "kernels_seen", "error",
            "later_steps"]
    return [f"- {k}: {e[k]}" for k in keys if k in e]


def _gpu_tests_lines(e: dict) -> list[str]:
    lines = [f"- {e.get('selection', '')}: {e.get('counts', {})}"]
    for test_id, result in e.get("tests", {}).items():
        if result["status"] not in ("passed", "skipped", "collection_error"):
            lines.append(f"- {result['status'].upper()} `{test_id}` {result.get('message', '')[:200]}")
    return lines + [f"- not collected: {module}" for module in e.get("not_collected", [])]


def _ops_speed_lines(e: dict) -> list[str]:
    lines = ["| dtype | reference ms | CUDA ms | speedup |", "| --- | ---: | ---: | ---: |"]
    for dtype, r in e.get("by_dtype", {}).items():
        s = r.get("summary")
        lines.append(f"| {dtype} | {s['ref_ms']} | {s['cuda_ms']} | {s['speedup_cuda_vs_ref']}x |" if s else
                     f"| {dtype} | {r.get('status')}: {r.get('reason', '')} | | |")
    return lines


def _train_speed_lines(e: dict) -> list[str]:
    lines = ["| run | img/s | sec/kimg | peak MiB | losses finite | ops | H2D copies / step | syncs / step |",
             "| --- | ---: | ---: | ---: | --- | --- | ---: | ---: |"]
    for r in e.get("runs", []):
        if r.get("status") == "ok":
            lines.append(f"| {r['run']} | {r['img_per_s']} | {r['sec_per_kimg']} | {r['peak_mem_mb']} | "
                         f"{r['losses_finite']} | {r.get('ops_impl')} | {r.get('host_to_device_per_step')} | "
                         f"{r.get('syncs_per_step')} |")
        else:
            lines.append(f"| {r['run']} | {r.get('status')}: {r.get('reason', '')} | | | | | | |")
    return lines


def _training_lines(e: dict) -> list[str]:
    keys = ["precision", "why", "ops", "kimg_planned", "overrides"]
    lines = [f"- {k}: {e[k]}" for k in keys if k in e]
    return lines + [f"- {k}: {v}" for k, v in e.get("scalars", {}).items()]


def _samples_lines(e: dict) -> list[str]:
    keys = ["kimg", "step", "train_wallclock_s", "samples", "sample_files", "real_images", "checkpoint",
            "checkpoint_dtype", "checkpoint_mib"]
    lines = [f"- {k}: {e[k]}" for k in keys if k in e]
    if e.get("status") == "ok":
        lines.append("- FID on a CPU machine: `python eval/fid.py --real real.zip --fake samples.zip --json` "
                     "(see docs/gpu.md)")
    return lines


_STEP_LINES = {"environment": _environment_lines, "ops_build": _ops_build_lines, "gpu_tests": _gpu_tests_lines,
               "ops_speed": _ops_speed_lines, "train_speed": _train_speed_lines, "training": _training_lines,
               "samples": _samples_lines}


# ----------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="folder for gpu_check.json/.md/.log and the training's samples")
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S,
                        help=f"wall-clock seconds for everything (default {DEFAULT_BUDGET_S:.0f})")
    parser.add_argument("--work", help="folder for the ops build, the training run and full logs "
                        "(default: a new temporary folder)")
    # Internal: the steps run these in their own processes.
    parser.add_argument("--probe-ops", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--export-samples", metavar="RUN_DIR", help=argparse.SUPPRESS)
    parser.add_argument("--probe-train-speed", metavar="INDICES", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe_ops:
        print(json.dumps(probe_ops()))
        return 0
    if args.probe_train_speed:
        probe_train_speed([int(i) for i in args.probe_train_speed.split(",")])
        return 0
    if not args.out:
        parser.error("--out is required")
    if args.export_samples:
        print(json.dumps(export_samples(args.export_samples, os.path.abspath(args.out))))
        return 0
    if args.budget_s <= 0:
        parser.error("--budget-s must be positive")
    signal.signal(signal.SIGTERM, _stop_on_signal)
    signal.signal(signal.SIGINT, _stop_on_signal)
    Check(args).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
