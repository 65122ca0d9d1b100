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
