"""benchmarks/study.py: plans, interrupted studies continued by rerunning, locks, the report."""

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time

import yaml

from plumbing import ROOT, assert_state_close, load_checkpoint, run_script


def write_plan(path, variants: dict, kimg: float, every_kimg: float, num_samples: int = 16) -> str:
    plan = {"kimg": kimg, "eval": {"every_kimg": every_kimg, "num_samples": num_samples},
            "copy_check_samples": 8, "variants": variants}
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return str(path)


# SAGAN at 16 px is fast enough to give a study hundreds of steps in seconds: room to interrupt it.
SAGAN = {"script": "sagan", "config": "configs/sagan_tiny.yaml",
         "set": {"train.checkpoint_every_kimg": 0.128, "train.sample_every_kimg": 1.0, "eval.every_epochs": []}}


def test_a_study_stopped_mid_training_and_rerun_equals_an_uninterrupted_one(tmp_path):
    plan = write_plan(tmp_path / "plan.yaml", {"sagan-a": SAGAN}, kimg=1.024, every_kimg=0.512)
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    run_script("benchmarks/study.py", ["--plan", plan, "--out", str(straight)])

    command = [sys.executable, "benchmarks/study.py", "--plan", plan, "--out", str(stopped)]
    study = subprocess.Popen(command, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    last = stopped / "sagan-a" / "checkpoints" / "last.pt"
    try:
        deadline = time.time() + 300
        while not (last.exists() and 0 < load_checkpoint(stopped / "sagan-a")["kimg"] < 1.024):
            assert study.poll() is None, "the study finished before it could be stopped"
            assert time.time() < deadline
            time.sleep(0.2)
    finally:  # the whole process group: the study and the training it started
        os.killpg(study.pid, signal.SIGKILL)
        study.wait()
    stopped_at = load_checkpoint(stopped / "sagan-a")["kimg"]
    assert not (stopped / "sagan-a" / "memorization" / "report.json").exists()

    result = run_script("benchmarks/study.py", ["--plan", plan, "--out", str(stopped)])
    assert "sagan-a: finished now" in result.stdout
    a, b = load_checkpoint(straight / "sagan-a"), load_checkpoint(stopped / "sagan-a")
    assert a["step"] == b["step"] == 128 and stopped_at < a["kimg"]
    for name in ("G", "G_ema", "D"):
        assert_state_close(a[name], b[name], path=name)
    log = (stopped / "sagan-a" / "train.log").read_text()
    assert f"resumed from {last}" in log

    # A finished study is left as it is; a lost copy check and result are redone without training again.
    mtime = last.stat().st_mtime_ns
    assert "sagan-a: finished\n" in run_script("benchmarks/study.py", ["--plan", plan, "--out", str(stopped)]).stdout
    for lost in ("memorization/report.json", "result.json"):
        (stopped / "sagan-a" / lost).unlink()
    run_script("benchmarks/study.py", ["--plan", plan, "--out", str(stopped)])
    assert (stopped / "sagan-a" / "memorization" / "report.json").exists() and last.stat().st_mtime_ns == mtime
    assert json.loads((stopped / "sagan-a" / "result.json").read_text())["kimg"] == a["kimg"]

    # A raised budget continues the finished variant and redoes its copy check and result for the new networks,
    # unless only its result is left: then nothing can continue and the study says so.
    kept = tmp_path / "kept" / "sagan-a"
    kept.mkdir(parents=True)
    for result in ("result.json", "result.png"):
        (kept / result).write_bytes((stopped / "sagan-a" / result).read_bytes())
    longer = write_plan(tmp_path / "longer.yaml", {"sagan-a": SAGAN}, kimg=1.28, every_kimg=0.512)
    copy_check = stopped / "sagan-a" / "memorization" / "report.json"
    copy_check_mtime = copy_check.stat().st_mtime_ns
    result = run_script("benchmarks/study.py", ["--plan", longer, "--out", str(stopped)])
    assert "sagan-a: finished now" in result.stdout
    assert load_checkpoint(stopped / "sagan-a")["step"] == 160 and last.stat().st_mtime_ns != mtime
    assert json.loads((stopped / "sagan-a" / "result.json").read_text())["kimg"] == 1.28
    assert copy_check.stat().st_mtime_ns != copy_check_mtime
    result = run_script("benchmarks/study.py", ["--plan", longer, "--out", str(tmp_path / "kept")], expect_status=None)
    assert result.returncode != 0 and "no checkpoint is left to continue from" in result.stdout + result.stderr
    assert json.loads((kept / "result.json").read_text())["kimg"] == a["kimg"]  # nothing written is lost


def test_variants_run_side_by_side_with_bases_and_one_report(tmp_path):
    variants = {
        "sg": {"script": "stylegan2", "config": "configs/stylegan2_tiny.yaml", "set": {"train.r1_gamma": 0.5}},
        "sg-ada": {"base": "sg", "set": {"augment.ada": True, "augment.p": 0.0}},
    }
    plan = write_plan(tmp_path / "plan.yaml", variants, kimg=0.032, every_kimg=0.016, num_samples=8)
    out = tmp_path / "study"
    result = run_script("benchmarks/study.py", ["--plan", plan, "--out", str(out), "--jobs", "2"])
    assert sorted(re.findall(r"^(\S+): finished now$", result.stdout, re.M)) == ["sg", "sg-ada"]
    assert re.search(r"^study: 0\.064/0\.064 kimg 100\.0% .*done in", result.stderr, re.M), result.stderr

    configs = {name: yaml.safe_load((out / name / "config.yaml").read_text()) for name in variants}
    assert configs["sg"]["train"]["r1_gamma"] == configs["sg-ada"]["train"]["r1_gamma"] == 0.5  # inherited
    assert (configs["sg"]["augment"]["ada"], configs["sg-ada"]["augment"]["ada"]) == (False, True)
    for config in configs.values():
        assert (config["train"]["kimg"], config["eval"]["every_kimg"], config["eval"]["num_samples"]) == (0.032, 0.016, 8)
    assert "OMP_NUM_THREADS" not in (out / "sg" / "train.log").read_text()  # threads travel in the environment

    report = (out / "report.md").read_text()
    for figure in ("fid.png", "fid_wallclock.png", "kid.png", "precision.png", "recall.png", "samples.png"):
        assert f"]({figure})" in report and (out / figure).stat().st_size > 1000
    rows = {row.split("|")[1].strip(): [c.strip() for c in row.strip("|").split("|")]
            for row in report.splitlines() if row.startswith("| stylegan2")}
    assert set(rows) == {"stylegan2 (sg)", "stylegan2 (sg-ada)"}
    for name in variants:
        copies = json.loads((out / name / "memorization" / "report.json").read_text())
        records = [json.loads(line) for line in (out / name / "metrics.jsonl").read_text().splitlines()]
        assert [r["kimg"] for r in records] == [0.016, 0.032]
        cells = rows[f"stylegan2 ({name})"]
        assert cells[-1] == f"{copies['pixel']['copy_rate']:.3f} / {copies['inception']['copy_rate']:.3f}"
        assert cells[-2] == f"{records[-1]['recall']:.3f}" and cells[-3] == f"{records[-1]['precision']:.3f}"
        assert cells[5] == f"{records[-1]['fid']:.2f}"

    # The finished variants' result files alone (what docs/study_cpu32 keeps) are a finished study with the
    # same report: nothing trains again, no checkpoint appears.
    kept = tmp_path / "kept"
    for name in variants:
        (kept / name).mkdir(parents=True)
        for result in ("result.json", "result.png"):
            (kept / name / result).write_bytes((out / name / result).read_bytes())
    result = run_script("benchmarks/study.py", ["--plan", plan, "--out", str(kept)])
    assert sorted(re.findall(r"^(\S+): finished$", result.stdout, re.M)) == ["sg", "sg-ada"]
    assert not any(kept.glob("*/checkpoints"))
    kept_report = (kept / "report.md").read_text()
    assert [r for r in kept_report.splitlines() if r.startswith("| stylegan2")] == \
        [r for r in report.splitlines() if r.startswith("| stylegan2")]
    assert (kept / "samples.png").stat().st_size > 1000


def test_a_variant_held_by_another_process_is_left_alone(tmp_path):
    plan = write_plan(tmp_path / "plan.yaml", {"sagan-a": SAGAN}, kimg=0.064, every_kimg=0.032)
    out = tmp_path / "study"
    (out / "sagan-a").mkdir(parents=True)
    with open(out / "sagan-a" / "study.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        result = run_script("benchmarks/study.py", ["--plan", plan, "--out", str(out)])
    assert "sagan-a: another process is running it (lock held); left alone" in result.stdout
    assert not (out / "sagan-a" / "checkpoints").exists()
    assert "no variant has evaluations yet" in result.stdout


def test_only_trains_the_named_variants(tmp_path):
    plan = write_plan(tmp_path / "plan.yaml", {"sagan-a": SAGAN, "sagan-b": SAGAN}, kimg=0.064, every_kimg=0.032)
    out = tmp_path / "study"
    result = run_script("benchmarks/study.py", ["--plan", plan, "--out", str(out), "--only", "sagan-b"])
    assert "sagan-b: finished now" in result.stdout and "sagan-a" not in result.stdout
    assert not (out / "sagan-a").exists() and (out / "sagan-b" / "result.json").exists()
    result = run_script("benchmarks/study.py", ["--plan", plan, "--out", str(out), "--only", "sagan-b,sagan-c"],
                        expect_status=2)
    assert result.stderr.count("\n") == 1 and "--only: sagan-c not in" in result.stderr


def test_plan_mistakes_are_one_line_before_anything_trains(tmp_path):
    cases = {
        "script must be one of stylegan2, sagan": {"v": {"script": "singan", "config": "configs/singan.yaml"}},
        "config file not found: configs/nope.yaml": {"v": {"script": "sagan", "config": "configs/nope.yaml"}},
        "variant v: train.nosuch: unknown key": {"v": {**SAGAN, "set": {"train.nosuch": 1}}},
        "variant v: base 'w' is not a variant": {"v": {"base": "w"}},
        "base chain v -> u -> v loops": {"v": {"base": "u"}, "u": {"base": "v"}},
    }
    for expected, variants in cases.items():
        plan = write_plan(tmp_path / "plan.yaml", variants, kimg=1, every_kimg=1)
        result = run_script("benchmarks/study.py", ["--plan", plan, "--out", str(tmp_path / "out")], expect_status=2)
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ") and expected in result.stderr, (
            expected, result.stderr)
    assert not (tmp_path / "out").exists()


def test_the_committed_cpu32_plan_holds_the_issue_variants():
    sys.path.insert(0, ROOT)
    from benchmarks.study import read_plan
    plan = read_plan(os.path.join(ROOT, "benchmarks", "plans", "cpu32.yaml"))
    assert plan.kimg >= 300
    variants = {v.name: v for v in plan.variants}
    reference, heuristics = variants["stylegan2-reference"], variants["stylegan2-ada-heuristics"]
    assert reference.overrides["train.r1_gamma"] == 5
    assert heuristics.overrides["train.r1_gamma"] == 0.0002 * 32 ** 2 / 16 and heuristics.overrides["train.lr"] == 0.0025
    best = variants["stylegan2-ada-cifar"]  # the best of the two recipes, refined: the base of the augmentation pair
    assert best.overrides.items() > heuristics.overrides.items()
    for name, augment in [("stylegan2-ada-cifar-adaptive", {"augment.ada": True, "augment.p": 0.0}),
                          ("stylegan2-ada-cifar-noaug", {"augment.policy": ""})]:
        assert variants[name].overrides == {**best.overrides, **augment}
    assert variants["sagan-reference"].overrides == {}
    assert variants["sagan-diffaugment"].overrides == {"augment.policy": "color,translation,cutout"}
    assert variants["sagan-paper"].overrides == {  # the SAGAN paper's recipe (configs/sagan_paper.yaml)
        "train.loss": "hinge", "model.g_spectral_norm": True, "train.g_lr": 0.0001, "train.d_lr": 0.0004,
        "train.beta1": 0.0, "train.beta2": 0.9, "train.lr_step_epochs": 0}
    batch32 = variants["stylegan2-ada-cifar-adaptive-batch32"].overrides  # the heuristic follows the batch
    assert batch32["train.r1_gamma"] == 0.0002 * 32 ** 2 / batch32["train.batch_size"] == 0.0064
    assert variants["stylegan2-ada-cifar-adaptive-seed1"].overrides == {
        **variants["stylegan2-ada-cifar-adaptive"].overrides, "seed": 1}  # the default recipe, another seed


def test_the_default_configs_hold_the_recipe_that_won_and_the_reference_ones_the_reference_recipe():
    sys.path.insert(0, ROOT)
    from benchmarks.study import override_args, read_plan
    from train_stylegan2 import StyleGAN2Config
    from training.config import build_config, to_dict

    def resolved(config: str, overrides: dict | None = None) -> dict:
        return to_dict(build_config(StyleGAN2Config, os.path.join(ROOT, config), override_args(overrides or {})))

    def recipe(config: dict) -> dict:
        """What a study compares: the model, training and augmentation settings but the budget and logging cadence."""
        budget = ("kimg", "log_every_kimg", "sample_every_kimg", "checkpoint_every_kimg")
        return {"model": config["model"], "augment": config["augment"],
                "train": {key: value for key, value in config["train"].items() if key not in budget}}

    variants = {v.name: v for v in read_plan(os.path.join(ROOT, "benchmarks", "plans", "cpu32.yaml")).variants}
    winner, reference = variants["stylegan2-ada-cifar-adaptive"], variants["stylegan2-reference"]
    assert recipe(resolved("configs/stylegan2_cpu32.yaml")) == recipe(resolved(winner.config, winner.overrides))
    assert recipe(resolved("configs/stylegan2_cpu32_reference.yaml")) == recipe(
        resolved(reference.config, reference.overrides))

    # small300 is the winner's recipe at 64 px and batch 32, its reference copy the reference recipe.
    small, cpu32 = resolved("configs/small300.yaml"), resolved("configs/stylegan2_cpu32.yaml")
    batch, resolution = small["train"]["batch_size"], small["data"]["resolution"]
    assert small["train"]["r1_gamma"] == 0.0002 * resolution ** 2 / batch
    assert small["model"]["mbstd_group_size"] == batch and cpu32["model"]["mbstd_group_size"] == cpu32["train"]["batch_size"]
    assert (small["model"]["d_channel_base"], small["model"]["d_channel_max"]) == (
        small["model"]["g_channel_base"], small["model"]["g_channel_max"])
    for key in ("lr", "pl_weight", "style_mixing", "ema_halflife_kimg", "ema_rampup", "r1_interval"):
        assert small["train"][key] == cpu32["train"][key], key
    assert small["augment"] == cpu32["augment"]
    # cpu64 is the winner's recipe at 64 px with the cpu32 widths, R1 by the heuristic.
    cpu64 = resolved("configs/stylegan2_cpu64.yaml")
    assert cpu64["data"]["resolution"] == 64 and cpu64["train"]["r1_gamma"] == 0.0002 * 64 ** 2 / cpu64["train"]["batch_size"]
    assert {**recipe(cpu64), "train": {**recipe(cpu64)["train"], "r1_gamma": None}} == {
        **recipe(cpu32), "train": {**recipe(cpu32)["train"], "r1_gamma": None}}
    (cpu64_variant,) = read_plan(os.path.join(ROOT, "benchmarks", "plans", "cpu64.yaml")).variants
    assert cpu64_variant.config == "configs/stylegan2_cpu64.yaml" and not cpu64_variant.overrides
    small_reference = resolved("configs/small300_reference.yaml")
    assert (small_reference["train"]["r1_gamma"], small_reference["train"]["lr"], small_reference["train"]["pl_weight"]) == (
        reference.overrides["train.r1_gamma"], reference.overrides["train.lr"], 1.0)
    assert small_reference["data"] == small["data"] and small_reference["model"]["g_channel_base"] == small["model"]["g_channel_base"]


def test_the_conditional_plan_builds_on_the_default_and_paper_recipes():
    sys.path.insert(0, ROOT)
    from benchmarks.study import check_variant_config, read_plan
    plans = os.path.join(ROOT, "benchmarks", "plans")
    plan = read_plan(os.path.join(plans, "cpu32_cond.yaml"))
    variants = {v.name: v for v in plan.variants}
    assert plan.kimg >= 300
    labelled = {"data.path": "builtin:particles-cond"}
    assert (variants["stylegan2-cond"].config, variants["stylegan2-cond"].overrides) == (
        "configs/stylegan2_cpu32.yaml", labelled)  # the unconditional study's winner, with labels
    assert variants["stylegan2-cond-vicinity-soft"].overrides == {**labelled, "train.label_vicinity": "soft"}
    assert variants["stylegan2-cond-band"].overrides["data.label_exclude"] == ["energy:2.5:3.5"]
    paper = {v.name: v for v in read_plan(os.path.join(plans, "cpu32.yaml")).variants}["sagan-paper"]
    assert variants["sagan-cond"].overrides == {**labelled, **paper.overrides}
    for variant in plan.variants:  # every variant's config resolves, as the study checks before training
        check_variant_config(variant, os.path.join(plans, "cpu32_cond.yaml"))
