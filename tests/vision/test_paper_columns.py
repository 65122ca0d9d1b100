"""The paper's Tables 1-3 as data, and every vision table with the paper's value and our difference beside ours."""

from __future__ import annotations

import csv

import pytest
from omegaconf import open_dict

from devec import paper_numbers as pn
from devec.cli import execute
from devec.vision.paper_table import DIFF_SUFFIX, EXTRA, PAPER_SUFFIX, beside_paper

from .conftest import tiny_cfg


@pytest.mark.parametrize("table_id", list(pn.VISION_TABLES))
def test_each_paper_row_has_a_value_per_column_and_its_printed_average(table_id):
    table = pn.VISION_TABLES[table_id]
    for rid, (label, values) in table["rows"].items():
        assert len(values) == len(table["columns"]), rid
        if table["columns"][-1] == "avg":
            cells = values[:-1]
            assert abs(sum(cells) / len(cells) - values[-1]) < 0.06, (rid, label)


def test_the_papers_headline_claims_follow_from_the_stored_rows():
    t1, t3 = pn.TABLE1["rows"], pn.TABLE3["rows"]
    assert round(t1["task_arithmetic_devec"][1][-1] - t1["task_arithmetic"][1][-1], 1) == 4.6
    assert round(t1["adamerging_layer_devec"][1][-1] - t1["ties"][1][-1], 1) == 9.7
    assert round(t3["shared_only"][1][-1] - t3["task_arithmetic"][1][-1], 2) == 3.19
    assert pn.TABLE3["columns"][:-1] == ["stanford_cars", "eurosat", "gtsrb", "mnist", "resisc45", "svhn",
                                         "cifar100", "fgvc_aircraft", "oxford_pets", "country211"]


def test_p4_cells_of_table3_are_stored_as_printed_and_flagged():
    zero = dict(zip(pn.TABLE3["columns"], pn.TABLE3["rows"]["zero_shot"][1], strict=True))
    assert zero["eurosat"] == 32.60 and zero["gtsrb"] == 48.26   # as printed, not "corrected"
    assert {c for _, c in pn.TABLE3_FLAGGED} == {"eurosat", "gtsrb", "mnist", "resisc45", "svhn"}
    rows, _, note = beside_paper("table3", [{"id": "zero_shot", "eurosat": 40.0}], ["method", "eurosat"])
    assert "P4" in rows[0]["paper row"] and "P4" in note


def test_rows_and_columns_are_matched_by_id_with_the_difference_and_extras_marked():
    ours = [{"id": "task_arithmetic", "method": "anything", "sun397": 60.0, "mnist": 90.0, "letters": 50.0,
             "avg": 70.0},
            {"id": "ties_devec", "method": "Task Arithmetic", "sun397": 61.0, "mnist": 91.0, "letters": 1.0,
             "avg": 71.0}]
    rows, columns, note = beside_paper("table1", ours, ["method", "sun397", "mnist", "letters", "avg"])
    assert columns[:4] == ["method", "sun397", "sun397" + PAPER_SUFFIX, "sun397" + DIFF_SUFFIX]
    assert "letters" + PAPER_SUFFIX not in columns                  # the paper has no such column
    ta = rows[0]
    assert ta["sun397" + PAPER_SUFFIX] == 55.3 and ta["mnist" + PAPER_SUFFIX] == 97.3
    assert ta["sun397" + DIFF_SUFFIX] == pytest.approx(60.0 - 55.3)
    assert ta["avg" + DIFF_SUFFIX] == pytest.approx(70.0 - 69.0)
    extra = rows[1]                                                # matched by id, not by its label
    assert extra["paper row"] == EXTRA and extra["sun397" + PAPER_SUFFIX] is None
    assert "different scale" not in note


def test_an_alias_maps_our_row_id_to_the_papers_row():
    rows, _, _ = beside_paper("table2", [{"id": "adamerging_plus", "eurosat": 50.0}], ["method", "eurosat"])
    assert rows[0]["eurosat" + PAPER_SUFFIX] == 53.5 and rows[0]["paper row"] == "AdaMerging++ [48]"


def test_table2_at_tiny_scale_writes_the_paper_column_through_the_stand_in_task(tmp_path):
    # its own cache: the session's is counted by test_runner's Table 1 test (one model per task it merges)
    cfg = tiny_cfg("table2_generalization", tmp_path, "vision.threads=1", f"paths.cache_dir={tmp_path / 'cache'}")
    with open_dict(cfg):
        for key in [k for k in cfg.methods if k not in ("pretrained", "task_arithmetic")]:
            del cfg.methods[key]
    results = execute(cfg, tmp_path / "out")
    md = (tmp_path / "out" / "table2_generalization.md").read_text()
    assert "handwritten (paper)" in md and "unseen avg Δ" in md and "different scale" in md
    with open(tmp_path / "out" / "table2_generalization.csv") as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    ta = next(r for r in results["paper"]["rows"] if r["id"] == "task_arithmetic")
    assert ta["handwritten (paper)"] == 77.2                         # handwritten stands in for MNIST
    assert ta["handwritten Δ"] == pytest.approx(ta["handwritten"] - 77.2)
    assert float(rows[ta["method"]]["handwritten (paper)"]) == 77.2
    pre = next(r for r in results["paper"]["rows"] if r["id"] == "pretrained")
    assert pre["paper row"] == EXTRA and results["paper"]["same_scale"] is False


def test_devec_report_finds_the_paper_comparison_as_a_table_of_results_json():
    from devec.report.collect import curves
    from devec.vision.paper_table import paper_block

    rows, columns, note = beside_paper("table1", [{"id": "ties", "mnist": 90.0}], ["method", "mnist"])
    found = curves({"paper": paper_block("table1", rows, columns, note, True)})
    assert found["paper/rows"][0]["mnist (paper)"] == 96.5


def test_normalized_accuracy_is_null_where_the_individual_model_scores_zero():
    """Normalized accuracy divides by the individual model's accuracy: undefined (None, JSON null) at 0, and then
    the average too, never NaN in results.json."""
    import json

    from devec.vision.taskpool import normalized

    names = ["a", "b"]
    full = normalized({"a": 40.0, "b": 30.0}, {"a": 80.0, "b": 60.0}, names)
    assert full == {"a": 50.0, "b": 50.0, "avg": 50.0}
    part = normalized({"a": 40.0, "b": 0.0}, {"a": 80.0, "b": 0.0}, names)
    assert part["a"] == 50.0 and part["b"] is None and part["avg"] is None
    assert "NaN" not in json.dumps(part)
