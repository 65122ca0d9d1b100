"""A 5-point tau sweep over a model-sized pool, with and without the SVD cache (devec.cache.BasisCache).

    python benchmarks/bench_tau_sweep.py                   # 8 task vectors x 12 layers (768x768 / 3072x768)
    python benchmarks/bench_tau_sweep.py --tasks 4 --layers 4 --threads 2

Each tau point decomposes every layer of the pool (joint mode, eqs. 6-14) as one job of a multirun would:
without the cache every point recomputes all k SVDs per layer; with it only the first point does, and the
others read the bases back (a fresh BasisCache object per point, so only the disk is shared, as between jobs).
The two ways are timed point by point, interleaved, so that a change in the machine's load hits both alike,
in wall-clock time and in this process's CPU time (the steadier figure on a shared machine; use --threads 1).
Prints the time of each point, the speed-up and a check that both ways give identical components.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

from devec.cache import BasisCache
from devec.engine import column_basis
from devec.vectors import decompose_model


def make_pool(tasks: int, layers: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """ViT-B-like task vectors: per layer a shared low-rank part, a task-specific low-rank part and dense noise."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(768, 768) if i % 2 == 0 else (3072, 768) for i in range(layers)]
    pool: list[dict[str, torch.Tensor]] = [{} for _ in range(tasks)]
    for i, (n, m) in enumerate(shapes):
        shared = torch.randn(n, 24, generator=g) / n**0.5
        for tv in pool:
            own = torch.randn(n, 24, generator=g) / n**0.5
            w = shared @ torch.randn(24, m, generator=g) + own @ torch.randn(24, m, generator=g)
            tv[f"blocks.{i}.weight"] = (w + 0.02 * torch.randn(n, m, generator=g)) * 1e-2
    return pool


def timed_point(pool, tau: float, rank: str, basis_fn):
    """(wall seconds, CPU seconds of this process, decomposition) of one sweep point."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = decompose_model(pool, mode="joint", tau=tau, rank=rank, basis_fn=basis_fn, progress=False)
    return time.perf_counter() - wall, time.process_time() - cpu, result


def same_components(a, b) -> bool:
    """Bit-identical merged shared and unique components."""
    return (a.merged_shared.keys() == b.merged_shared.keys()
            and all(torch.equal(a.merged_shared[k], b.merged_shared[k]) for k in a.merged_shared)
            and all(torch.equal(x[k], y[k]) for x, y in zip(a.unique, b.unique, strict=True) for k in x))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=8)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--taus", default="0.75,0.8,0.85,0.9,0.95")
    p.add_argument("--rank", default="energy:0.9")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--cache-dir", help="where to put the cache (default: a temporary directory, removed after)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    taus = [float(t) for t in args.taus.split(",")]
    pool = make_pool(args.tasks, args.layers)
    params = sum(v.numel() for v in pool[0].values())
    print(f"pool: {args.tasks} task vectors x {args.layers} layers ({params / 1e6:.1f}M parameters each), "
          f"rank={args.rank}, taus={taus}, torch threads={torch.get_num_threads()}", flush=True)

    root = Path(args.cache_dir) if args.cache_dir else Path(tempfile.mkdtemp(prefix="devec-bench-"))
    plain_times, cached_times, plain_cpu, cached_cpu, caches, dims, identical = [], [], [], [], [], [], True
    try:
        for tau in taus:  # interleaved, so that a change in the machine's load hits both ways alike
            t0, c0, plain = timed_point(pool, tau, args.rank, column_basis)
            caches.append(BasisCache(root))  # a fresh object per point: only the disk is shared, as between jobs
            t1, c1, cached = timed_point(pool, tau, args.rank, caches[-1].column_basis)
            plain_times.append(t0)
            cached_times.append(t1)
            plain_cpu.append(c0)
            cached_cpu.append(c1)
            identical &= same_components(plain, cached)
            shared_dims = [r["shared_dim"] for r in cached.report if "shared_dim" in r]
            dims.append(sum(shared_dims) / len(shared_dims))
            print(f"  tau={tau}: no cache {t0:.2f} s (cpu {c0:.2f}), cache {t1:.2f} s (cpu {c1:.2f})", flush=True)
        size_mb = sum(f.stat().st_size for f in root.rglob("*.safetensors")) / 2**20
    finally:
        if not args.cache_dir:
            shutil.rmtree(root, ignore_errors=True)

    print("\n| tau | no cache: wall (s) | CPU (s) | cache: wall (s) | CPU (s) | hits | misses | mean shared dim |")
    print("|---|---|---|---|---|---|---|---|")
    for i, tau in enumerate(taus):
        print(f"| {tau} | {plain_times[i]:.2f} | {plain_cpu[i]:.2f} | {cached_times[i]:.2f} | {cached_cpu[i]:.2f} "
              f"| {caches[i].hits} | {caches[i].misses} | {dims[i]:.1f} |")
    for label, a, b in (("wall", plain_times, cached_times), ("CPU", plain_cpu, cached_cpu)):
        print(f"\n{len(taus)}-point tau sweep, {label} time: {sum(a):.1f} s without cache, {sum(b):.1f} s with cache "
              f"(first point {b[0]:.1f} s, then {sum(b[1:]) / max(1, len(taus) - 1):.2f} s a point): "
              f"speed-up x{sum(a) / sum(b):.2f}")
    print(f"cache on disk {size_mb:.0f} MiB; identical components: {identical}")

if __name__ == "__main__":
    main()
