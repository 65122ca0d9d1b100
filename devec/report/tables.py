"""Sweep tables: runs averaged over seeds, pivots, and writers for markdown, CSV and LaTeX (booktabs)."""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from devec import io
from devec.report.collect import is_number
from devec.runtime import markdown_table


def aggregate(long: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """One row per combination of ``keys``: each metric's mean, with ``<metric>_std`` and ``n`` over seeds/repeats."""
    groups: dict[tuple, dict[str, list[float]]] = {}
    settings: dict[tuple, dict[str, Any]] = {}
    for row in long:
        group = tuple(_key(row.get(k)) for k in keys)
        settings.setdefault(group, {k: row.get(k) for k in keys})
        groups.setdefault(group, {}).setdefault(row["metric"], []).append(row["value"])
    metrics = list(dict.fromkeys(row["metric"] for row in long))
    repeated = any(len(v) > 1 for g in groups.values() for v in g.values())
    out = []
    for group in sorted(groups, key=_sort_key):
        row = dict(settings[group])
        for m in metrics:
            values = groups[group].get(m, [])
            row[m] = statistics.fmean(values) if values else None
            if repeated:
                row[f"{m}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        if repeated:
            row["n"] = max(len(v) for v in groups[group].values())
        out.append(row)
    return out


def pivot(long: Sequence[Mapping[str, Any]], rows: str, cols: str, value: str = "value") -> list[dict[str, Any]]:
    """``rows`` down, ``cols`` across, the mean of ``value`` in each cell (e.g. methods x datasets, Table 1)."""
    cells: dict[tuple, list[float]] = {}
    row_keys: dict[Any, Any] = {}
    col_keys: dict[Any, Any] = {}
    for r in long:
        if not is_number(r.get(value)):
            continue
        rk, ck = _key(r.get(rows)), _key(r.get(cols))
        row_keys.setdefault(rk, r.get(rows))
        col_keys.setdefault(ck, r.get(cols))
        cells.setdefault((rk, ck), []).append(float(r[value]))
    col_order = sorted(col_keys, key=lambda c: _sort_key((c,)))
    out = []
    for rk in sorted(row_keys, key=lambda c: _sort_key((c,))):
        row = {rows: row_keys[rk]}
        for ck in col_order:
            vals = cells.get((rk, ck))
            row[str(col_keys[ck])] = statistics.fmean(vals) if vals else None
        out.append(row)
    return out


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
    """A booktabs ``table`` environment; numbers right-aligned, text escaped."""
    align = "".join("r" if all(is_number(r.get(c)) or r.get(c) is None for r in rows) else "l" for c in columns)
    lines = ["\\begin{table}[t]", "\\centering"]
    if caption:
        lines.append(f"\\caption{{{_tex(caption)}}}")
    lines += [f"\\begin{{tabular}}{{{align}}}", "\\toprule", " & ".join(_tex(c) for c in columns) + " \\\\",
              "\\midrule"]
    lines += [" & ".join(_tex(_cell(r.get(c), floatfmt)) for c in columns) + " \\\\" for r in rows]
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"


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
