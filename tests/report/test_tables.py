"""Seed averages in devec-report's tables: a Student-t 95 % interval beside mean/std/n, and empty cells stay empty."""

from __future__ import annotations

import csv
import math
import statistics

import pytest
import yaml
from scipy import stats

from devec import io
from devec.report import aggregate, build_report


def _long(values: dict[tuple[str, float], list[float]], metric: str = "acc") -> list[dict]:
    return [{"method": method, "tau": tau, "seed": seed, "metric": metric, "value": v}
            for (method, tau), vs in values.items() for seed, v in enumerate(vs)]


def test_seed_average_has_a_student_t_95_interval():
    values = {("ta", 0.8): [61.0, 64.5, 59.25], ("devec", 0.8): [70.0, 71.0, 69.5, 73.0], ("devec", 0.9): [68.0]}
    table = aggregate(_long(values), ["method", "tau"])
    assert list(table[0]) == ["method", "tau", "acc", "acc_std", "acc_ci95", "n"]
    assert [(r["method"], r["tau"]) for r in table] == [("devec", 0.8), ("devec", 0.9), ("ta", 0.8)]
    for row in table:
        vs = values[(row["method"], row["tau"])]
        assert row["n"] == len(vs) and row["acc"] == pytest.approx(statistics.fmean(vs), rel=1e-12)
        if len(vs) < 2:  # one seed: no interval to give
            assert row["acc_ci95"] is None and row["acc_std"] == 0.0
            continue
        low, high = stats.t.interval(0.95, len(vs) - 1, loc=statistics.fmean(vs),
                                     scale=statistics.stdev(vs) / math.sqrt(len(vs)))
        assert row["acc"] - row["acc_ci95"] == pytest.approx(low, rel=1e-12)
        assert row["acc"] + row["acc_ci95"] == pytest.approx(high, rel=1e-12)
        assert row["acc_ci95"] > row["acc_std"] / math.sqrt(len(vs)) * 1.96  # t is wider than the normal


def test_a_missing_metric_is_an_empty_cell_and_a_nan_run_is_not_skipped():
    long = _long({("ta", 0.8): [1.0, 2.0], ("devec", 0.8): [3.0, 5.0]})
    long += _long({("ta", 0.8): [10.0, 12.0]}, metric="loss")  # devec never reported a loss
    long += _long({("devec", 0.8): [0.5, math.nan]}, metric="ppl")  # one devec run diverged
    rows = {r["method"]: r for r in aggregate(long, ["method", "tau"])}
    assert rows["devec"]["loss"] is None and rows["devec"]["loss_std"] is None and rows["devec"]["loss_ci95"] is None
    assert rows["ta"]["loss_std"] == pytest.approx(statistics.stdev([10.0, 12.0]))
    assert math.isnan(rows["devec"]["ppl"]) and math.isnan(rows["devec"]["ppl_ci95"])  # not the mean of the rest
    assert rows["devec"]["n"] == 2 and rows["devec"]["acc"] == 4.0


def test_report_files_carry_the_interval(tmp_path):
    sweep = tmp_path / "sweep"
    accs = {0.8: [50.0, 54.0, 52.5], 0.9: [60.0, 58.0, 61.0]}
    for i, (tau, seed) in enumerate((t, s) for t in accs for s in range(3)):
        job = sweep / str(i)
        io.write_text(job / ".hydra" / "overrides.yaml", yaml.safe_dump([f"decomposition.tau={tau}", f"seed={seed}"]))
        io.write_text(job / "config.yaml", yaml.safe_dump({"decomposition": {"tau": tau}}))
        io.write_json(job / "results.json", {"experiment": "e", "seed": seed, "acc": accs[tau][seed]})
    build_report(sweep, wandb_mode=None)
    with open(sweep / "report" / "sweep.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        vs = accs[float(row["decomposition.tau"])]
        half = stats.t.ppf(0.975, 2) * statistics.stdev(vs) / math.sqrt(3)
        assert row["n"] == "3" and float(row["acc_ci95"]) == pytest.approx(half, rel=1e-12)
    assert "acc\\_ci95" in (sweep / "report" / "sweep.tex").read_text()
    assert "| acc_ci95 |" in (sweep / "report" / "sweep.md").read_text()
