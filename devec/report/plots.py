"""Sweep curves: a metric against a swept setting (tau, Fig. 6) or a coefficient (Fig. 5), one line per setting."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from devec.report.collect import is_number  # noqa: E402


def curve_figure(rows: Sequence[Mapping[str, Any]], x: str, y: str, line_keys: Sequence[str], title: str = ""):
    """``y`` (mean, with ``y_std`` as error bars when present) against ``x``, one line per value of ``line_keys``."""
    lines: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        if is_number(row.get(x)) and is_number(row.get(y)):
            label = ", ".join(f"{_short(k)}={row.get(k)}" for k in line_keys) or y
            lines.setdefault(label, []).append(row)
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for label, points in lines.items():
        points = sorted(points, key=lambda r: float(r[x]))
        xs, ys = [float(p[x]) for p in points], [float(p[y]) for p in points]
        std = [float(p.get(f"{y}_std") or 0.0) for p in points]
        if any(std):
            ax.errorbar(xs, ys, yerr=std, marker="o", ms=4, capsize=3, label=label)
        else:
            ax.plot(xs, ys, marker="o", ms=4, label=label)
    ax.set(xlabel=_short(x), ylabel=y, title=title or f"{y} vs {_short(x)}")
    ax.grid(alpha=0.3)
    if len(lines) > 1 or line_keys:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _short(key: str) -> str:
    return key.rsplit(".", 1)[-1] if key.startswith("decomposition.") else key
