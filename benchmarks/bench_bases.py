"""Column-basis benchmark: the Gram route before (one float64 copy of W) and after (float64 blocks, lower triangle).

    python benchmarks/bench_bases.py                   # the issue's size: 11008 x 4096, float32 and bf16, best of 2
    python benchmarks/bench_bases.py --rounds 3 --shapes 11008x4096,4096x11008
    python benchmarks/bench_bases.py --quick           # small, for a smoke run

Every measurement runs in a fresh subprocess that builds the same task-like matrix (a planted decaying low-rank part
plus noise, built in blocks so that building it leaves no high-water mark), resets the peak resident set
(/proc/self/clear_refs; getrusage's max RSS where that is refused), computes one basis and reports its time and its
peak extra memory (peak RSS during the basis minus RSS before it). Variants are interleaved, in alternating order
round by round, and the best time of the rounds is kept, so the before/after ratios come from one run on one
machine state. Prints a markdown table and writes outputs/benchmarks/bases.json.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from devec import column_basis, principal_angles
from devec.engine.basis import GRAM_MIN_RTOL, ColumnBasis, _finite_energy, _gram_lower, as_task_vector, svd_route
from devec.engine.rank import parse_rank, zero_rtol

VARIANTS = ("before", "after")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
RANK = "energy:0.9"  # the configured default (conf/decomposition/joint.yaml)
PLANTED = 256  # planted directions, singular values decaying from 1 to 0.01
NOISE = 0.02  # dense noise, relative to the planted part's largest singular value


def task_like(n: int, m: int, dtype: torch.dtype, seed: int = 0, block: int = 512) -> torch.Tensor:
    """A planted-rank n x m matrix in ``dtype``, built a block of rows at a time (no full-size temporary)."""
    gen = torch.Generator().manual_seed(seed)
    left = torch.randn(n, PLANTED, generator=gen) / n**0.5
    right = torch.logspace(0, -2, PLANTED)[:, None] * torch.randn(PLANTED, m, generator=gen) / m**0.5
    out = torch.empty(n, m, dtype=dtype)
    for i in range(0, n, block):
        rows = left[i: i + block] @ right
        rows += (NOISE / (n + m) ** 0.5) * torch.randn(rows.shape, generator=gen)
        out[i: i + block] = rows.to(dtype)
    return out


def basis_before(vector: torch.Tensor, rank: str) -> ColumnBasis:
    """The Gram route as it was before issue 15 (kept here as the reference): validate, one float64 copy of W,
    the full product W W^T or W^T W, eigh, and u = W v / sigma from the float64 copy."""
    rule = parse_rank(rank)
    vector = as_task_vector(vector)
    rtol = zero_rtol(vector.dtype, tuple(vector.shape))
    w = vector.detach().to(torch.float64)
    n, m = w.shape
    gram = w @ w.T if n <= m else w.T @ w
    total = _finite_energy(float(gram.diagonal().sum()))
    evals, evecs = torch.linalg.eigh(gram)
    s = evals.flip(0).clamp_min(0).sqrt()
    evecs = evecs.flip(1)
    r = rule.select(s, (n, m), total_energy=total, rtol=max(rtol, GRAM_MIN_RTOL))
    if n <= m:
        u = evecs[:, :r]
    else:
        u, _ = torch.linalg.qr(w @ (evecs[:, :r] / s[:r]))
    return ColumnBasis(u.contiguous(), s, total)


def basis_after(vector: torch.Tensor, rank: str) -> ColumnBasis:
    """The engine's route today (svd=auto, which takes the Gram route for float32/bf16 at this rank rule)."""
    assert svd_route(tuple(vector.shape), parse_rank(rank), "auto", vector.dtype) == "gram"
    return column_basis(vector, rank, svd="auto")


def gram_stage(variant: str, w: torch.Tensor) -> float:
    """Seconds for the Gram matrix alone, the only stage the change touches (eigh, the larger cost, is the same)."""
    start = time.perf_counter()
    if variant == "before":
        d = w.to(torch.float64)
        _ = d @ d.T if d.shape[0] <= d.shape[1] else d.T @ d
    else:
        _ = _gram_lower(w if w.shape[0] <= w.shape[1] else w.T)
    return time.perf_counter() - start


def _memory() -> tuple[int, int]:
    """(current RSS, peak RSS) of this process in bytes, from /proc (Linux), else getrusage's peak for both."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return peak, peak
    rss, hwm = (int(re.search(rf"{key}:\s+(\d+)", status).group(1)) * 1024 for key in ("VmRSS", "VmHWM"))
    return rss, hwm


def _reset_peak() -> bool:
    """Reset the peak RSS to the current RSS (Linux >= 4.0); False where refused (the peak is then lifetime)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def child(variant: str, dtype: str, n: int, m: int, rank: str, out: str) -> None:
    """One measurement in this (fresh) process: print a JSON line, save the spectrum and the basis to ``out``."""
    torch.linalg.eigh(torch.eye(2, dtype=torch.float64))  # LAPACK and thread pools loaded before the baseline
    w = task_like(n, m, DTYPES[dtype])
    fn = basis_before if variant == "before" else basis_after
    reset = _reset_peak()
    rss_before, hwm_before = _memory()
    start = time.perf_counter()
    result = fn(w, rank)
    elapsed = time.perf_counter() - start
    _, hwm_after = _memory()
    torch.save({"U": result.U, "s": result.singular_values, "total": result.total_energy}, out)
    del result
    gram_s = gram_stage(variant, w)
    print(json.dumps({"variant": variant, "dtype": dtype, "n": n, "m": m, "seconds": elapsed, "gram_seconds": gram_s,
                      "rank": torch.load(out)["U"].shape[1],
                      "extra_peak_bytes": hwm_after - rss_before, "baseline_slack_bytes": hwm_before - rss_before,
                      "peak_reset": reset, "input_bytes": w.numel() * w.element_size()}))


def measure(variant: str, dtype: str, shape: tuple[int, int], rank: str, out: Path) -> dict:
    """Run :func:`child` in a fresh interpreter and return its report."""
    cmd = [sys.executable, __file__, "--child", variant, dtype, str(shape[0]), str(shape[1]), rank, str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{variant} {dtype} {shape} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(before: Path, after: Path) -> dict:
    """Agreement of the two results: rank, largest principal angle, spectrum and energy differences."""
    b, a = torch.load(before), torch.load(after)
    s1 = float(b["s"][0]) ** 2
    kept = b["U"].shape[1]
    rel = (a["s"][:kept] - b["s"][:kept]).abs() / b["s"][:kept]
    return {"rank_before": kept, "rank_after": a["U"].shape[1],
            "max_angle_rad": float(principal_angles(a["U"], b["U"]).max()) if kept == a["U"].shape[1] else math.inf,
            "max_eigenvalue_diff_rel_to_top": float((a["s"].square() - b["s"].square()).abs().max()) / s1,
            "max_kept_sigma_rel_diff": float(rel.max()),
            "total_energy_rel_diff": abs(a["total"] - b["total"]) / b["total"]}


def run(shapes: list[tuple[int, int]], dtypes: list[str], rounds: int, rank: str) -> list[dict]:
    """Every (shape, dtype, variant) once per round, the order reversed every other round; best time per cell."""
    cells = [(shape, dtype, variant) for shape in shapes for dtype in dtypes for variant in VARIANTS]
    runs: dict[tuple, list[dict]] = {cell: [] for cell in cells}
    with tempfile.TemporaryDirectory() as tmp:
        files = {cell: Path(tmp) / f"{cell[0][0]}x{cell[0][1]}-{cell[1]}-{cell[2]}.pt" for cell in cells}
        for r in range(rounds):
            for cell in (cells if r % 2 == 0 else cells[::-1]):
                runs[cell].append(measure(cell[2], cell[1], cell[0], rank, files[cell]))
        rows = []
        for shape in shapes:
            for dtype in dtypes:
                before, after = (runs[(shape, dtype, v)] for v in VARIANTS)
                row = {"n": shape[0], "m": shape[1], "dtype": dtype, "rank_rule": rank, "rounds": rounds,
                       "input_bytes": before[0]["input_bytes"],
                       "before_s": min(x["seconds"] for x in before), "after_s": min(x["seconds"] for x in after),
                       "before_extra_peak_bytes": max(x["extra_peak_bytes"] for x in before),
                       "after_extra_peak_bytes": max(x["extra_peak_bytes"] for x in after),
                       "peak_reset": all(x["peak_reset"] for x in before + after),
                       "all_runs": before + after}
                row["time_ratio"] = row["after_s"] / row["before_s"]
                row["before_gram_s"] = min(x["gram_seconds"] for x in before)
                row["after_gram_s"] = min(x["gram_seconds"] for x in after)
                row["gram_time_ratio"] = row["after_gram_s"] / row["before_gram_s"]
                row["memory_ratio"] = row["after_extra_peak_bytes"] / max(row["before_extra_peak_bytes"], 1)
                row.update(compare(files[(shape, dtype, "before")], files[(shape, dtype, "after")]))
                rows.append(row)
    return rows


def report(rows: list[dict]) -> None:
    """The markdown table of :func:`run`'s rows."""
    mib = 2**20
    print("Gram-route column basis, before (float64 copy of W) vs after (float64 blocks), fresh process per run,")
    print("interleaved; time = best of rounds, extra peak = peak RSS during the basis minus RSS before it (max):")
    print("| shape | dtype | rank | before s | after s | time after/before | before extra MiB | after extra MiB | "
          "memory after/before | Gram stage s (before / after) | Gram after/before | max angle (rad) | "
          "max d(sigma^2) / sigma_1^2 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['n']} x {r['m']} | {r['dtype']} | {r['rank_after']} | {r['before_s']:.2f} | {r['after_s']:.2f} | "
              f"{r['time_ratio']:.2f} | {r['before_extra_peak_bytes'] / mib:.0f} | "
              f"{r['after_extra_peak_bytes'] / mib:.0f} | {r['memory_ratio']:.2f} | {r['before_gram_s']:.2f} / "
              f"{r['after_gram_s']:.2f} | {r['gram_time_ratio']:.2f} | {r['max_angle_rad']:.1e} | "
              f"{r['max_eigenvalue_diff_rel_to_top']:.1e} |")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        variant, dtype, n, m, rank, out = sys.argv[2:8]
        child(variant, dtype, int(n), int(m), rank, out)
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, one round, for a smoke run")
    parser.add_argument("--shapes", default=None, help="comma-separated NxM (default 11008x4096; --quick 1100x400)")
    parser.add_argument("--dtypes", default="float32,bfloat16", help=f"comma-separated, of {', '.join(DTYPES)}")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per variant (default 2; --quick 1)")
    parser.add_argument("--rank", default=RANK, help="rank rule")
    parser.add_argument("--out", default="outputs/benchmarks/bases.json")
    args = parser.parse_args()
    shapes = [tuple(int(x) for x in s.split("x")) for s in (args.shapes or ("1100x400" if args.quick else
                                                                             "11008x4096")).split(",")]
    dtypes = args.dtypes.split(",")
    unknown = [d for d in dtypes if d not in DTYPES]
    if unknown:
        parser.error(f"--dtypes: unknown {unknown}; use {', '.join(DTYPES)}")
    rows = run(shapes, dtypes, args.rounds or (1 if args.quick else 2), args.rank)
    report(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"threads": torch.get_num_threads(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
