"""Gather the runs of a sweep: each job's results.json, resolved config.yaml and Hydra overrides, as long-form rows."""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

NOT_METRICS = ("seed", "seconds")
"""results.json keys that describe a run rather than measure it."""
EFFECTS_KEY = "effects"
"""results.json key of DeVec's per-run effect records (devec.report.effects): a table of their own, not a curve."""
REGIME_KEY = "regime"
"""results.json key of a run's regime checks (devec.report.regime): a table of their own, not a curve."""


@dataclass
class RunRecord:
    """One finished job: where it ran, what it was told (overrides), its full config and its results."""

    path: Path
    overrides: dict[str, Any]
    config: dict[str, Any]
    results: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)

    def setting(self, key: str) -> Any:
        """A swept value: from the overrides, else the resolved config (dotted key), else the results."""
        if key in self.overrides:
            return self.overrides[key]
        for source in (self.config, self.results):
            value = lookup(source, key)
            if value is not None:
                return value
        return None


def find_sweep(target: str | os.PathLike, outputs: str | os.PathLike | None = None) -> Path:
    """The directory of a sweep: ``target`` itself, or the newest multirun of the experiment named ``target``."""
    path = Path(target)
    if path.exists():
        return path
    root = Path(outputs or os.environ.get("DEVEC_OUTPUTS", "outputs")) / "multirun" / str(target)
    sweeps = sorted(p for p in root.glob("*") if p.is_dir()) if root.is_dir() else []
    if not sweeps:
        raise FileNotFoundError(f"{target!r} is neither a directory nor an experiment with a multirun under {root}; "
                                f"pass the sweep directory printed by 'devec -m ...' (or set DEVEC_OUTPUTS)")
    return sweeps[-1]


def collect_runs(root: str | os.PathLike, skip: Iterable[str | os.PathLike] = ()) -> tuple[list[RunRecord], list[Path]]:
    """Every job under ``root`` with a results.json, and the job directories without one (failed or unfinished)."""
    root = Path(root)
    skip = [Path(s).resolve() for s in skip]
    runs, missing = [], []
    job_dirs = {p.parent.parent for p in root.rglob(".hydra/overrides.yaml")}
    job_dirs |= {p.parent for p in root.rglob("results.json")}
    for job in sorted(job_dirs, key=_natural):
        if any(s == job.resolve() or s in job.resolve().parents for s in skip):
            continue
        results = job / "results.json"
        if not results.is_file():
            missing.append(job)
            continue
        runs.append(RunRecord(job, _overrides(job), _config(job), json.loads(results.read_text())))
    if not runs:
        raise FileNotFoundError(f"no results.json under {root}: is it the directory of a finished 'devec -m' sweep?")
    return runs, missing


def swept_keys(runs: Sequence[RunRecord]) -> list[str]:
    """Override keys (and the experiment) whose value differs between runs, in the order they were given."""
    keys: dict[str, None] = {}
    for run in runs:
        keys.update(dict.fromkeys(run.overrides))
    varying = [k for k in keys if len({_hashable(r.setting(k)) for r in runs}) > 1]
    if "experiment" not in keys and len({r.results.get("experiment") for r in runs}) > 1:
        varying.insert(0, "experiment")
    return varying


def scalar_metrics(results: Mapping[str, Any]) -> dict[str, float]:
    """Numeric leaves of results.json as ``{'a/b': value}`` (booleans, strings, lists and run info left out)."""
    return {k: float(v) for k, v in flatten(results).items()
            if isinstance(v, int | float) and not isinstance(v, bool) and k not in NOT_METRICS}


def curves(results: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Lists of row dicts in results.json (e.g. a coefficient sweep inside one run), by their dotted key."""
    out = {}
    for key, value in flatten(results, keep_lists=True).items():
        if key in (EFFECTS_KEY, REGIME_KEY):
            continue
        if isinstance(value, list) and value and all(isinstance(row, Mapping) for row in value):
            out[key] = [dict(flatten(row)) for row in value]
    return out


def long_rows(runs: Sequence[RunRecord], keys: Sequence[str]) -> list[dict[str, Any]]:
    """One row per (run, scalar metric): run, the swept settings, seed, metric, value."""
    rows = []
    for run in runs:
        base = {"run": run.path.name, **{k: run.setting(k) for k in keys}, "seed": run.results.get("seed")}
        rows += [{**base, "metric": m, "value": v} for m, v in scalar_metrics(run.results).items()]
    return rows


def curve_rows(runs: Sequence[RunRecord], keys: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """Per curve name, the rows of every run's curve with the run's swept settings in front."""
    out: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        base = {"run": run.path.name, **{k: run.setting(k) for k in keys}}
        for name, rows in curves(run.results).items():
            out.setdefault(name, []).extend({**base, **row} for row in rows)
    return out


def flatten(d: Mapping[str, Any], prefix: str = "", keep_lists: bool = False) -> dict[str, Any]:
    """Nested dicts as one level with '/'-joined keys."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "/", keep_lists))
        elif keep_lists or not isinstance(v, list):
            out[key] = v
    return out


def lookup(d: Mapping[str, Any], dotted: str) -> Any:
    """``d['a']['b']`` for 'a.b' (or the key itself when it contains the dot), None when absent."""
    if dotted in d:
        return d[dotted]
    node: Any = d
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _overrides(job: Path) -> dict[str, Any]:
    path = job / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return {}
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(yaml.safe_load(path.read_text()) or [])
    return {o.get_key_element().lstrip("+~"): _plain(o.value()) for o in parsed}


def _config(job: Path) -> dict[str, Any]:
    for path in (job / "config.yaml", job / ".hydra" / "config.yaml"):
        if path.is_file():
            return yaml.safe_load(path.read_text()) or {}
    return {}


def _plain(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return str(list(value))
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return value


def _hashable(value: Any) -> Any:
    return json.dumps(value, sort_keys=True, default=str)


def _natural(path: Path) -> tuple:
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in path.parts)


def run_records(run: RunRecord, key: str, derive: Mapping[str, str], from_results: bool = False
                ) -> tuple[list[Any], bool]:
    """The records a run's results.json holds under ``key``; for a run written before its runner recorded them, those
    ``derive[runner._target_]`` (``module:function``) computes from the results' ``rows`` (or, ``from_results``, from
    the whole results), the very numbers the runner uses. Also whether they were computed; ``([], False)`` when the
    run has neither."""
    records = run.results.get(key)
    if records is not None:
        return list(records), False
    source = derive.get(str(lookup(run.config, "runner._target_")))
    rows = run.results.get("rows")
    if source is None or not isinstance(rows, list):
        return [], False
    module, _, name = source.partition(":")
    function = getattr(importlib.import_module(module), name)
    return list(function(run.results if from_results else rows)), True


def group_records(runs: Sequence[RunRecord], keys: Sequence[str], records_of: Callable[[RunRecord], Iterable[Any]],
                  fields: Sequence[str], what: str = "record") -> list[tuple[dict[str, Any], list[Any], list[Any]]]:
    """The records of ``runs`` (``records_of(run)``, one list per run) grouped by the run's setting of ``keys`` and
    the records' ``fields``, in first-seen order: (setting, seeds, records) per group, one seed per record. A group
    with two runs of the same seed is logged (each still counts)."""
    groups: dict[tuple, tuple[dict[str, Any], list[Any], list[Any]]] = {}
    for run in runs:
        setting = {k: run.setting(k) for k in keys}
        for record in records_of(run):
            key = (*(str(v) for v in setting.values()), *(str(record[f]) for f in fields))
            group = groups.setdefault(key, (setting, [], []))
            group[1].append(run.results.get("seed"))
            group[2].append(record)
    for key, (_, seeds, _) in groups.items():
        if len(set(map(str, seeds))) < len(seeds):
            log.warning("%s %s: several runs of the same seed in one setting (seeds %s); each counts once", what,
                        key[len(keys):], seeds)
    return list(groups.values())
