"""``devec-report``: gather a sweep's runs into tables (markdown, CSV, LaTeX) and curves, and log them to W&B.

    devec-report outputs/multirun/toy_alternative/2026-01-01_12-00-00 --x decomposition.tau
    devec-report toy_alternative            # the newest multirun of that experiment
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from devec import io
from devec.report.collect import (
    collect_runs,
    curve_rows,
    find_sweep,
    is_number,
    long_rows,
    swept_keys,
)
from devec.report.effects import effect_lines, effect_rows
from devec.report.plots import curve_figure
from devec.report.regime import regime_lines, regime_rows
from devec.report.tables import aggregate, pivot, seed_rows, write_table

log = logging.getLogger("devec.report")
MAX_PLOTS = 12
EFFECT_COLUMNS = ("comparison", "metric", "better", "baseline", "devec", "delta", "ci95", "n", "verdict", "low",
                  "high", "seeds", "id")
"""Columns of the effects table after the swept keys: mean values and difference over seeds, then the interval."""


def build_report(sweep: str | Path, out_dir: str | Path | None = None, x: str | None = None,
                 metrics: Sequence[str] = (), average: Sequence[str] = ("seed",), rows: str | None = None,
                 cols: str | None = None, curve_x: str | None = None, wandb_mode: str | None = "offline"
                 ) -> dict[str, Any]:
    """Write the sweep's tables and plots under ``out_dir`` (default ``<sweep>/report``); returns what it wrote.

    A metric, ``x``, ``rows`` or ``cols`` that no run has is a ValueError naming what is available. The files of an
    earlier report in ``out_dir`` (listed in its report.json) are removed first, so the folder holds this one only.
    """
    sweep = find_sweep(sweep)
    out = Path(out_dir) if out_dir else sweep / "report"
    runs, missing = collect_runs(sweep, skip=[out])
    for job in missing:
        log.warning("%s has no results.json (failed or still running); rerun the same command to resume it", job)
    keys = swept_keys(runs)
    if x and x not in keys:
        _check_setting("--x", x, runs, keys)
        keys.append(x)
    group_keys = [k for k in keys if k not in average]
    long = long_rows(runs, group_keys)
    per_curve = curve_rows(runs, group_keys)
    known = {r["metric"] for r in long} | {c for crows in per_curve.values() for c in crows[0]}
    unknown = [m for m in metrics if m not in known]
    if unknown:
        raise ValueError(f"--metric {', '.join(unknown)}: no run reports it; available: {', '.join(sorted(known))}")
    for flag, key in (("--rows", rows), ("--cols", cols)):
        if key and key not in ("metric", "run", "seed", *group_keys):
            raise ValueError(f"{flag} {key}: use 'metric' or a swept key ({', '.join(group_keys) or 'none'})")
    if metrics:
        long = [r for r in long if r["metric"] in metrics]
    _remove_previous(out)
    files: list[Path] = [io.write_csv(out / "long.csv", long)] if long else []
    table = aggregate(long, group_keys) if long else []
    sweep_title = f"{', '.join(sorted({str(r.results.get('experiment')) for r in runs}))}: {len(runs)} runs"
    files += write_table(out, "sweep", table, title=sweep_title) if table else []
    if rows and cols:
        files += write_table(out, "pivot", pivot(long, rows, cols), title=f"{rows} x {cols}")
    in_run = seed_rows([({k: r.setting(k) for k in group_keys}, r.results["rows"]) for r in runs
                        if isinstance(r.results.get("rows"), list)])
    if in_run:
        files += write_table(out, "rows_mean_ci95", in_run, title="The run's table over seeds: mean ± 95 % interval")
    effects = effect_rows(runs, group_keys)
    if effects:
        columns = [*group_keys, *EFFECT_COLUMNS]
        files += write_table(out, "effects", [{c: e.get(c) for c in columns} for e in effects],
                             title="DeVec's effect: DeVec minus its baseline, mean over seeds and 95 % interval")
    regime = regime_rows(runs, group_keys)
    if regime:
        files += write_table(out, "regime", regime, title="The regime the paper's claims presuppose: each check's "
                                                          "mean over seeds, 95 % interval and status")
    figures: list[Path] = []
    if x is None and table:
        x = next((k for k in group_keys if all(is_number(r.get(k)) for r in table)), None)
    if x and table:
        lines = [k for k in group_keys if k != x]
        shown = metrics or [m for m in _metrics(long) if len({r.get(m) for r in table}) > 1]  # constants: no curve
        for m in [m for m in _metrics(long) if m in shown][:MAX_PLOTS]:
            figures.append(_save(out / f"{_slug(m)}_vs_{_slug(x)}.png", curve_figure(table, x, m, lines)))
    for name, crows in per_curve.items():
        files += write_table(out, f"curve_{_slug(name)}", crows, title=name)
        cx = curve_x if curve_x in crows[0] else next((c for c in crows[0] if c not in ("run", *group_keys)
                                                      and all(is_number(r.get(c)) for r in crows)), None)
        if cx is None:
            continue
        ys = [c for c in crows[0] if c not in ("run", cx, *group_keys) and all(is_number(r.get(c)) for r in crows)]
        ys = [y for y in ys if y in metrics] if metrics and any(y in metrics for y in ys) else ys
        clong = [{**{k: r.get(k) for k in group_keys}, cx: r[cx], "metric": y, "value": float(r[y])}
                 for r in crows for y in ys]
        cagg = aggregate(clong, [*group_keys, cx])
        for y in ys[:MAX_PLOTS]:
            fig = curve_figure(cagg, cx, y, group_keys, title=f"{name}: {y} vs {cx}")
            figures.append(_save(out / f"curve_{_slug(name)}_{_slug(y)}.png", fig))
    summary = {"sweep": str(sweep), "out_dir": str(out), "runs": len(runs), "missing": [str(m) for m in missing],
               "swept": keys, "x": x, "tables": [str(f) for f in files], "figures": [str(f) for f in figures],
               "effects": effect_lines(effects, group_keys), "regime": regime_lines(regime, group_keys)}
    io.write_json(out / "report.json", summary)
    if wandb_mode and wandb_mode != "disabled":
        _log_wandb(out, sweep, table, figures, wandb_mode)
    return summary


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``devec-report``."""
    p = argparse.ArgumentParser(prog="devec-report", description=__doc__.splitlines()[0])
    p.add_argument("sweep", help="multirun directory (or one run), or an experiment name: its newest multirun")
    p.add_argument("--x", help="swept key on the x axis of the curves (default: the first numeric swept key)")
    p.add_argument("--metric", action="append", default=[], help="metric(s) to keep (repeat or comma-separate)")
    p.add_argument("--average", default="seed", help="keys averaged over (mean and std), comma-separated")
    p.add_argument("--rows", help="pivot table: key down the rows (a swept key or 'metric')")
    p.add_argument("--cols", help="pivot table: key across the columns (a swept key or 'metric')")
    p.add_argument("--curve-x", help="column on the x axis of curves stored inside results.json")
    p.add_argument("--out", help="output directory (default: <sweep>/report)")
    p.add_argument("--wandb-mode", default="offline", choices=["offline", "online"], help="W&B mode")
    p.add_argument("--no-wandb", action="store_true", help="do not log to W&B")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        summary = build_report(args.sweep, args.out, x=args.x, metrics=_split(args.metric),
                               average=_split([args.average]), rows=args.rows, cols=args.cols,
                               curve_x=args.curve_x, wandb_mode=None if args.no_wandb else args.wandb_mode)
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f"devec-report: {err}")
    sweep_md = Path(summary["out_dir"]) / "sweep.md"
    if str(sweep_md) in summary["tables"]:  # this report's table, never an earlier one's
        print(sweep_md.read_text())
    for line in summary["effects"]:
        print(line)
    for line in summary["regime"]:
        print(f"regime: {line}")
    print(f"{summary['runs']} runs, swept {summary['swept'] or 'nothing'}; tables and plots in {summary['out_dir']}")


def _check_setting(flag: str, key: str, runs: Sequence[Any], swept: Sequence[str]) -> None:
    """``key`` is a setting some run has (an override, a config.yaml key or a results.json key)."""
    if all(run.setting(key) is None for run in runs):
        raise ValueError(f"{flag} {key}: no run has this setting; use a swept key ({', '.join(swept) or 'none'}) "
                         f"or a dotted key of the runs' config.yaml, e.g. decomposition.tau")


def _remove_previous(out: Path) -> None:
    """Delete the files an earlier report wrote in ``out`` (its report.json lists them); nothing else is touched."""
    manifest = out / "report.json"
    if not manifest.is_file():
        return
    try:
        earlier = json.loads(manifest.read_text())
    except (OSError, ValueError):
        earlier = {}
    root = out.resolve()
    for name in [*earlier.get("tables", []), *earlier.get("figures", []), str(manifest)]:
        path = Path(name).resolve()
        if path.parent == root and path.is_file():
            path.unlink()


def _log_wandb(out: Path, sweep: Path, table: list[dict[str, Any]], figures: list[Path], mode: str) -> None:
    import os

    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    run = wandb.init(project="devec", job_type="report", name=f"report-{sweep.parent.name}-{sweep.name}",
                     group=sweep.parent.name, dir=str(out), mode=mode, reinit=True)
    if table:
        columns = list(dict.fromkeys(k for r in table for k in r))
        run.log({"sweep": wandb.Table(columns=columns, data=[[_wandb_cell(r.get(c)) for c in columns] for r in table])})
    for fig in figures:
        run.log({fig.stem: wandb.Image(str(fig))})
    run.finish()


def _wandb_cell(value: Any) -> Any:
    return value if isinstance(value, int | float | str | bool) or value is None else str(value)


def _metrics(long: Sequence[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(r["metric"] for r in long))


def _save(path: Path, fig) -> Path:
    import matplotlib.pyplot as plt

    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=130, bbox_inches="tight")
    plt.close(fig)
    return path


def _split(values: Sequence[str]) -> list[str]:
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=-]+", "_", text).strip("_")


if __name__ == "__main__":
    main()
