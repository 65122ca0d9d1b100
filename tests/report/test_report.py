"""devec-report: a real tau sweep (and fake sweeps with in-run curves) into tables, LaTeX, plots and W&B."""

from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from devec import io
from devec.report import build_report
from devec.report.cli import main
from devec.report.tables import latex_table

REPO = Path(__file__).resolve().parents[2]
TAUS = (0.8, 0.9, 0.95)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def tau_sweep(tmp_path_factory) -> Path:
    """A real ``devec -m experiment=toy_alternative decomposition.tau=... seed=0,1`` (6 tiny jobs, one process)."""
    out = tmp_path_factory.mktemp("sweep")
    env = {**os.environ, "DEVEC_OUTPUTS": str(out / "outputs"), "DEVEC_CACHE": str(out / "cache"),
           "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "devec", "-m", "experiment=toy_alternative", "toy.runs=2", "toy.n=32", "toy.m=32",
           "toy.shared=4", "toy.unique=4", "decomposition.rank=fixed:8", "logger=none",
           f"decomposition.tau={','.join(map(str, TAUS))}", "seed=0,1"]
    proc = subprocess.run(cmd, cwd=out, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = (out / "outputs" / "multirun" / "toy_alternative").iterdir()
    return sweep


def test_real_tau_sweep_becomes_a_table_averaged_over_seeds(tau_sweep, tmp_path):
    summary = build_report(tau_sweep, tmp_path / "report", wandb_mode=None)
    assert summary["runs"] == 6 and summary["missing"] == []
    assert summary["swept"] == ["decomposition.tau", "seed"] and summary["x"] == "decomposition.tau"
    table = _read_csv(tmp_path / "report" / "sweep.csv")
    assert [float(r["decomposition.tau"]) for r in table] == list(TAUS)
    for row in table:  # recompute each mean and std from the jobs' own results.json and config.yaml
        values = []
        for job in tau_sweep.iterdir():
            if (job / "results.json").exists():
                cfg = yaml.safe_load((job / "config.yaml").read_text())
                if cfg["decomposition"]["tau"] == float(row["decomposition.tau"]):
                    values.append(json.loads((job / "results.json").read_text())["mean_angle_deg"])
        assert len(values) == 2 and row["n"] == "2"
        assert float(row["mean_angle_deg"]) == pytest.approx(statistics.fmean(values), rel=1e-12)
        assert float(row["mean_angle_deg_std"]) == pytest.approx(statistics.stdev(values), rel=1e-12)
    long = _read_csv(tmp_path / "report" / "long.csv")
    assert {r["seed"] for r in long} == {"0", "1"} and len({r["run"] for r in long}) == 6
    assert "seconds" not in {r["metric"] for r in long}
    tex = (tmp_path / "report" / "sweep.tex").read_text()
    assert tex.count("\\\\") == 1 + len(TAUS) and "mean\\_angle\\_deg" in tex and "\\toprule" in tex
    md = (tmp_path / "report" / "sweep.md").read_text()
    assert md.count("\n| 0.") == len(TAUS)
    figures = [Path(f) for f in summary["figures"]]
    assert tmp_path / "report" / "mean_angle_deg_vs_decomposition.tau.png" in figures
    assert all(f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for f in figures)
    assert not any("paper_bound" in f.name for f in figures)  # a constant is a column, not a curve


def test_cli_on_the_real_sweep_logs_to_wandb_offline(tau_sweep, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    main([str(tau_sweep), "--out", str(tmp_path), "--x", "decomposition.tau",
          "--metric", "mean_angle_deg,max_angle_deg"])
    out = capsys.readouterr().out
    assert "6 runs" in out and "| decomposition.tau |" in out
    header = _read_csv(tmp_path / "sweep.csv")[0].keys()
    assert {"mean_angle_deg", "max_angle_deg"} <= set(header) and "runs" not in header
    assert list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))


def _fake_job(root: Path, num: int, overrides: list[str], results: dict, config: dict | None = None) -> Path:
    job = root / str(num)
    io.write_text(job / ".hydra" / "overrides.yaml", yaml.safe_dump(overrides))
    io.write_text(job / "config.yaml", yaml.safe_dump(config or {}))
    if results is not None:
        io.write_json(job / "results.json", results)
    return job


def test_in_run_coefficient_curves_and_pivot(tmp_path):
    """Fig. 5 style: each run holds a negation-coefficient curve; lines per method, averaged over seeds."""
    sweep = tmp_path / "multirun" / "tox" / "2026-01-01_00-00-00"
    num = 0
    for method in ("tv", "devec"):
        for seed in (0, 1):
            slope = 2.0 if method == "devec" else 1.0
            curve = [{"coef": c, "toxicity": 50 - slope * 10 * c + seed, "ppl": 10 + c} for c in (0.0, 0.5, 1.0)]
            _fake_job(sweep, num, [f"method={method}", f"seed={seed}", "decomposition.rank=fixed\\:8"],
                      {"experiment": "tox", "seed": seed, "toxicity": curve[-1]["toxicity"], "curve": curve,
                       "eval": {"ppl": 10.0 + seed}, "seconds": 1.0})
            num += 1
    _fake_job(sweep, num, ["method=other", "seed=0"], None)  # a job that died: reported, not read
    summary = build_report(sweep, wandb_mode=None, rows="method", cols="metric")
    assert summary["missing"] == [str(sweep / str(num))]
    assert summary["swept"] == ["method", "seed"]
    table = {r["method"]: r for r in _read_csv(sweep / "report" / "sweep.csv")}
    assert float(table["tv"]["toxicity"]) == pytest.approx(40.5) and float(table["devec"]["toxicity"]) == 30.5
    assert float(table["tv"]["eval/ppl"]) == 10.5 and float(table["tv"]["eval/ppl_std"]) > 0
    curve = _read_csv(sweep / "report" / "curve_curve.csv")
    assert len(curve) == 12 and {"method", "coef", "toxicity", "ppl"} <= set(curve[0])
    assert (sweep / "report" / "curve_curve_toxicity.png").is_file()
    pivot = {r["method"]: r for r in _read_csv(sweep / "report" / "pivot.csv")}
    assert float(pivot["devec"]["toxicity"]) == 30.5 and "eval/ppl" in pivot["devec"]


def test_experiment_name_finds_the_newest_multirun_and_errors_are_clear(tmp_path, monkeypatch, capsys):
    for stamp, value in (("2026-01-01_00-00-00", 1.0), ("2026-02-01_00-00-00", 2.0)):
        root = tmp_path / "multirun" / "exp" / stamp
        for i, tau in enumerate((0.8, 0.9)):
            _fake_job(root, i, [f"decomposition.tau={tau}"], {"experiment": "exp", "seed": 0, "acc": value + tau},
                      {"decomposition": {"tau": tau}})
    monkeypatch.setenv("DEVEC_OUTPUTS", str(tmp_path))
    main(["exp", "--no-wandb"])
    assert "2026-02-01" in capsys.readouterr().out
    rows = _read_csv(tmp_path / "multirun" / "exp" / "2026-02-01_00-00-00" / "report" / "sweep.csv")
    assert [float(r["acc"]) for r in rows] == [2.8, 2.9]
    with pytest.raises(SystemExit, match="neither a directory nor an experiment"):
        main(["no_such_experiment", "--no-wandb"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no results.json"):
        main([str(tmp_path / "empty"), "--no-wandb"])


def test_x_can_be_a_config_key_that_was_not_overridden(tmp_path):
    root = tmp_path / "sweep"
    for i, (tau, method) in enumerate([(0.8, "a"), (0.9, "b")]):
        _fake_job(root, i, [f"method={method}"], {"experiment": "e", "seed": 0, "acc": tau * 10},
                  {"decomposition": {"tau": tau}})
    summary = build_report(root, wandb_mode=None, x="decomposition.tau")
    assert summary["x"] == "decomposition.tau"
    rows = _read_csv(root / "report" / "sweep.csv")
    assert [(r["method"], float(r["decomposition.tau"])) for r in rows] == [("a", 0.8), ("b", 0.9)]


def test_latex_escapes_text_and_aligns_numbers():
    tex = latex_table([{"method": "TA_50%", "acc": 0.5}, {"method": "a&b", "acc": None}], ["method", "acc"], "x_y")
    assert "\\begin{tabular}{lr}" in tex and "TA\\_50\\%" in tex and "a\\&b & --" in tex
    assert "\\caption{x\\_y}" in tex
