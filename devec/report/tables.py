"""Sweep tables on pandas: runs averaged over seeds (mean, std, 95 % interval, n), pivots, and writers for markdown,
CSV and LaTeX (booktabs)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from scipy import stats

from devec import io
from devec.report.collect import is_number
from devec.runtime import markdown_table

LABELS = ("setting", "model", "method", "id")
"""Columns that name an in-run table row, most specific first (the first one a row has labels it)."""
STATS = ("mean", "std", "count", "size")
"""Per (setting, metric) cell: the mean and sample std, the finite-or-not values (``size``) and the non-NaN ones."""


def aggregate(long: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """One row per combination of ``keys``: each metric's mean; over seeds/repeats also ``<metric>_std``,
    ``<metric>_ci95`` (half-width of the 95 % Student-t interval, n-1 dof; empty when n < 2) and ``n``."""
    if not long:
        return []
    keys = list(keys)
    frame = pd.DataFrame({"group": _group_ids(long, keys), "metric": [r["metric"] for r in long],
                          "value": [float(r["value"]) for r in long]})
    cells = frame.groupby(["group", "metric"], sort=False)["value"].agg(list(STATS))
    cells["std"] = cells["std"].where(cells["size"] > 1, 0.0)  # one value: no spread
    cells["ci95"] = _ci95(cells["std"], cells["size"])
    cells.loc[cells["count"] < cells["size"], ["mean", "std", "ci95"]] = math.nan  # a NaN run is not skipped
    wide = cells.unstack("metric")
    repeated = bool((cells["size"] > 1).any())
    columns: dict[str, pd.Series] = {}  # built whole, then one frame: column by column fragments pandas' blocks
    for m in dict.fromkeys(frame["metric"]):
        present = wide[("size", m)].notna()
        columns[m] = _objects(wide[("mean", m)], present)
        if repeated:
            columns[f"{m}_std"] = _objects(wide[("std", m)], present)
            columns[f"{m}_ci95"] = _objects(wide[("ci95", m)], wide[("size", m)] > 1)
    if repeated:
        columns["n"] = wide["size"].max(axis=1).astype(int)
    table = pd.DataFrame(columns, index=wide.index)
    first = frame.drop_duplicates("group")  # each group's settings as its first row gave them
    settings = pd.DataFrame([[long[i].get(k) for k in keys] for i in first.index], index=first["group"],
                            columns=keys, dtype=object)
    order = sorted(settings.index, key=lambda g: _sort_key(tuple(_key(v) for v in settings.loc[g])))
    return settings.join(table).loc[order].to_dict("records")


def pivot(long: Sequence[Mapping[str, Any]], rows: str, cols: str, value: str = "value") -> list[dict[str, Any]]:
    """``rows`` down, ``cols`` across, the mean of ``value`` in each cell (e.g. methods x datasets, Table 1)."""
    numeric = [r for r in long if is_number(r.get(value))]
    if not numeric:
        return []
    frame = pd.DataFrame({"row": _group_ids(numeric, [rows]), "col": _group_ids(numeric, [cols]),
                          "value": [float(r[value]) for r in numeric]})
    table = frame.pivot_table(index="row", columns="col", values="value", aggfunc="mean")
    row_names, col_names = ({g: numeric[i].get(k) for i, g in frame[axis].drop_duplicates().items()}
                            for axis, k in (("row", rows), ("col", cols)))
    row_order = sorted(table.index, key=lambda g: _sort_key((_key(row_names[g]),)))
    col_order = sorted(table.columns, key=lambda g: _sort_key((_key(col_names[g]),)))
    table = table.loc[row_order, col_order]
    table = table.astype(object).where(table.notna(), None)
    table.columns = [str(col_names[g]) for g in col_order]
    table.insert(0, rows, pd.Series([row_names[g] for g in row_order], index=table.index, dtype=object))
    return table.to_dict("records")


def seed_rows(per_run: Sequence[tuple[Mapping[str, Any], Sequence[Mapping[str, Any]]]], floatfmt: str = ".2f"
              ) -> list[dict[str, Any]]:
    """An in-run table (e.g. results.json ``rows``: Table 1's methods) over runs, from ``(setting, rows)`` per run.

    One row per setting, position and label (the runs of one config list the same rows in the same order; a sweep
    inside a run repeats a label); each numeric cell as ``mean ± ci95`` (95 % Student-t,
    n-1 dof), the value alone when the runs agree or there is one run; text cells as given when the runs agree,
    ``varies`` otherwise; boolean columns left out; ``n`` (runs) when a row has several.
    """
    from devec.report.effects import ci95

    groups: dict[tuple, tuple[Mapping[str, Any], dict[str, list[Any]]]] = {}
    for setting, rows in per_run:
        for i, r in enumerate(rows):
            label = next((r[k] for k in LABELS if k in r), None)
            key = (*(str(v) for v in setting.values()), i, str(r.get("id", label)))
            columns = groups.setdefault(key, (setting, {}))[1]
            for c, v in r.items():
                columns.setdefault(c, []).append(v)
    out = []
    for setting, columns in groups.values():
        shown = [c for c in columns if not all(isinstance(v, bool) for v in columns[c])]
        if "id" in shown and any(k in columns for k in LABELS[:-1]):
            shown.remove("id")
        row = {**setting, **{c: _seed_cell(columns[c], floatfmt, ci95) for c in shown}}
        n = max(len(v) for v in columns.values())
        out.append({**row, "n": n} if len(per_run) > 1 else row)
    return out


def _seed_cell(values: Sequence[Any], floatfmt: str, ci95) -> str:
    if all(is_number(v) for v in values):
        mean = math.fsum(values) / len(values)
        if len(set(values)) == 1:
            return format(mean, floatfmt)
        return f"{format(mean, floatfmt)} ± {format(ci95(values), floatfmt)}"
    texts = {"" if v is None else str(v) for v in values}
    return texts.pop() if len(texts) == 1 else "varies"


def write_table(out_dir: str | os.PathLike, name: str, rows: Sequence[Mapping[str, Any]], title: str = "",
                floatfmt: str = ".4g") -> list[Path]:
    """``name.md``, ``name.csv`` and ``name.tex`` in ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    md = (f"### {title}\n\n" if title else "") + markdown_table(rows, columns, floatfmt=floatfmt)
    return [io.write_text(out_dir / f"{name}.md", md), io.write_csv(out_dir / f"{name}.csv", rows, columns),
            io.write_text(out_dir / f"{name}.tex", latex_table(rows, columns, title, floatfmt))]


def latex_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], caption: str = "",
                floatfmt: str = ".4g") -> str:
    """A booktabs ``table`` environment (pandas' Styler); numbers right-aligned, text escaped, None as ``--``."""
    frame = pd.DataFrame([[r.get(c) for c in columns] for r in rows], columns=list(columns), dtype=object)
    align = "".join("r" if all(is_number(v) or v is None for v in frame[c]) else "l" for c in columns)
    styler = frame.style.hide(axis="index").format(lambda v: _cell(v, floatfmt), escape="latex")
    styler = styler.format_index(escape="latex", axis=1)
    return styler.to_latex(column_format=align, position="t", position_float="centering", hrules=True,
                           caption=_tex(caption) if caption else None)


def _group_ids(long: Sequence[Mapping[str, Any]], keys: list[str]) -> pd.Series:
    """The row's group number: rows with equal ``keys`` (None included, unhashable values by their text) share one."""
    if not keys:
        return pd.Series(0, index=range(len(long)))
    labels = pd.DataFrame([[_key(r.get(k)) for k in keys] for r in long], columns=keys, dtype=object)
    return labels.groupby(keys, dropna=False, sort=False).ngroup()


def _ci95(std: pd.Series, n: pd.Series) -> pd.Series:
    """Half-width of the two-sided 95 % Student-t interval of a mean: t(0.975, n-1) * std / sqrt(n); NaN if n < 2."""
    dof = (n - 1).where(n > 1)
    return pd.Series(stats.t.ppf(0.975, dof), index=std.index) * std / n.pow(0.5)


def _objects(values: pd.Series, keep: pd.Series) -> pd.Series:
    """Python floats where ``keep``, None elsewhere (an empty cell, not NaN)."""
    return values.astype(object).where(keep.fillna(False).astype(bool), None)


def _cell(value: Any, floatfmt: str) -> str:
    if value is None:
        return "--"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else format(value, floatfmt)
    return str(value)


def _tex(text: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in text)


_TEX = {"\\": "\\textbackslash{}", "_": "\\_", "%": "\\%", "&": "\\&", "#": "\\#", "$": "\\$", "{": "\\{",
        "}": "\\}", "~": "\\textasciitilde{}", "^": "\\textasciicircum{}"}


def _key(value: Any) -> Any:
    return value if isinstance(value, int | float | str | bool) or value is None else str(value)


def _sort_key(group: tuple) -> tuple:
    return tuple((0, float(v), "") if is_number(v) else (1, 0.0, str(v)) for v in group)
