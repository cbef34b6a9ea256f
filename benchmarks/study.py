"""Run a study: named training variants to one kimg budget, evaluated alike, in one report.

    python benchmarks/study.py --plan benchmarks/plans/cpu32.yaml --out runs/study-cpu32 --jobs 2
    python benchmarks/study.py --plan benchmarks/plans/cpu32.yaml --out runs/study-cpu32 --report-only

A plan is YAML:

    kimg: 300                      # every variant trains this long
    eval: {every_kimg: 25, num_samples: 1000}   # periodic FID/KID/precision/recall
    copy_check_samples: 1000       # eval/memorization.py on the final networks
    variants:
      stylegan2-reference: {script: stylegan2, config: configs/stylegan2_cpu32_reference.yaml, set: {train.r1_gamma: 5}}
      stylegan2-ada: {base: stylegan2-reference, set: {augment.ada: true, augment.p: 0.0}}

`set` holds config overrides; `base` starts from another variant (its script,
config and overrides, then this variant's on top). Each variant trains in
DIR/<name>/ (an ordinary run folder, training log in DIR/<name>/train.log),
then its final networks get a copy check (DIR/<name>/memorization/report.json)
and its result is saved as DIR/<name>/result.json and result.png: the report's
numbers and newest samples, small enough to commit. A variant with a result is
finished, so a study folder reduced to its results (docs/study_cpu32) can be
reported, or copied into a fresh folder and continued, on another machine.

Stopping the study anywhere loses at most one checkpoint interval per
variant: rerunning the same command continues every unfinished variant with
`--resume auto` (exact resume) and skips finished ones; raising the plan's
kimg continues finished variants from their checkpoints and redoes their copy
check and result. A variant whose
training is alive in another process (its lock file is held) is left alone.
`--only a,b` trains just those variants now (a study spread over short
sessions). `--jobs N` trains N variants at once with `--threads` threads each
(default: the CPU cores divided by N, at least 1). After each variant, and at
the end, DIR/report.md is rewritten by benchmarks/compare.py's report over
every variant of the plan that has evaluations, finished or not. Progress
(kimg of all variants together, with an ETA) goes to stderr; each training's
own output to its train.log.
"""

import os
import sys

if __package__ in (None, ""):
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse
import fcntl
import json
import pathlib
import shutil
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace


from benchmarks import compare
from benchmarks.train_speed import config_class, script_module
from training.config import ConfigError, build_config, exit_with_error, read_yaml
from training.images import write_atomically
from training.progress import Progress, write

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ("stylegan2", "sagan")  # the models scored with FID; SinGAN learns one image
PLAN_KEYS = {"kimg", "eval", "copy_check_samples", "variants"}
VARIANT_KEYS = {"script", "config", "set", "base"}
RESULT_JSON, RESULT_PNG = "result.json", "result.png"  # a finished variant's result (save_result)


class StudyError(ValueError):
    """A plan or study folder problem; the message says what to change."""


@dataclass
class Variant:
    name: str
    script: str                                   # stylegan2 | sagan
    config: str                                   # YAML path, relative to the repository root
    overrides: dict = field(default_factory=dict)  # dotted key -> value


@dataclass
class Plan:
    kimg: float
    eval_every_kimg: float
    eval_num_samples: int
    copy_check_samples: int
    variants: list[Variant]


# ---------------------------------------------------------------------------
# The plan

def read_plan(path: str) -> Plan:
    """Parse and check a plan, including every variant's config, before anything trains."""
    try:
        raw = read_yaml(path, "--plan")
    except ConfigError as e:
        raise StudyError(str(e))
    if not isinstance(raw, dict):
        raise StudyError(f"--plan: {path} must be a mapping with kimg, eval and variants")
    unknown = set(raw) - PLAN_KEYS
    if unknown:
        raise StudyError(f"{path}: unknown key(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(PLAN_KEYS))})")
    evaluation = raw.get("eval") or {}
    try:
        kimg = float(raw["kimg"])
        every, samples = float(evaluation["every_kimg"]), int(evaluation["num_samples"])
        copy_samples = int(raw.get("copy_check_samples", 1000))
    except (KeyError, TypeError, ValueError) as e:
        raise StudyError(f"{path}: needs kimg (a number), eval.every_kimg (a number) and eval.num_samples "
                         f"(an integer); problem with {e}")
    if kimg <= 0 or every <= 0 or samples < 4 or copy_samples < 4:
        raise StudyError(f"{path}: kimg and eval.every_kimg must be positive, eval.num_samples and "
                         f"copy_check_samples at least 4")
    declared = raw.get("variants")
    if not isinstance(declared, dict) or not declared:
        raise StudyError(f"{path}: variants must map names to {{script, config, set}}")
    variants = [resolve_variant(name, declared, path) for name in declared]
    for variant in variants:
        check_variant_config(variant, path)
    return Plan(kimg, every, samples, copy_samples, variants)


def resolve_variant(name: str, declared: dict, path: str, seen: tuple = ()) -> Variant:
    """A variant with its `base` chain applied: the base's script, config and overrides, then its own."""
    if name in seen:
        raise StudyError(f"{path}: variant {name}: base chain {' -> '.join((*seen, name))} loops")
    if not isinstance(name, str) or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise StudyError(f"{path}: variant name {name!r} must be letters, digits, '-', '_' or '.' (it names a folder)")
    spec = declared[name]
    if not isinstance(spec, dict) or set(spec) - VARIANT_KEYS:
        raise StudyError(f"{path}: variant {name}: expected a mapping with keys {', '.join(sorted(VARIANT_KEYS))}")
    overrides = spec.get("set") or {}
    if not isinstance(overrides, dict):
        raise StudyError(f"{path}: variant {name}: set must map dotted config keys to values")
    if "base" in spec:
        if spec["base"] not in declared:
            raise StudyError(f"{path}: variant {name}: base {spec['base']!r} is not a variant of this plan")
        base = resolve_variant(spec["base"], declared, path, (*seen, name))
        script, config = spec.get("script", base.script), spec.get("config", base.config)
        overrides = {**base.overrides, **overrides}
    else:
        script, config = spec.get("script"), spec.get("config")
    if script not in SCRIPTS:
        raise StudyError(f"{path}: variant {name}: script must be one of {', '.join(SCRIPTS)}, got {script!r}")
    if not isinstance(config, str) or not os.path.isfile(os.path.join(ROOT, config)):
        raise StudyError(f"{path}: variant {name}: config file not found: {config}")
    return Variant(name, script, config, overrides)


def override_args(overrides: dict) -> list[str]:
    """Dotted overrides as command-line `key=value` (strings raw, everything else as YAML/JSON)."""
    return [f"{key}={value if isinstance(value, str) else json.dumps(value)}" for key, value in overrides.items()]


def training_overrides(plan: Plan, variant: Variant, out_dir: str) -> list[str]:
    study = {"out_dir": out_dir, "train.kimg": plan.kimg, "eval.every_kimg": plan.eval_every_kimg,
             "eval.num_samples": plan.eval_num_samples}
    return override_args({**variant.overrides, **study})


def check_variant_config(variant: Variant, path: str) -> None:
    """Build the variant's config as its script would, so a typo fails now and not hours into the study."""
    module = script_module(f"train_{variant.script}")
    try:
        build_config(config_class(module), os.path.join(ROOT, variant.config), override_args(variant.overrides))
    except ConfigError as e:
        raise StudyError(f"{path}: variant {variant.name}: {e}")


# ---------------------------------------------------------------------------
# Running

def last_checkpoint(run_dir: str) -> str:
    return os.path.join(run_dir, "checkpoints", "last.pt")


def trained_kimg(run_dir: str) -> float:
    """kimg reached by the variant: its last checkpoint's, else its saved result's (0 when it has neither)."""
    import torch
    path = last_checkpoint(run_dir)
    if os.path.isfile(path):
        return float(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["kimg"])  # mmap: no tensor is read
    if os.path.isfile(os.path.join(run_dir, RESULT_JSON)):
        return float(read_result(run_dir)["kimg"])
    return 0.0


class VariantLock:
    """An exclusive lock on a variant's folder, held by the study and inherited by its training process,
    so a second study process (or a rerun while an orphaned training still runs) leaves the variant alone."""

    def __init__(self, run_dir: str):
        os.makedirs(run_dir, exist_ok=True)
        self.fd = os.open(os.path.join(run_dir, "study.lock"), os.O_RDWR | os.O_CREAT, 0o644)

    def acquire(self) -> bool:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def release(self) -> None:
        os.close(self.fd)


def run_logged(command: list[str], log_path: str, threads: int, lock: VariantLock) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with open(log_path, "a") as log:
        log.write("$ " + " ".join(command) + "\n")
        log.flush()
        result = subprocess.run(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                pass_fds=(lock.fd,))
    if result.returncode != 0:
        raise StudyError(f"{command[1]} exited with status {result.returncode}; see {log_path}")


def run_variant(plan: Plan, variant: Variant, out: str, threads: int) -> str:
    """Train (or continue) one variant to the budget, then check its final networks for copies."""
    run_dir = os.path.join(out, variant.name)
    lock = VariantLock(run_dir)
    try:
        if not lock.acquire():
            return f"{variant.name}: another process is running it (lock held); left alone"
        kimg = trained_kimg(run_dir)
        trained = kimg >= plan.kimg - 1e-9
        if trained and os.path.isfile(os.path.join(run_dir, RESULT_JSON)):
            return f"{variant.name}: finished"
        log_path = os.path.join(run_dir, "train.log")
        if not trained:
            if kimg and not os.path.isfile(last_checkpoint(run_dir)):
                raise StudyError(f"its result is at {kimg:g} kimg, the plan asks for {plan.kimg:g}, and no checkpoint "
                                 f"is left to continue from: copy its run folder into {out} or lower the plan's kimg")
            # A raised budget: the copy check and result of the shorter training no longer describe the networks.
            for stale in (compare.copy_check_path(run_dir), os.path.join(run_dir, RESULT_JSON),
                          os.path.join(run_dir, RESULT_PNG)):
                if os.path.isfile(stale):
                    os.remove(stale)
            run_logged([sys.executable, f"train_{variant.script}.py", "--config", variant.config, "--resume", "auto",
                        *training_overrides(plan, variant, run_dir)], log_path, threads, lock)
        if not os.path.isfile(compare.copy_check_path(run_dir)):
            checkpoint = last_checkpoint(run_dir)
            run_logged([sys.executable, "eval/memorization.py", "--ckpt", checkpoint, "--num",
                        str(plan.copy_check_samples), "--out", os.path.dirname(compare.copy_check_path(run_dir))],
                       log_path, threads, lock)
        save_result(run_dir)
        return f"{variant.name}: finished now"
    finally:
        lock.release()


def run_study(plan: Plan, out: str, jobs: int, threads: int, poll_s: float = 10.0,
              report_plan: Plan | None = None) -> list[str]:
    """Every unfinished variant of `plan`, `jobs` at a time, in plan order; after each one the report over
    `report_plan`'s variants (default: the same).

    A bar counts the kimg of all variants together (read from their checkpoints every `poll_s`
    seconds), so the study shows its pace and ETA while the trainings write to their own logs.
    """
    report_lock, finished = threading.Lock(), threading.Event()
    failures = []

    def one(variant: Variant) -> None:
        try:
            message = run_variant(plan, variant, out, threads)
        except StudyError as e:
            message = f"{variant.name}: FAILED: {e}"
            failures.append(message)
        write(message)
        with report_lock:
            try:
                write_study_report(report_plan or plan, out)
            except Exception as e:  # a report problem must not stop hours of training; the final one reports it
                write(f"report not written yet: {type(e).__name__}: {e}")

    def kimg_done() -> float:
        return sum(min(trained_kimg(os.path.join(out, v.name)), plan.kimg) for v in plan.variants)

    with Progress("study", total=plan.kimg * len(plan.variants), unit="kimg", done=kimg_done()) as bar:
        def watch() -> None:
            while not finished.wait(poll_s):
                bar.set(kimg_done())

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            list(pool.map(one, plan.variants))
        finished.set()
        watcher.join()
        bar.set(kimg_done())
    return failures


# ---------------------------------------------------------------------------
# A finished variant's result: what the report needs, without the run folder

def save_result(run_dir: str) -> None:
    """DIR/<name>/result.json (config, evaluations, parameter counts, speed, copy rate) and result.png (the
    newest sample grid): two small files that stand for the finished variant, so a study folder reduced to
    them (docs/study_cpu32) is reported, and continued on another machine, without checkpoints or logs."""
    run = compare.read_run(run_dir)
    result = {key: run[key] for key in ("name", "config", "records", "params", "kimg", "throughput", "copy_rate")}
    if run["last_samples"]:
        write_atomically(os.path.join(run_dir, RESULT_PNG), lambda tmp: shutil.copyfile(run["last_samples"], tmp),
                         ".png")
    write_atomically(os.path.join(run_dir, RESULT_JSON),
                     lambda tmp: pathlib.Path(tmp).write_text(json.dumps(result, indent=1)), ".json")


def read_result(run_dir: str) -> dict:
    """A saved result in the form of compare.read_run's."""
    with open(os.path.join(run_dir, RESULT_JSON)) as f:
        run = json.load(f)
    samples = os.path.join(run_dir, RESULT_PNG)
    return {**run, "dir": run_dir, "last_samples": samples if os.path.isfile(samples) else None}


# ---------------------------------------------------------------------------
# The report

def write_study_report(plan: Plan, out: str) -> str | None:
    """DIR/report.md over every variant with evaluations so far (compare.py's report)."""
    runs = []
    for variant in plan.variants:
        run_dir = os.path.join(out, variant.name)
        if os.path.isfile(os.path.join(run_dir, RESULT_JSON)):
            runs.append(read_result(run_dir))
        elif os.path.isfile(os.path.join(run_dir, "metrics.jsonl")) and os.path.isfile(
                last_checkpoint(run_dir)):
            runs.append(compare.read_run(run_dir))
    if not runs:
        return None
    title = f"Study: {len(runs)} of {len(plan.variants)} variant(s), budget {plan.kimg:g} kimg"
    return compare.write_report(runs, out, title=title)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plan", required=True, help="the study's YAML plan")
    parser.add_argument("--out", required=True, help="study folder: one run folder per variant and report.md")
    parser.add_argument("--jobs", type=int, default=1, help="variants trained at once")
    parser.add_argument("--threads", type=int, help="threads per variant (default: CPU cores / jobs, at least 1)")
    parser.add_argument("--report-only", action="store_true", help="rewrite report.md from the run folders; train nothing")
    parser.add_argument("--only", help="comma-separated variants to train now (default: all); the report covers all")
    args = parser.parse_args(argv)
    if args.jobs < 1 or (args.threads is not None and args.threads < 1):
        exit_with_error("--jobs and --threads must be positive integers")
    try:
        plan = read_plan(args.plan)
    except StudyError as e:
        exit_with_error(str(e))
    chosen = plan.variants
    if args.only:
        names = [name.strip() for name in args.only.split(",")]
        unknown = [name for name in names if name not in {v.name for v in plan.variants}]
        if unknown:
            exit_with_error(f"--only: {', '.join(unknown)} not in {args.plan} (its variants: "
                            f"{', '.join(v.name for v in plan.variants)})")
        chosen = [v for v in plan.variants if v.name in names]
    os.makedirs(args.out, exist_ok=True)
    failures = []
    if not args.report_only:
        threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
        failures = run_study(replace(plan, variants=chosen), args.out, args.jobs, threads, report_plan=plan)
    report = write_study_report(plan, args.out)
    print(f"report: {report}" if report else "report: no variant has evaluations yet")
    for failure in failures:
        print(failure, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
