"""Sharing against chance, per layer: the table, plot and summary every decomposition report carries.

A driver report row of a decomposed layer holds ``shared_dim`` and, with ``decomposition.chance_draws`` > 0,
``chance_dim``: what random subspaces of the same row count and kept ranks share at the same tau under the same
mode (:mod:`devec.engine.chance`). A layer is above chance when its shared dimension exceeds that level.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from devec.engine import CHANCE_METHOD

Report = Sequence[Mapping[str, Any]]
COLUMNS = ["name", "shape", "row_dim", "ranks", "shared_dim", "chance_dim", "above_chance"]


def sharing_rows(report: Report) -> list[dict[str, Any]]:
    """One row per decomposed layer: name, shape, row_dim, kept ranks, shared_dim, chance_dim, above_chance
    (None where the chance level was not computed)."""
    rows = []
    for r in report:
        if r.get("action") != "decompose" or "shared_dim" not in r or "ranks" not in r:
            continue  # policy layers, and iterative layers no other vector changes, have nothing to compare
        chance = r.get("chance_dim")
        rows.append({"name": r["name"], "shape": r.get("shape"), "row_dim": r.get("row_dim"),
                     "ranks": ",".join(map(str, r["ranks"])), "shared_dim": float(r["shared_dim"]),
                     "chance_dim": None if chance is None else float(chance),
                     "above_chance": None if chance is None else float(r["shared_dim"]) > float(chance)})
    return rows


def sharing_summary(report: Report) -> dict[str, Any]:
    """Layers, layers above chance, mean shared and chance dimension per layer, and how the chance was computed."""
    rows = sharing_rows(report)
    measured = [r for r in rows if r["chance_dim"] is not None]
    draws = sorted({int(r["chance_draws"]) for r in report if r.get("chance_draws")})
    return {"layers": len(rows),
            "layers_above_chance": sum(r["above_chance"] for r in measured) if measured else None,
            "mean_shared_dim": _mean([r["shared_dim"] for r in rows]),
            "mean_chance_dim": _mean([r["chance_dim"] for r in measured]) if measured else None,
            "chance": (CHANCE_METHOD.format(draws="/".join(map(str, draws))) if measured
                       else "not computed (decomposition.chance_draws=0)")}


def sharing_line(summary: Mapping[str, Any]) -> str:
    """``shared dim X per layer (chance Y; N of M layers above chance)``."""
    shared = f"shared dim {summary['mean_shared_dim']:.2f} per layer"
    if summary["mean_chance_dim"] is None:
        return f"{shared} (chance level not computed: decomposition.chance_draws=0)"
    return (f"{shared} (chance {summary['mean_chance_dim']:.2f}; {summary['layers_above_chance']} of "
            f"{summary['layers']} layers above chance)")


def save_sharing(run: Any, report: Report, title: str, *, name: str = "sharing", label: str = "") -> dict[str, Any]:
    """Write ``<name>.md/.csv`` (per layer) and ``<name>.png``, print the one-line summary (after ``label``),
    and return the summary for results.json."""
    rows = sharing_rows(report)
    summary = sharing_summary(report)
    run.save_table(name, rows, COLUMNS, title=f"{title} ({summary['chance']})", floatfmt=".2f")
    if rows:
        run.save_figure(name, sharing_figure(rows, title))
    print((f"{label}: " if label else "") + sharing_line(summary))
    return summary


def sharing_figure(rows: Sequence[Mapping[str, Any]], title: str, ranks: bool = False):
    """Bars: each layer's shared dimension; markers: its chance level (and, with ``ranks``, its largest kept rank)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(rows)), 4.0))
    x = list(range(len(rows)))
    ax.bar(x, [r["shared_dim"] for r in rows], color="tab:blue", label="shared dimension")
    chance = [(i, r["chance_dim"]) for i, r in zip(x, rows, strict=True) if r.get("chance_dim") is not None]
    if chance:
        ax.plot([i for i, _ in chance], [c for _, c in chance], "D", color="tab:red", ms=5, clip_on=False, zorder=3,
                label="chance level (random subspaces, same ranks)")
    if ranks:
        ax.plot(x, [max(_ranks(r["ranks"])) for r in rows], "k_", ms=12, label="largest kept rank")
    ax.set_xticks(x, [_short(r["name"]) for r in rows], rotation=70, ha="right", fontsize=7)
    ax.set_ylabel("dimension")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper right", framealpha=0.8)
    fig.tight_layout()
    return fig


def slug(text: str) -> str:
    """A file-name-safe form of a label (``sharing_<slug>``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_") or "sharing"


def _short(name: str) -> str:
    """A layer name for a tick label: its last three components, without ``.weight``."""
    return ".".join(str(name).removesuffix(".weight").split(".")[-3:])


def _ranks(value: Any) -> list[int]:
    return [int(v) for v in (value.split(",") if isinstance(value, str) else value)]


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0
