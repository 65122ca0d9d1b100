"""python -m devec.report.compare: every number of two results.json files, by path."""

from __future__ import annotations

import json
import subprocess
import sys

from devec.report.compare import compare

OLD = {"experiment": "t", "seconds": 3.0, "rows": [{"id": "a", "avg": 50.0, "x": 1}], "energy": 0.5}


def test_identical_results_compare_equal_and_bookkeeping_is_ignored():
    new = {**OLD, "seconds": 9.0}
    out = compare(OLD, new)
    assert out["compared"] == 3 and out["differ"] == {}


def test_a_changed_number_is_reported_by_its_path(tmp_path):
    new = json.loads(json.dumps(OLD))
    new["rows"][0]["avg"] = 50.5
    assert compare(OLD, new)["differ"] == {"/rows[0]/avg": (50.0, 50.5)}
    assert compare(OLD, new, rtol=0.02)["differ"] == {}
    (tmp_path / "a.json").write_text(json.dumps(OLD))
    (tmp_path / "b.json").write_text(json.dumps(new))
    files = [str(tmp_path / "a.json"), str(tmp_path / "b.json")]
    p = subprocess.run([sys.executable, "-m", "devec.report.compare", *files], capture_output=True, text=True)
    assert p.returncode == 1 and "/rows[0]/avg: 50.0 -> 50.5" in p.stdout
