"""Compare the numbers of two runs' results.json: is a change behaviour-neutral?

    python -m devec.report.compare OLD/results.json NEW/results.json          # exit 1 when a number differs
    python -m devec.report.compare OLD/results.json NEW/results.json --rtol 1e-6

Every number under the result keys both files hold (rows, curves, tables, ...) is compared by its path; run
bookkeeping (``seconds``, ``experiment``, ``seed``) is left out.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BOOKKEEPING = ("seconds", "experiment", "seed")


def numbers(obj: Any, prefix: str = "") -> dict[str, float]:
    """Every number in a JSON value, keyed by its path (``rows[3]/avg``)."""
    if isinstance(obj, dict):
        return {k: v for key, value in obj.items() for k, v in numbers(value, f"{prefix}/{key}").items()}
    if isinstance(obj, list):
        return {k: v for i, value in enumerate(obj) for k, v in numbers(value, f"{prefix}[{i}]").items()}
    if isinstance(obj, int | float) and not isinstance(obj, bool):
        return {prefix: float(obj)}
    return {}


def compare(old: dict[str, Any], new: dict[str, Any], rtol: float = 0.0) -> dict[str, Any]:
    """Numbers compared, those only in one file, and those that differ by more than ``rtol``."""
    keys = [k for k in old if k in new and k not in BOOKKEEPING]
    a, b = numbers({k: old[k] for k in keys}), numbers({k: new[k] for k in keys})
    common = sorted(set(a) & set(b))
    same = lambda x, y: x == y or (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, rel_tol=rtol)  # noqa: E731
    differ = {k: (a[k], b[k]) for k in common if not same(a[k], b[k])}
    return {"compared": len(common), "only_old": sorted(set(a) - set(b)), "only_new": sorted(set(b) - set(a)),
            "differ": differ}


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m devec.report.compare", description=__doc__.splitlines()[0])
    p.add_argument("old", type=Path)
    p.add_argument("new", type=Path)
    p.add_argument("--rtol", type=float, default=0.0, help="relative tolerance (default 0: identical)")
    args = p.parse_args(argv)
    out = compare(json.loads(args.old.read_text()), json.loads(args.new.read_text()), args.rtol)
    print(f"{out['compared']} numbers compared, {len(out['differ'])} differ; "
          f"{len(out['only_old'])} only in {args.old}, {len(out['only_new'])} only in {args.new}")
    for key, (a, b) in list(out["differ"].items())[:20]:
        print(f"  {key}: {a!r} -> {b!r}")
    sys.exit(1 if out["differ"] else 0)


if __name__ == "__main__":
    main()
