"""Table 3's effect records: each ablation row against Task Arithmetic within a seed, aggregated over seeds by
devec-report / devec-docs (also from the rows of results.json written before the runner recorded them)."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pytest
import yaml
from scipy import stats

from devec import io
from devec.cli import execute
from devec.report.collect import collect_runs
from devec.report.docs import block_text, main
from devec.report.effects import HELPS, HURTS, NO_EFFECT, effect_rows
from devec.vision.runner import TABLE3_BASELINES, TABLE3_ROWS, table3_effects

from .conftest import tiny_cfg

TARGETS = ("digits", "letters")
RUNNER = {"_target_": "devec.vision.runner.table3", "_partial_": True}
SHIFTS = {  # row id -> its average minus Task Arithmetic's, per seed 0, 1, 2
    "tv_shared": (1.0, -1.0, 0.5),       # signs disagree: the interval holds 0
    "unique_shared": (0.0, 0.0, 0.0),    # identical on every seed: zero width, no effect
    "unique_only": (-3.0, -2.5, -3.5),   # below on every seed
    "shared_only": (2.0, 2.5, 1.5),      # above on every seed
}


def _rows(seed: int) -> list[dict]:
    """Table 3's rows of one fake run: each target's accuracy, the average over targets, the shared-dim row."""
    base = {"zero_shot": 30.0 + seed, "task_arithmetic": 35.0 + 2 * seed}
    base |= {rid: base["task_arithmetic"] + shift[seed] for rid, shift in SHIFTS.items()}
    rows = []
    for rid, label in TABLE3_ROWS.items():
        per = {t: base[rid] + (i - 0.5) for i, t in enumerate(TARGETS)}  # mean over the targets = base[rid]
        rows.append({"id": rid, "method": label, **per, "avg": sum(per.values()) / len(per)})
    return [*rows, {"id": "shared_dim", "method": "shared dim (mean per layer)", **dict.fromkeys(TARGETS, 1.0),
                    "avg": 1.0}]


def _multirun(root: Path, with_effects: bool) -> Path:
    """Three seeds of fake Table 3 runs; ``with_effects``: as the runner writes them now, else rows only."""
    sweep = root / "multirun" / "table3_ablation" / "2026-01-01_00-00-00"
    for seed in range(3):
        job = sweep / str(seed)
        rows = _rows(seed)
        results = {"experiment": "table3_ablation", "seed": seed, "targets": list(TARGETS), "rows": rows}
        if with_effects:
            results["effects"] = table3_effects(rows)
        io.write_text(job / ".hydra" / "overrides.yaml", yaml.safe_dump(["experiment=table3_ablation",
                                                                         f"seed={seed}"]))
        io.write_text(job / "config.yaml", yaml.safe_dump({"runner": RUNNER, "name": "table3_ablation"}))
        io.write_json(job / "results.json", results)
    return sweep


def test_records_compare_each_ablation_row_with_task_arithmetic_on_the_average():
    rows = _rows(1)
    by_id = {r["id"]: r for r in rows}
    records = table3_effects(rows)
    assert [r["id"] for r in records] == list(TABLE3_BASELINES)
    assert set(TABLE3_BASELINES) == {"tv_shared", "unique_shared", "unique_only", "shared_only"}
    for r in records:
        assert r["baseline_id"] == "task_arithmetic" and r["metric"] == "avg accuracy (%)" and r["higher_is_better"]
        assert r["comparison"] == f"{TABLE3_ROWS[r['id']]} vs Task Arithmetic"
        assert r["devec"] == by_id[r["id"]]["avg"] and r["baseline"] == by_id["task_arithmetic"]["avg"]
        assert r["delta"] == pytest.approx(SHIFTS[r["id"]][1])
    per_target = table3_effects(rows, TARGETS)
    assert len(per_target) == len(TABLE3_BASELINES) * len(TARGETS)
    assert {r["metric"] for r in per_target} == {f"{t} accuracy (%)" for t in TARGETS}


@pytest.mark.parametrize("with_effects", [True, False], ids=["records", "from_rows"])
def test_verdict_over_three_seeds_follows_the_interval(tmp_path, with_effects):
    runs, _ = collect_runs(_multirun(tmp_path, with_effects))
    table = {r["id"]: r for r in effect_rows(runs)}
    assert set(table) == set(TABLE3_BASELINES)
    for rid, shifts in SHIFTS.items():
        row = table[rid]
        half = stats.t.ppf(0.975, 2) * statistics.stdev(shifts) / math.sqrt(3)
        assert row["n"] == 3 and row["seeds"] == "0,1,2" and row["from_rows"] is not with_effects
        assert row["delta"] == pytest.approx(statistics.fmean(shifts)) and row["ci95"] == pytest.approx(half)
        expected = HELPS if row["low"] > 0 else HURTS if row["high"] < 0 else NO_EFFECT
        assert row["verdict"] == expected
    assert [table[r]["verdict"] for r in SHIFTS] == [NO_EFFECT, NO_EFFECT, HURTS, HELPS]


def test_records_from_rows_equal_the_runners_records(tmp_path):
    new, _ = collect_runs(_multirun(tmp_path / "new", with_effects=True))
    old, _ = collect_runs(_multirun(tmp_path / "old", with_effects=False))
    strip = [{k: v for k, v in r.items() if k != "from_rows"} for r in effect_rows(old)]
    assert strip == [{k: v for k, v in r.items() if k != "from_rows"} for r in effect_rows(new)]


def test_devec_docs_renders_the_table3_block_with_intervals_and_verdicts(tmp_path, capsys):
    sweep = _multirun(tmp_path / "out", with_effects=False)
    page = tmp_path / "docs" / "vision.md"
    io.write_text(page, "Table 3:\n\n<!-- devec:numbers table3 -->\nold\n<!-- /devec:numbers -->\nafter\n")
    main([f"table3={sweep}", "--root", str(tmp_path)])
    text = page.read_text()
    assert "old\n" not in text and text.endswith("<!-- /devec:numbers -->\nafter\n")
    assert "| Shared only | 38.50 ± " in text  # the table (first target: 0.5 below the average 39)
    assert f"- {HELPS}: Shared only vs Task Arithmetic, avg accuracy (%): 37.00 -> 39.00, delta +2.00 [95 % interval" \
           in text
    assert f"- {HURTS}: Unique only vs Task Arithmetic" in text and "n = 3 seeds" in text
    assert "computed from the table rows above" in text
    assert "computed from" not in block_text(_multirun(tmp_path / "new", with_effects=True), "table3")


def test_table3_run_writes_and_prints_its_effect_records(tmp_path, capsys):
    cfg = tiny_cfg("table3_ablation", tmp_path, "vision.ablation.steps=1", "vision.threads=1")
    results = execute(cfg, tmp_path / "out")
    rows = {r["id"]: r for r in results["rows"]}
    effects = {e["id"]: e for e in results["effects"]}
    assert set(effects) == set(TABLE3_BASELINES)
    for rid, e in effects.items():
        assert e["baseline_id"] == "task_arithmetic" and e["delta"] == pytest.approx(
            rows[rid]["avg"] - rows["task_arithmetic"]["avg"])
    out = capsys.readouterr().out
    assert "Shared only vs Task Arithmetic, avg accuracy (%)" in out and "one seed: no interval" in out
