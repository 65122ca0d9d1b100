"""Is the embedded toxicity pool in the paper's regime? Issue 14 item 4, measured over the seeds of a multirun.

For each Table 4 run (``results.json`` and ``unique_report_<set>.json`` under a run folder):

- sharing: the toxic vector's shared dimension summed over the decomposed matrices, beside the chance level (what
  Haar-random subspaces of the same row count and kept ranks share at the same tau: the report's ``chance_dim``,
  else simulated with :func:`devec.engine.chance.chance_shared_dim`), the share of matrices above chance, and the
  mean share of the toxic vector's energy that is removed as shared;
- removal: (pre-trained % toxic - DeVec % toxic) / (pre-trained % toxic - TV % toxic), per prompt set;
- control: mean absolute distance of the control-task scores from the pre-trained model's, TV negation minus DeVec
  (positive: unique negation keeps the control tasks closer to the pre-trained model).

Then mean and 95 % Student-t interval over the runs (seeds)::

    DEVEC_CACHE=/tmp/c DEVEC_OUTPUTS=/tmp/o devec -m experiment=table4_toxicity seed=0,1,2 logger=none
    python benchmarks/toxicity_regime.py /tmp/o/multirun/<date>/<time>
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def sharing(report: Sequence[Mapping[str, Any]], tau: float, draws: int = 8) -> dict[str, float]:
    """Shared dimension, chance level, share of matrices above chance and mean removed energy of one report."""
    from devec.engine.chance import chance_shared_dim

    rows = [r for r in report if r.get("action") == "decompose" and r.get("ranks")]
    shared = chance = above = energy = 0.0
    for r in rows:
        level = r.get("chance_dim")
        if level is None:
            level = chance_shared_dim(int(r["row_dim"]), r["ranks"], tau, "iterative", draws=draws)
        shared += r["shared_dim"]
        chance += level
        above += r["shared_dim"] > level
        energy += r.get("shared_energy", 0.0)
    n = max(1, len(rows))
    return {"shared_dim": shared, "chance_dim": chance, "above_chance": above / n, "shared_energy": energy / n}


def effects(results: Mapping[str, Any]) -> dict[str, float]:
    """Toxicity removal ratio per prompt set and the control-distance margin (TV minus DeVec) of one run."""
    rows = {(r["id"], r["vector"].split(" ")[0]): r for r in results["per_vector"]}
    pre = rows[("pretrained", "none")]
    out: dict[str, float] = {}
    margins = []
    for s in results["vectors"]:
        tv, dv = rows[("tv_negation", s)], rows[("devec_negation", s)]
        tox = next(k for k in tv if k.startswith(f"{s}/"))
        drop_tv = pre[tox] - tv[tox]
        out[f"removal/{s}"] = (pre[tox] - dv[tox]) / drop_tv if drop_tv else math.nan
        out[f"toxic_tv/{s}"], out[f"toxic_devec/{s}"] = tv[tox], dv[tox]
        tasks = [k for k in pre if k not in ("id", "vector", "model") and "/" not in k]
        dist_tv = sum(abs(tv[t] - pre[t]) for t in tasks) / len(tasks)
        dist_dv = sum(abs(dv[t] - pre[t]) for t in tasks) / len(tasks)
        out[f"control_dist_tv/{s}"], out[f"control_dist_devec/{s}"] = dist_tv, dist_dv
        margins.append(dist_tv - dist_dv)
    out["control_margin"] = sum(margins) / len(margins)
    return out


def interval(values: Sequence[float]) -> tuple[float, float]:
    """Mean and half-width of its 95 % Student-t interval (NaN with fewer than two values)."""
    from scipy import stats

    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)


def measure(run: Path, tau: float) -> dict[str, float]:
    """Every number of one Table 4 run folder."""
    results = json.loads((run / "results.json").read_text())
    first = next(iter(results["vectors"]))
    report = json.loads((run / f"unique_report_{first}.json").read_text())
    return {**sharing(report, tau), **effects(results)}


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path, help="a multirun folder (or one run folder) of experiment=table4_toxicity")
    p.add_argument("--tau", type=float, default=0.85, help="tau of the runs (for a simulated chance level)")
    args = p.parse_args(argv)
    runs = sorted(r.parent for r in args.root.rglob("results.json"))
    if not runs:
        raise SystemExit(f"no results.json under {args.root}: run experiment=table4_toxicity there first")
    per_run = {str(r.relative_to(args.root)) or ".": measure(r, args.tau) for r in runs}
    keys = list(next(iter(per_run.values())))
    print("| metric | " + " | ".join(per_run) + " | mean | 95 % interval |")
    print("|---" * (len(per_run) + 3) + "|")
    for k in keys:
        values = [m[k] for m in per_run.values()]
        mean, half = interval(values)
        print(f"| {k} | " + " | ".join(f"{v:.3g}" for v in values) + f" | {mean:.3g} | "
              f"[{mean - half:.3g}, {mean + half:.3g}] |")


if __name__ == "__main__":
    main()
