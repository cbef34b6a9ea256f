"""benchmarks/compare.py builds its report from existing run folders."""

import json
import re

from PIL import Image

from plumbing import TINY_DATA, run_script

EVAL = ["eval.every_kimg=0.032", "eval.num_samples=16", "eval.kid_subset_size=8", "eval.kid_subsets=10"]


def test_report_from_two_runs_holds_their_numbers(tmp_path):
    runs = []
    for name, width, final in [("wide", 8, "true"), ("narrow", 4, "false")]:
        out = tmp_path / name
        run_script("tests/toy_gan.py", [*TINY_DATA, *EVAL, "train.batch_size=8", "train.kimg=0.064",
                                        "train.log_every_kimg=0.016", f"model.width={width}", f"out_dir={out}",
                                        f"eval.physics_final={final}"])
        runs.append(out)
    report_dir = tmp_path / "report"
    run_script("benchmarks/compare.py", ["--runs", *map(str, runs), "--out", str(report_dir)])

    report = (report_dir / "report.md").read_text()
    for figure in ("fid.png", "kid.png", "samples.png"):
        assert f"]({figure})" in report
        assert Image.open(report_dir / figure).size[0] > 300
    rows = [line for line in report.splitlines() if line.startswith("| toy")]
    assert len(rows) == 2
    for run, row in zip(runs, rows):
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert len(records) == 2
        cells = [c.strip() for c in row.strip("|").split("|")]
        best = min(records, key=lambda r: r["fid"])
        assert cells[0] == f"toy ({run.name})"
        assert cells[4] == f"{best['fid']:.2f} ({best['kimg']:.2f})"
        assert cells[5] == f"{records[-1]['fid']:.2f}"
        assert cells[6] == f"{records[-1]['kid'] * 1e3:.2f}"
        assert float(cells[7].replace(",", "")) > 0  # img/s from TensorBoard
    width = {"wide": 8, "narrow": 4}
    for run, row in zip(runs, rows):  # parameter counts of the toy G: Linear(8 -> 16w) + Conv2d(w -> 1, 3x3)
        w = width[run.name]
        assert re.search(rf"\| {8 * 16 * w + 16 * w + 9 * w + 1:,} \|", row)
    # The statistics table: one row per statistic, the last evaluation's value (floor) per run.
    pixel_row = next(line for line in report.splitlines() if line.startswith("| pixel intensity W1 |"))
    for run, cell in zip(runs, pixel_row.strip("|").split("|")[1:]):
        stats = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["stats"]
        assert cell.strip() == f"{stats['pixel_w1']:,.3f} ({stats['floor']['pixel_w1']:,.3f})"
    # The physics tests: every evaluation has the cheap ones; the classifier runs once, at the end, when asked.
    records = {run.name: [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
               for run in runs}
    assert all("physics" in record for run in records.values() for record in run)
    assert ["classifier" in record for record in records["wide"]] == [False, True]
    assert not any("classifier" in record for record in records["narrow"])
    fpd_row = next(line for line in report.splitlines() if line.startswith("| FPD |"))
    for run, cell in zip(runs, fpd_row.strip("|").split("|")[1:]):
        found = records[run.name][-1]["physics"]
        assert cell.strip() == (f"{found['fpd']:,.3f} ± {found['fpd_error']:,.3f} "
                                f"({found['floor']['fpd']:,.3f} ± {found['floor']['fpd_error']:,.3f})")
    auc_cells = next(line for line in report.splitlines() if line.startswith("| classifier AUC, CNN")).split("|")[2:4]
    cnn = records["wide"][-1]["classifier"]["cnn"]
    assert auc_cells[0].strip().startswith(f"{cnn['auc']:.3f} [{cnn['auc_low']:.3f}, {cnn['auc_high']:.3f}]")
    assert auc_cells[1].strip() == "–"


def test_conditional_runs_report_their_label_fidelity_and_response(tmp_path):
    from benchmarks.compare import conditional_section, plot_metric, real_frames_phrase

    def run(name, fidelity):
        records = [{"kimg": kimg, "conditional": {"fidelity/energy/generated": value, "fidelity/energy/real": 0.58,
                                                  "fidelity/type/generated": value + 0.1, "fidelity/type/real": 0.68,
                                                  "response/energy/occupancy": 1 / value}}
                   for kimg, value in zip((25, 50), fidelity)]
        return {"name": name, "dir": str(tmp_path / name), "records": records}

    runs = [run("stylegan2", (0.2, 0.5)), run("sagan", (0.1, 0.25)), {"name": "plain", "dir": "p",
                                                                        "records": [{"kimg": 25, "fid": 40.0}]}]
    lines = conditional_section(runs)
    assert lines[2] == "| last evaluation | stylegan2 (stylegan2) | sagan (sagan) |"
    assert "| fidelity, energy: generated (real) | 0.500 (0.580) | 0.250 (0.580) |" in lines
    assert "| fidelity, type: generated (real) | 0.600 (0.680) | 0.350 (0.680) |" in lines
    assert "| response ratio, energy: occupancy | 2.00 | 4.00 |" in lines
    assert conditional_section(runs[2:]) == []
    # A run with a band left out was scored against fewer real frames; the report's first line says so.
    scored = [{"records": [{"num_real": 300}]}, {"records": [{"num_real": 232}]}, {"records": [{"num_real": 300}]}]
    assert real_frames_phrase(scored) == "the 232 or 300 real ones each run trained on"
    assert real_frames_phrase(scored[:1]) == "300 real ones"
    plot_metric(runs, ("conditional", "fidelity/energy/generated"), "fidelity", str(tmp_path / "fidelity.png"))
    assert Image.open(tmp_path / "fidelity.png").size[0] > 300


def test_training_mode_trains_both_models_on_one_budget(tmp_path):
    out = tmp_path / "compare"
    run_script("benchmarks/compare.py", [
        "--kimg", "0.016", "--out", str(out), "--eval-every-kimg", "0.008", "--eval-samples", "8",
        "--config", "sagan=configs/sagan_tiny.yaml", "--config", "stylegan2=configs/stylegan2_tiny.yaml",
        "--set", "eval.kid_subset_size=4"])
    lines = (out / "report.md").read_text().splitlines()
    rows = [line for line in lines if line.startswith(("| sagan", "| stylegan2"))]  # the main table
    assert [row.split("|")[1].split()[0] for row in rows] == ["sagan", "stylegan2"]
    for name in ("sagan", "stylegan2"):
        records = [json.loads(line) for line in (out / name / "metrics.jsonl").read_text().splitlines()]
        assert [r["kimg"] for r in records] == [0.008, 0.016]  # the same evaluation points for both models
        assert records[-1]["num_fake"] == 8
