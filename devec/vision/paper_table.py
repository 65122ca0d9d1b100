"""The paper's numbers beside ours: each vision table gets, per column the paper has, its value and our difference.

Rows are matched by id (our method id, or the paper row an alias names; devec/paper_numbers.py), columns by task id
(at embedded scale through ``data.paper_ids``, the paper task each synthetic task stands in for). Nothing is computed
from the paper's numbers beyond the difference shown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from devec.paper_numbers import TABLE3_FLAGGED, VISION_TABLES, PaperTable, paper_row_id, paper_value

PAPER_SUFFIX = " (paper)"
DIFF_SUFFIX = " Δ"
EXTRA = "extra (not in the paper)"
OTHER_SCALE = ("the paper's columns are CLIP ViT-B/32 on its datasets: a different scale from this run "
               "(embedded), shown for orientation only")


def beside_paper(table_id: str, rows: Sequence[Mapping[str, Any]], columns: Sequence[str], *, row_key: str = "id",
                 column_ids: Mapping[str, str] | None = None, same_scale: bool = True
                 ) -> tuple[list[dict[str, Any]], list[str], str]:
    """``(rows, columns, note)``: after each column the paper has, ``<col> (paper)`` and ``<col> Δ`` (ours - paper);
    a ``paper row`` column names the paper's row (or marks the row as extra). ``column_ids`` maps our column names
    to the paper's column ids (identity where absent)."""
    table = _table(table_id)
    ids = {c: (column_ids or {}).get(c, c) for c in columns}
    shown = [c for c in columns if ids[c] in table["columns"]]
    out_columns: list[str] = []
    for c in columns:
        out_columns.append(c)
        if c in shown:
            out_columns += [c + PAPER_SUFFIX, c + DIFF_SUFFIX]
    out_columns.append("paper row")
    out_rows = [_row(table, table_id, r, r.get(row_key), shown, ids) for r in rows]
    note = "; ".join([f"paper: {table['title']}", *table["notes"], *([] if same_scale else [OTHER_SCALE])])
    return out_rows, out_columns, note


def paper_block(table_id: str, rows: Sequence[Mapping[str, Any]], columns: Sequence[str], note: str,
                same_scale: bool) -> dict[str, Any]:
    """What results.json records of the comparison (devec-report writes ``rows`` as a table)."""
    return {"table": table_id, "same_scale": same_scale, "note": note, "columns": list(columns),
            "rows": [dict(r) for r in rows]}


def _table(table_id: str) -> PaperTable:
    if table_id not in VISION_TABLES:
        raise ValueError(f"no paper table {table_id!r}; known: {', '.join(VISION_TABLES)} (devec/paper_numbers.py)")
    return VISION_TABLES[table_id]


def _row(table: PaperTable, table_id: str, row: Mapping[str, Any], rid: Any, shown: Sequence[str],
         ids: Mapping[str, str]) -> dict[str, Any]:
    out = dict(row)
    pid = paper_row_id(table, str(rid)) if rid is not None else None
    out["paper row"] = table["rows"][pid][0] if pid else EXTRA
    for c in shown:
        value = paper_value(table, str(rid), ids[c]) if pid else None
        ours = row.get(c)
        out[c + PAPER_SUFFIX] = value
        out[c + DIFF_SUFFIX] = float(ours) - value if _number(ours) and value is not None else None
        if table_id == "table3" and (pid, ids[c]) in TABLE3_FLAGGED:
            out["paper row"] = f"{table['rows'][pid][0]} (P4: some cells look column-shifted in the paper)"
    return out


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


def save_beside_paper(cfg: Any, run: Any, table_id: str, name: str, rows: Sequence[Mapping[str, Any]],
                      columns: Sequence[str], title: str) -> dict[str, Any]:
    """Write table ``name`` (markdown, CSV, the logger's table) with the paper's columns beside ours; returns the
    block for results.json (``paper``), which devec-report writes as a table too."""
    from devec.vision.data import SyntheticTasks, task_pool

    data = task_pool(cfg.data)
    same_scale = not isinstance(data, SyntheticTasks)
    out_rows, out_columns, note = beside_paper(table_id, rows, columns, column_ids=data.paper_ids,
                                               same_scale=same_scale)
    run.save_table(name, out_rows, out_columns, title=f"{title}\n\n_{note}_")
    return paper_block(table_id, out_rows, out_columns, note, same_scale)
