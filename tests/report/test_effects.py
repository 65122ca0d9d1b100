"""DeVec's effects over seeds: the paired mean difference, its Student-t 95 % interval, verdicts that follow the
interval (with the metric's direction), and devec-report's effects table over a multirun."""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path

import pytest
import yaml
from scipy import stats

from devec import io
from devec.report import build_report
from devec.report.cli import main
from devec.report.effects import (
    HELPS,
    HURTS,
    NO_EFFECT,
    ONE_SEED,
    check_record,
    effect_record,
    format_effect,
    paired_effect,
    summarize,
)


def test_interval_is_the_student_t_interval_of_the_paired_differences():
    devec, base = [61.0, 63.5, 60.25, 62.0], [59.0, 60.0, 59.5, 58.0]
    e = paired_effect(devec, base, higher_is_better=True, comparison="TA + DeVec vs TA", metric="avg")
    deltas = [d - b for d, b in zip(devec, base, strict=True)]
    low, high = stats.t.interval(0.95, len(deltas) - 1, loc=statistics.fmean(deltas),
                                 scale=statistics.stdev(deltas) / math.sqrt(len(deltas)))
    assert e.n == 4 and e.delta == pytest.approx(statistics.fmean(deltas))
    assert (e.low, e.high) == (pytest.approx(low), pytest.approx(high))
    assert e.baseline == pytest.approx(statistics.fmean(base)) and e.devec == pytest.approx(statistics.fmean(devec))
    assert low > 0 and e.verdict == HELPS
    line = format_effect(e)
    assert line.startswith(HELPS) and "n = 4 seeds" in line and f"{e.low:+.2f}" in line and "higher is better" in line


def test_the_verdict_follows_the_interval_not_the_mean():
    # mean difference +1.0, but the seeds disagree: the interval holds 0
    e = paired_effect([60.0, 58.0, 62.0], [58.0, 59.0, 60.0], higher_is_better=True)
    assert e.delta == pytest.approx(1.0) and e.low < 0 < e.high and e.verdict == NO_EFFECT
    assert not format_effect(e).startswith(("DeVec helps", "DeVec hurts"))


def test_sign_convention_comes_from_the_caller():
    devec, base = [10.0, 11.0, 12.5], [5.0, 5.5, 6.0]  # DeVec's values are clearly higher
    assert paired_effect(devec, base, higher_is_better=True).verdict == HELPS
    lower = paired_effect(devec, base, higher_is_better=False)  # e.g. % toxic: higher is worse
    assert lower.verdict == HURTS and lower.delta > 0 and "lower is better" in format_effect(lower)
    assert paired_effect(base, devec, higher_is_better=False).verdict == HELPS


def test_one_seed_gives_no_interval_and_no_claim():
    e = summarize([effect_record("ties_devec", "TIES + DeVec vs TIES", "avg", 57.5, 55.0, True)])
    assert e.n == 1 and e.ci95 is None and e.low is None and e.verdict == ONE_SEED
    line = format_effect(e)
    assert "+2.50" in line and line.endswith(ONE_SEED) and "helps" not in line and "hurts" not in line


def test_identical_values_have_a_zero_width_interval():
    same = paired_effect([57.31, 60.0, 58.5], [57.31, 60.0, 58.5], higher_is_better=True)
    assert same.delta == 0.0 and same.ci95 == 0.0 and same.verdict == NO_EFFECT
    shifted = paired_effect([58.0, 61.0, 59.0], [57.0, 60.0, 58.0], higher_is_better=True)  # +1 on every seed
    assert shifted.ci95 == pytest.approx(0.0, abs=1e-12) and shifted.verdict == HELPS


def test_records_are_checked_and_directions_must_agree():
    record = effect_record("a", "A vs B", "m", 2.0, 1.5, False, baseline_id="b")
    assert record["delta"] == 0.5 and record["baseline_id"] == "b" and check_record(record) is record
    with pytest.raises(ValueError, match="lacks delta, higher_is_better"):
        check_record({k: record[k] for k in ("id", "comparison", "metric", "devec", "baseline")})
    with pytest.raises(ValueError, match="disagree on higher_is_better"):
        summarize([record, {**record, "higher_is_better": True}])
    with pytest.raises(ValueError, match="one baseline value per DeVec value"):
        paired_effect([1.0, 2.0], [1.0], True)


def _job(root: Path, num: int, overrides: list[str], results: dict) -> Path:
    job = root / str(num)
    io.write_text(job / ".hydra" / "overrides.yaml", yaml.safe_dump(overrides))
    io.write_text(job / "config.yaml", yaml.safe_dump({}))
    io.write_json(job / "results.json", results)
    return job


def fake_multirun(root: Path, taus=(0.85,), seeds=(0, 1, 2)) -> Path:
    """A multirun of Table-1-like runs: TA and TA + DeVec rows, one effect record each run, plus a toxicity one."""
    sweep = root / "multirun" / "table1_multitask" / "2026-01-01_00-00-00"
    num = 0
    for tau in taus:
        for seed in seeds:
            ta, devec = 50.0 + seed, 52.0 + seed + 0.5 * (seed % 2)  # DeVec +2.0..+2.5 on every seed
            tox_tv, tox_devec = 1.0 + seed, 3.0 - seed                  # % toxic: seeds disagree
            rows = [{"id": "ta", "method": "Task Arithmetic", "paper": True, "avg": ta},
                    {"id": "ta_devec", "method": "TA + DeVec", "paper": True, "avg": devec}]
            effects = [effect_record("ta_devec", "TA + DeVec vs TA", "avg accuracy (%)", devec, ta, True),
                       effect_record("toxigen", "unique vs TV negation", "% toxic", tox_devec, tox_tv, False)]
            _job(sweep, num, ["experiment=table1_multitask", f"decomposition.tau={tau}", f"seed={seed}"],
                 {"experiment": "table1_multitask", "seed": seed, "rows": rows, "effects": effects, "seconds": 1.0})
            num += 1
    return sweep


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_report_over_three_seeds_writes_the_effects_table_and_verdicts(tmp_path, capsys):
    sweep = fake_multirun(tmp_path)
    main([str(sweep), "--no-wandb"])
    out = capsys.readouterr().out
    table = {r["id"]: r for r in _read(sweep / "report" / "effects.csv")}
    assert set(table) == {"ta_devec", "toxigen"}
    deltas = [2.0, 2.5, 2.0]
    ta = table["ta_devec"]
    assert ta["n"] == "3" and ta["seeds"] == "0,1,2" and ta["better"] == "higher"
    assert float(ta["delta"]) == pytest.approx(statistics.fmean(deltas))
    half = stats.t.ppf(0.975, 2) * statistics.stdev(deltas) / math.sqrt(3)
    assert float(ta["ci95"]) == pytest.approx(half) and ta["verdict"] == HELPS
    tox = table["toxigen"]  # deltas +2, 0, -2 -> interval around 0
    assert float(tox["delta"]) == pytest.approx(0.0) and tox["verdict"] == NO_EFFECT and tox["better"] == "lower"
    assert f"{HELPS}: TA + DeVec vs TA, avg accuracy (%)" in out and "n = 3 seeds" in out
    assert f"{NO_EFFECT}: unique vs TV negation" in out
    assert "effects" not in {p.name for p in (sweep / "report").glob("curve_*")}  # a table of its own, not a curve
    md = (sweep / "report" / "effects.md").read_text()
    assert "| comparison | metric | better |" in md and (sweep / "report" / "effects.tex").is_file()
    rows = {r["method"]: r for r in _read(sweep / "report" / "rows_mean_ci95.csv")}
    assert rows["Task Arithmetic"]["avg"] == f"51.00 ± {stats.t.ppf(0.975, 2) * 1.0 / math.sqrt(3):.2f}"
    assert "paper" not in rows["Task Arithmetic"]


def test_report_pairs_within_each_swept_setting(tmp_path):
    sweep = fake_multirun(tmp_path, taus=(0.8, 0.9), seeds=(0, 1))
    summary = build_report(sweep, wandb_mode=None)
    table = _read(sweep / "report" / "effects.csv")
    assert [(r["decomposition.tau"], r["id"], r["n"]) for r in table] == [
        ("0.8", "ta_devec", "2"), ("0.8", "toxigen", "2"), ("0.9", "ta_devec", "2"), ("0.9", "toxigen", "2")]
    assert summary["effects"][0].startswith("[decomposition.tau=0.8] ")


def test_report_on_one_run_gives_n_1_without_a_claim(tmp_path, capsys):
    sweep = fake_multirun(tmp_path, seeds=(0,))
    main([str(sweep / "0"), "--no-wandb"])
    out = capsys.readouterr().out
    table = _read(sweep / "0" / "report" / "effects.csv")
    assert {r["n"] for r in table} == {"1"} and {r["verdict"] for r in table} == {ONE_SEED}
    assert {r["ci95"] for r in table} == {""} and "DeVec helps" not in out and ONE_SEED in out


def test_runner_records_use_the_paper_directions():
    from devec.style.runner import mix_effects
    from devec.toxicity.runner import CONTROL_DISTANCE, negation_effects, removal_ratio
    from devec.vision.runner import devec_effect

    (vision,) = devec_effect([{"id": "ta", "method": "TA", "avg": 50.0}, {"id": "ta_d", "method": "TA+D", "avg": 51.0}],
                             {"ta_d": "ta", "ta": None})
    assert (vision["id"], vision["baseline_id"], vision["delta"], vision["higher_is_better"]) == ("ta_d", "ta", 1.0,
                                                                                                   True)
    pre, tv, devec = {"t/c": 20.0, "facts": 90.0}, {"t/c": 0.0, "facts": 70.0}, {"t/c": 2.0, "facts": 88.0}
    tox = {r["metric"]: r for r in negation_effects(devec, tv, pre, "t/c", ["facts"], "t", "DeVec vs TV")}
    assert tox["% toxic (t/c)"]["higher_is_better"] is False and tox["% toxic (t/c)"]["delta"] == 2.0
    removed = tox["toxicity removed (% of pre-trained, t/c)"]
    assert (removed["devec"], removed["baseline"], removed["higher_is_better"]) == (90.0, 100.0, True)
    assert (tox[CONTROL_DISTANCE]["devec"], tox[CONTROL_DISTANCE]["baseline"]) == (2.0, 20.0)
    assert removal_ratio(devec, tv, pre, "t/c") == pytest.approx(0.9)
    rows = [{"method": m, "gamma": 1.0, "strength/a": s, "min_strength": s, "adh": 0.5} for m, s in
            (("vanilla", 0.4), ("unique", 0.6))]
    style = mix_effects(rows, {"vanilla": "original", "unique": "unique"}, "adh")
    assert [(r["id"], r["metric"], r["delta"]) for r in style] == [
        ("unique@1", "strength/a", pytest.approx(0.2)), ("unique@1", "min_strength", pytest.approx(0.2)),
        ("unique@1", "adh", 0.0)]
