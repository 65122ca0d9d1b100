"""Whether a run's setting is in the regime a paper's claims presuppose, checked over seeds.

A claim such as "DeVec lifts AdaMerging" is only asked in a setting where the baselines behave as in the
literature (merging beats the pre-trained model, AdaMerging beats Task Arithmetic, ...). A runner writes such
preconditions into results.json as ``regime``: a list of :func:`check_record` dicts, one number per run with the
bounds it should lie within. Over runs (seeds) :func:`regime_rows` gives each check's mean, its 95 % Student-t
interval and a status that follows the interval: ``holds`` when the whole interval lies within the bounds,
``fails`` when it lies wholly outside them, ``undecided`` otherwise (one run: ``one seed``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from devec.report.collect import REGIME_KEY, RunRecord, group_records, run_records
from devec.report.effects import ci95

HOLDS, FAILS, UNDECIDED, ONE_SEED = "holds", "fails", "undecided", "one seed"
RECORD_KEYS = ("id", "check", "value", "low", "high")

FROM_RESULTS = {"devec.vision.runner.table1": "devec.vision.runner:table1_regime",
                "devec.toxicity.runner.table4": "devec.toxicity.runner:table4_regime",
                "devec.style.runner.run": "devec.style.runner:mix_regime"}
"""Runners whose regime checks are a function of their results alone: for a results.json written before the runner
recorded ``regime``, :func:`run_checks` computes them from those results (``module:function``)."""


def check_record(id: str, check: str, value: float, low: float | None = None, high: float | None = None,
                 paper: float | None = None) -> dict[str, Any]:
    """One run's check: ``value`` should lie in [``low``, ``high``] (an open end: None); ``paper`` the paper's."""
    if low is None and high is None:
        raise ValueError(f"regime check {id!r}: give low, high or both")
    return {"id": str(id), "check": str(check), "value": float(value),
            "low": None if low is None else float(low), "high": None if high is None else float(high),
            "paper": None if paper is None else float(paper)}


def above_chance_check(id: str, check: str, sharing: Mapping[str, Any] | None, most: float = 50.0
                       ) -> dict[str, Any] | None:
    """The share (%) of a decomposition's layers whose shared dimension exceeds chance, to be at least ``most``,
    from a sharing summary (``layers``, ``layers_above_chance``: devec.vectors.sharing); None without layers."""
    sharing = sharing or {}
    if not sharing.get("layers") or sharing.get("layers_above_chance") is None:
        return None
    return check_record(id, check, 100 * sharing["layers_above_chance"] / sharing["layers"], low=most)


def status(mean: float, half: float | None, low: float | None, high: float | None) -> str:
    """HOLDS when [mean - half, mean + half] lies within [low, high], FAILS when it lies wholly outside, else
    UNDECIDED; ONE_SEED without an interval."""
    if half is None:
        return ONE_SEED
    lo, hi = mean - half, mean + half
    below = low is not None and hi < low
    above = high is not None and lo > high
    if below or above:
        return FAILS
    if (low is None or lo >= low) and (high is None or hi <= high):
        return HOLDS
    return UNDECIDED


def run_checks(run: RunRecord) -> list[Mapping[str, Any]]:
    """The regime checks of one run: its results' ``regime``, else those its runner computes (FROM_RESULTS), each
    marked ``from_results``."""
    records, derived = run_records(run, REGIME_KEY, FROM_RESULTS, from_results=True)
    return [{**record, "from_results": True} for record in records] if derived else records


def regime_rows(runs: Sequence[RunRecord], keys: Sequence[str] = ()) -> list[dict[str, Any]]:
    """One row per setting of ``keys`` and check: the mean over that setting's runs, the interval's half-width and
    ends, the bounds, the paper's value, n, the seeds, the status and ``from_results`` (some run's checks were
    computed from its results, see :func:`run_checks`)."""
    def records(run: RunRecord) -> list[Mapping[str, Any]]:
        checks = run_checks(run)
        for record in checks:
            missing = [k for k in RECORD_KEYS if k not in record]
            if missing:
                raise ValueError(f"{run.path}/results.json: regime: a check lacks {', '.join(missing)} "
                                 "(devec.report.regime.check_record builds one)")
        return checks

    rows = []
    for setting, seeds, group in group_records(runs, keys, records, ("id",), "regime check"):
        values = [float(r["value"]) for r in group]
        first = group[0]
        mean, half = math.fsum(values) / len(values), ci95(values)
        rows.append({**setting, "id": str(first["id"]), "check": first["check"], "mean": mean, "ci95": half,
                     "low": first["low"], "high": first["high"], "paper": first.get("paper"), "n": len(values),
                     "seeds": ",".join(map(str, seeds)), "status": status(mean, half, first["low"], first["high"]),
                     "from_results": any(r.get("from_results", False) for r in group)})
    return rows


def bounds_text(low: float | None, high: float | None) -> str:
    """``>= 25``, ``<= 90`` or ``in [60, 90]``."""
    if low is not None and high is not None:
        return f"in [{low:g}, {high:g}]"
    return f">= {low:g}" if low is not None else f"<= {high:g}"


def regime_lines(rows: Sequence[Mapping[str, Any]], keys: Sequence[str] = (), digits: int = 1) -> list[str]:
    """One line per row of :func:`regime_rows`: status, check, mean [interval], the bounds and the paper's value."""
    lines = []
    for r in rows:
        interval = ("" if r["ci95"] is None else
                    f" [95 % interval {r['mean'] - r['ci95']:.{digits}f}, {r['mean'] + r['ci95']:.{digits}f}]")
        paper = "" if r.get("paper") is None else f"; the paper: {r['paper']:.{digits}f}"
        prefix = ", ".join(f"{k}={r.get(k)}" for k in keys)
        line = (f"{r['status']}: {r['check']} = {r['mean']:.{digits}f}{interval} (should be "
                f"{bounds_text(r['low'], r['high'])}{paper}; n = {r['n']})")
        lines.append(f"[{prefix}] {line}" if prefix else line)
    return lines


def print_checks(records: Sequence[Mapping[str, Any]]) -> None:
    """Print one run's checks (value, bounds, the paper's value): one seed gives no status."""
    if records:
        print("Regime (one run; `devec-report` over seeds gives each an interval and a status):")
    for r in records:
        paper = "" if r.get("paper") is None else f"; the paper: {r['paper']:.1f}"
        print(f"  {r['check']} = {r['value']:.1f} (should be {bounds_text(r['low'], r['high'])}{paper})")
