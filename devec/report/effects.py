"""DeVec's effect over seeds: per run, the paired difference of a metric between a DeVec variant and its baseline
(the same seed, the same setting); over runs, the mean difference, its 95 % Student-t interval and a verdict that
follows the interval, never the sign of one run.

A runner writes its comparisons into results.json as ``effects``: a list of :func:`effect_record` dicts. The caller
says whether a metric is better higher (accuracy, style strength) or lower (% toxic, distance to the pre-trained
model); the verdict reads the interval of the improvement in that direction.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from scipy import stats

from devec.report.collect import EFFECTS_KEY, RunRecord, group_records, run_records

RECORD_KEYS = ("id", "comparison", "metric", "devec", "baseline", "delta", "higher_is_better")
"""What every effect record holds (a runner may add more keys, e.g. ``baseline_id``)."""

FROM_ROWS = {"devec.vision.runner.table3": "devec.vision.runner:table3_effects"}
"""Runners (``runner._target_``) whose effect records are a function of their results' ``rows`` alone: for a
results.json written before the runner recorded ``effects``, :func:`run_effects` computes them from those rows, the
very numbers the runner compares (``module:function``, called with the rows)."""

HELPS, HURTS, NO_EFFECT, ONE_SEED = "DeVec helps", "DeVec hurts", "no measurable effect", "one seed: no interval"


@dataclass(frozen=True)
class Effect:
    """One comparison over n runs: mean values, mean difference (DeVec minus baseline) and its 95 % interval."""

    comparison: str
    metric: str
    baseline: float
    devec: float
    delta: float
    ci95: float | None          # half-width of the interval; None with one run
    n: int
    higher_is_better: bool
    verdict: str

    @property
    def low(self) -> float | None:
        return None if self.ci95 is None else self.delta - self.ci95

    @property
    def high(self) -> float | None:
        return None if self.ci95 is None else self.delta + self.ci95

    def row(self) -> dict[str, Any]:
        """The table row: the fields plus the interval's ends and the metric's direction as a word."""
        out = asdict(self)
        better = "higher" if out.pop("higher_is_better") else "lower"
        verdict = out.pop("verdict")
        return {**out, "low": self.low, "high": self.high, "better": better, "verdict": verdict}


def effect_record(id: str, comparison: str, metric: str, devec: float, baseline: float, higher_is_better: bool,
                  **extra: Any) -> dict[str, Any]:
    """One run's comparison as results.json stores it: both values and their difference ``devec - baseline``."""
    devec, baseline = float(devec), float(baseline)
    return {"id": str(id), "comparison": str(comparison), "metric": str(metric), "devec": devec,
            "baseline": baseline, "delta": devec - baseline, "higher_is_better": bool(higher_is_better), **extra}


def ci95(values: Sequence[float]) -> float | None:
    """Half-width of the two-sided 95 % Student-t interval of the mean (n-1 dof); None for fewer than 2 values."""
    n = len(values)
    if n < 2:
        return None
    mean = math.fsum(values) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    return float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)


def verdict(delta: float, half: float | None, higher_is_better: bool) -> str:
    """HELPS when the interval of the improvement lies above 0, HURTS when below, else NO_EFFECT; ONE_SEED when
    there is no interval (one run: no claim either way)."""
    if half is None:
        return ONE_SEED
    gain = delta if higher_is_better else -delta
    if gain - half > 0:
        return HELPS
    if gain + half < 0:
        return HURTS
    return NO_EFFECT


def paired_effect(devec: Sequence[float], baseline: Sequence[float], higher_is_better: bool, comparison: str = "",
                  metric: str = "") -> Effect:
    """The effect of paired values (``devec[i]`` and ``baseline[i]`` from the same seed)."""
    if len(devec) != len(baseline) or not devec:
        raise ValueError(f"paired_effect needs one baseline value per DeVec value, got {len(devec)} and "
                         f"{len(baseline)}")
    deltas = [float(d) - float(b) for d, b in zip(devec, baseline, strict=True)]
    n = len(deltas)
    delta, half = math.fsum(deltas) / n, ci95(deltas)
    return Effect(comparison, metric, math.fsum(map(float, baseline)) / n, math.fsum(map(float, devec)) / n, delta,
                  half, n, bool(higher_is_better), verdict(delta, half, higher_is_better))


def summarize(records: Sequence[Mapping[str, Any]]) -> Effect:
    """The effect of one comparison's records, one per run (seed)."""
    first = records[0]
    directions = {bool(r["higher_is_better"]) for r in records}
    if len(directions) > 1:
        raise ValueError(f"effect {first['id']!r} / {first['metric']!r}: runs disagree on higher_is_better")
    return paired_effect([r["devec"] for r in records], [r["baseline"] for r in records],
                         bool(first["higher_is_better"]), str(first["comparison"]), str(first["metric"]))


def format_effect(effect: Effect, digits: int = 2) -> str:
    """One line: the verdict, the comparison, baseline -> DeVec, the mean difference and its interval."""
    better = "higher" if effect.higher_is_better else "lower"
    f = f"{{:+.{digits}f}}".format
    values = f"{effect.baseline:.{digits}f} -> {effect.devec:.{digits}f}"
    if effect.ci95 is None:
        return (f"{effect.comparison}, {effect.metric}: {values} (delta {f(effect.delta)}; {better} is better); "
                f"{ONE_SEED}")
    return (f"{effect.verdict}: {effect.comparison}, {effect.metric}: {values}, delta {f(effect.delta)} "
            f"[95 % interval {f(effect.low)}, {f(effect.high)}; n = {effect.n} seeds; {better} is better]")


def print_effects(records: Sequence[Mapping[str, Any]]) -> None:
    """Print one run's records, each as :func:`format_effect` of that run alone."""
    for record in records:
        print(format_effect(summarize([record])))


def check_record(record: Any, where: str = "") -> Mapping[str, Any]:
    """``record`` if it holds every key of RECORD_KEYS; a ValueError naming what is missing otherwise."""
    missing = [k for k in RECORD_KEYS if not isinstance(record, Mapping) or k not in record]
    if missing:
        raise ValueError(f"{where}effects: a record lacks {', '.join(missing)}; each needs {', '.join(RECORD_KEYS)} "
                         f"(devec.report.effects.effect_record builds one)")
    return record


def run_effects(run: RunRecord) -> list[Mapping[str, Any]]:
    """The effect records of one run: its results' ``effects``, else those its runner's rows give (FROM_ROWS), each
    marked ``from_rows``; empty when it has neither."""
    records, derived = run_records(run, EFFECTS_KEY, FROM_ROWS)
    return [{**record, "from_rows": True} for record in records] if derived else records


def effect_rows(runs: Sequence[RunRecord], keys: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The effects table: one row per setting of ``keys`` (the swept keys not averaged) and comparison (id, metric),
    over that setting's runs (seeds): mean values, mean difference, ci95, its ends, n, seeds and the verdict
    (``from_rows``: true when some run's records were computed from its rows, see :func:`run_effects`)."""
    def records(run: RunRecord) -> list[Mapping[str, Any]]:
        return [check_record(r, f"{run.path}/results.json: ") for r in run_effects(run)]

    rows = []
    for setting, seeds, group in group_records(runs, keys, records, ("id", "metric"), "effect"):
        rows.append({**setting, "id": str(group[0]["id"]), **summarize(group).row(),
                     "seeds": ",".join(map(str, seeds)), "from_rows": any(r.get("from_rows", False) for r in group)})
    return rows


def effect_lines(rows: Sequence[Mapping[str, Any]], keys: Sequence[str] = ()) -> list[str]:
    """The verdict line of each row of :func:`effect_rows`, prefixed by its setting of ``keys``."""
    lines = []
    for r in rows:
        effect = Effect(r["comparison"], r["metric"], r["baseline"], r["devec"], r["delta"], r["ci95"], r["n"],
                        r["better"] == "higher", r["verdict"])
        prefix = ", ".join(f"{k}={r.get(k)}" for k in keys)
        lines.append(f"[{prefix}] {format_effect(effect)}" if prefix else format_effect(effect))
    return lines
