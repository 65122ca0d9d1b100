"""Regime checks: one number per run with the bounds the paper's setting should meet, aggregated over seeds into a
mean, its 95 % interval and a status that follows the interval (also from the rows of Table 1 runs written before
the runner recorded them)."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pytest
import yaml
from scipy import stats

from devec import io
from devec.paper_numbers import TABLE1, paper_value
from devec.report.cli import build_report
from devec.report.collect import collect_runs
from devec.report.docs import block_text, main
from devec.report.regime import FAILS, HOLDS, ONE_SEED, UNDECIDED, check_record, regime_rows, status
from devec.vision.runner import TABLE1_REGIME, table1_regime

RUNNER = {"_target_": "devec.vision.runner.table1", "_partial_": True}


@pytest.mark.parametrize(("mean", "half", "low", "high", "expected"), [
    (10.0, 1.0, 8.0, None, HOLDS),          # [9, 11] above 8
    (10.0, 3.0, 8.0, None, UNDECIDED),      # [7, 13] straddles 8
    (5.0, 1.0, 8.0, None, FAILS),           # [4, 6] below 8
    (75.0, 5.0, 60.0, 90.0, HOLDS),
    (88.0, 5.0, 60.0, 90.0, UNDECIDED),     # [83, 93] crosses 90
    (95.0, 2.0, 60.0, 90.0, FAILS),         # wholly above the upper bound
    (1.0, 0.0, None, 2.0, HOLDS),
    (10.0, None, 8.0, None, ONE_SEED),
])
def test_status_follows_the_interval_against_the_bounds(mean, half, low, high, expected):
    assert status(mean, half, low, high) == expected


def test_a_check_needs_a_bound():
    with pytest.raises(ValueError, match="low, high or both"):
        check_record("x", "x", 1.0)


def _rows(seed: int) -> list[dict]:
    """Table 1's rows of one fake run (averages only), chosen so each check lands where the test says."""
    avg = {"pretrained": 30.0, "individual": 60.0 + seed,             # +30, +31, +32: holds (>= 25)
           "weight_average": 40.0, "task_arithmetic_val": 44.0 - seed,  # 14, 13, 12 above zero-shot: holds
           "adamerging_layer": 44.0 - seed + (-4.0, 6.0, -1.0)[seed]}   # -4, +6, -1: undecided against >= 3
    return [{"id": rid, "method": rid, "avg": value} for rid, value in avg.items()]


def _multirun(root: Path, with_regime: bool = False) -> Path:
    """Three seeds of fake Table 1 runs; ``with_regime``: as the runner writes them now, else rows only (as written
    before the runner recorded ``regime``)."""
    sweep = root / "multirun" / "table1_multitask" / "2026-01-01_00-00-00"
    for seed in range(3):
        job = sweep / str(seed)
        io.write_text(job / ".hydra" / "overrides.yaml", yaml.safe_dump(["experiment=table1_multitask",
                                                                         f"seed={seed}"]))
        io.write_text(job / "config.yaml", yaml.safe_dump({"runner": RUNNER, "name": "table1_multitask"}))
        results = {"experiment": "table1_multitask", "seed": seed, "rows": _rows(seed)}
        if with_regime:
            results["regime"] = table1_regime(results)
        io.write_json(job / "results.json", results)
    return sweep


def test_table1_checks_are_differences_and_a_ratio_of_the_rows_with_the_papers_values():
    rows = _rows(1)
    avg = {r["id"]: r["avg"] for r in rows}
    checks = {c["id"]: c for c in table1_regime({"rows": rows})}
    assert list(checks) == [c[0] for c in TABLE1_REGIME]
    assert checks["gain_individual"]["value"] == pytest.approx(avg["individual"] - avg["pretrained"])
    assert checks["adamerging_over_ta"]["value"] == pytest.approx(avg["adamerging_layer"] - avg["task_arithmetic_val"])
    assert checks["ta_normalized"]["value"] == pytest.approx(100 * avg["task_arithmetic_val"] / avg["individual"])
    assert (checks["ta_normalized"]["low"], checks["ta_normalized"]["high"]) == (60.0, 90.0)
    ta, ind = (paper_value(TABLE1, r, "avg") for r in ("task_arithmetic", "individual"))
    assert checks["ta_normalized"]["paper"] == pytest.approx(100 * ta / ind)  # TA (lambda on val) is the paper's TA
    # a run without a row a check needs leaves that check out, not the others
    assert "adamerging_over_ta" not in {c["id"] for c in table1_regime({"rows": [
        r for r in rows if r["id"] != "adamerging_layer"]})}


@pytest.mark.parametrize("with_regime", [True, False], ids=["records", "from_rows"])
def test_over_three_seeds_each_check_gets_its_interval_and_status(tmp_path, with_regime):
    runs, _ = collect_runs(_multirun(tmp_path, with_regime))
    table = {r["id"]: r for r in regime_rows(runs)}
    gaps = [_rows(s)[4]["avg"] - _rows(s)[3]["avg"] for s in range(3)]
    half = stats.t.ppf(0.975, 2) * statistics.stdev(gaps) / math.sqrt(3)
    row = table["adamerging_over_ta"]
    assert row["n"] == 3 and row["seeds"] == "0,1,2"
    assert row["mean"] == pytest.approx(statistics.fmean(gaps)) and row["ci95"] == pytest.approx(half)
    assert row["status"] == UNDECIDED and row["from_results"] is not with_regime
    assert table["gain_individual"]["status"] == HOLDS and table["gain_task_arithmetic"]["status"] == HOLDS


def test_devec_docs_writes_the_regime_beside_the_table(tmp_path):
    sweep = _multirun(tmp_path / "out")
    page = tmp_path / "docs" / "vision.md"
    io.write_text(page, "<!-- devec:numbers table1 -->\nold\n<!-- /devec:numbers -->\n")
    main([f"table1={sweep}", "--root", str(tmp_path)])
    text = page.read_text()
    assert "The regime the paper's claims presuppose" in text
    assert f"- {UNDECIDED}: AdaMerging (Layer) - Task Arithmetic (lambda on val) (avg, points) = 0.3 [95 % interval" \
           in text
    assert "(should be >= 3; the paper: 11.1; n = 3)" in text
    assert f"- {HOLDS}: Individual - Pre-Trained (avg, points) = 31.0 [95 % interval" in text
    assert "computed from the runs' results" in text  # these fake runs predate the regime records
    assert "computed from" not in block_text(_multirun(tmp_path / "new", with_regime=True), "table1")


def test_devec_report_writes_the_regime_table_and_lines(tmp_path):
    summary = build_report(_multirun(tmp_path, with_regime=True), wandb_mode=None)
    assert any(t.endswith("regime.csv") for t in summary["tables"])
    assert any(line.startswith(f"{HOLDS}: Individual - Pre-Trained") for line in summary["regime"])
    assert len(summary["regime"]) == len(TABLE1_REGIME)
    assert not any("curve_regime" in t for t in summary["tables"])  # a table of its own, not a curve


def test_table4_checks_each_toxic_vectors_removal_ratio_and_sharing_with_the_papers_ratio():
    from devec.toxicity.runner import table4_regime

    results = {"removal_ratio": {"toxigen": 1.5, "rtp": None},
               "sharing": {"toxigen": {"layers": 14, "layers_above_chance": 7}, "rtp": {"layers": 0}}}
    checks = {c["id"]: c for c in table4_regime(results)}
    assert set(checks) == {"removal_toxigen", "sharing_toxigen"}  # no ratio (TV removed nothing), no layers: no check
    assert checks["removal_toxigen"]["value"] == pytest.approx(150.0) and checks["removal_toxigen"]["low"] == 80.0
    # the paper's Table 4 (ToxiGen): LLaMA2-7B 79.1, Task Vector 73.1, DeVec 32.1 % toxic
    assert checks["removal_toxigen"]["paper"] == pytest.approx(100 * (79.1 - 32.1) / (79.1 - 73.1))
    assert checks["sharing_toxigen"]["value"] == pytest.approx(50.0)
    assert status(checks["sharing_toxigen"]["value"], 0.0, 50.0, None) == HOLDS


def test_style_checks_need_a_decomposition():
    from devec.style.runner import mix_regime

    assert mix_regime({"decomposition": None}) == []  # a style alone: nothing decomposed, nothing to check
    checks = {c["id"]: c for c in mix_regime({"decomposition": {"modules_with_shared": 3, "sharing": {
        "layers": 12, "layers_above_chance": 3}}})}
    assert checks["shared_modules"]["value"] == 3.0 and checks["shared_modules"]["low"] == 1.0
    assert checks["sharing_above_chance"]["value"] == pytest.approx(25.0)


def test_two_runs_of_one_seed_are_logged_and_both_count(tmp_path, caplog):
    sweep = _multirun(tmp_path)
    (sweep / "1" / "results.json").write_text((sweep / "0" / "results.json").read_text())  # seed 0 twice
    runs, _ = collect_runs(sweep)
    with caplog.at_level("WARNING", logger="devec.report.collect"):
        row = {r["id"]: r for r in regime_rows(runs)}["gain_individual"]
    assert row["n"] == 3 and row["seeds"] == "0,0,2"
    assert "regime check ('gain_individual',): several runs of the same seed" in caplog.text
