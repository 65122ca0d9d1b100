"""The engine benchmark runs end to end in its quick mode and reports consistent numbers (no timing asserted)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_engine_benchmark_quick_mode_writes_consistent_results(tmp_path):
    out = tmp_path / "engine.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_engine.py"), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert {r["k"] for r in result["routes"]} == {2, 4}
    for r in result["routes"]:
        assert r["shared_dim_lowrank"] == r["shared_dim_dense"] > 0
        assert r["max_angle_rad"] < 1e-6
    assert [m["mode"] for m in result["whole_model"]] == ["joint", "pairwise"]
    for m in result["whole_model"]:
        assert m["per_layer_floor_s"] > 0 and m["per_layer_model_s"] > 0
        assert abs(m["per_layer_ratio"] - m["per_layer_model_s"] / m["per_layer_floor_s"]) < 1e-9
        assert 0 < m["bases_inside_s"] < m["decompose_model_s"]
    assert "Per layer, interleaved" in done.stdout


def test_bases_benchmark_quick_mode_compares_before_and_after(tmp_path):
    out = tmp_path / "bases.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_bases.py"), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["dtype"] for r in rows] == ["float32", "bfloat16"]
    for r in rows:
        assert r["rank_before"] == r["rank_after"] > 0
        assert r["max_angle_rad"] < 1e-9 and r["max_eigenvalue_diff_rel_to_top"] < 1e-12
        assert r["before_s"] > 0 and r["after_s"] > 0 and r["after_extra_peak_bytes"] >= 0
        assert abs(r["time_ratio"] - r["after_s"] / r["before_s"]) < 1e-9
        assert {x["variant"] for x in r["all_runs"]} == {"before", "after"}
    assert "memory after/before" in done.stdout
