"""AdaMerging layer-wise on the embedded default: functional merge vs a deep copy of the encoder per step.

Each variant runs in its own process so the peak resident memory (ru_maxrss) it adds over the loaded pool is its
own. Models and data come from the cache of ``devec experiment=table1_multitask`` (built on first use).

    python benchmarks/bench_adamerging.py --steps 30
    python benchmarks/bench_adamerging.py --steps 3 --arch ViT-B-32 --tasks 8 --batch 2   # the real architecture
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def measure_arch(variant: str, steps: int, arch: str, k: int, batch_size: int) -> dict:
    """The same loop on a registered open_clip architecture (random weights, random small task vectors)."""
    import torch

    from devec.vision.adamerging import MergedParams, adamerge
    from devec.vision.clip import build_clip
    from devec.vision.data import ImageSet, Task

    torch.manual_seed(0)
    model = build_clip(arch).eval().requires_grad_(False)
    pre = {n: p.detach() for n, p in model.visual.named_parameters()}
    vectors = [{n: 1e-3 * torch.randn_like(p) for n, p in pre.items()} for _ in range(k)]
    size = model.visual.image_size[0]
    data = ImageSet(torch.randint(0, 255, (4 * batch_size, 3, size, size), dtype=torch.uint8),
                    torch.zeros(4 * batch_size, dtype=torch.long))
    tasks = {f"t{i}": Task(f"t{i}", ["a", "b"], ["{c}"], data, data, data) for i in range(k)}
    dim = model.text_projection.shape[1]
    heads = {n: torch.nn.functional.normalize(torch.randn(dim, 10), dim=0) for n in tasks}
    merged = MergedParams(pre, vectors, [0.3] * k, "layer")
    naive = variant == "naive"
    adamerge(model.visual, heads, tasks, merged, 1, 1e-3, batch_size, [0, 1], naive=naive)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    adamerge(model.visual, heads, tasks, merged, steps, 1e-3, batch_size, [0, 1], naive=naive)
    seconds = (time.perf_counter() - start) / steps
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"variant": variant, "devec": False, "vectors": k, "encoder_params": sum(v.numel() for v in pre.values()),
            "ms_per_step": round(1000 * seconds, 2), "peak_rss_added_mib": round((after - before) / 1024, 1),
            "peak_rss_mib": round(after / 1024, 1)}


def measure(variant: str, steps: int, devec: bool, threads: int, overrides: list[str], arch: str | None = None,
            k: int = 2, batch_size: int = 2) -> dict:
    import torch
    from hydra import compose, initialize_config_dir

    from devec.cli import CONFIG_DIR
    from devec.vision.adamerging import MergedParams, adamerge
    from devec.vision.data import load_tasks
    from devec.vision.pool import load_pool
    from devec.vision.runner import pairwise_shared

    torch.set_num_threads(threads)
    if arch:
        return measure_arch(variant, steps, arch, k, batch_size)
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["experiment=table1_multitask", f"paths.root_dir={ROOT}",
                                           "name=bench", *overrides])
    names = list(cfg.vision.tasks)
    tasks = load_tasks(cfg.data, names, Path(cfg.paths.cache_dir))
    pool = load_pool(cfg.pool, cfg.data, tasks, names, Path(cfg.paths.cache_dir))
    vectors = pool.task_vectors(names)
    extra = pairwise_shared(vectors, cfg.decomposition) if devec else []
    merged = MergedParams(pool.pretrained, vectors + extra, [0.3] * len(vectors) + [0.0] * len(extra), "layer")
    adamerge(pool.model.visual, pool.heads, tasks, merged, 2, 1e-3, 16, [0, 1], naive=variant == "naive")  # warm-up
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    adamerge(pool.model.visual, pool.heads, tasks, merged, steps, 1e-3, 16, [0, 1], naive=variant == "naive")
    seconds = (time.perf_counter() - start) / steps
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    params = sum(v.numel() for v in pool.pretrained.values())
    return {"variant": variant, "devec": devec, "vectors": len(vectors) + len(extra), "encoder_params": params,
            "ms_per_step": round(1000 * seconds, 2), "peak_rss_added_mib": round((after - before) / 1024, 1),
            "peak_rss_mib": round(after / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variant", choices=["functional", "naive"], default=None, help=argparse.SUPPRESS)
    parser.add_argument("--devec", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--arch", default=None, help="an open_clip architecture with random weights (ViT-B-32)")
    parser.add_argument("--tasks", type=int, default=2, help="with --arch: number of task vectors")
    parser.add_argument("--batch", type=int, default=2, help="with --arch: images per task and step")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. pool=vision/tiny data=vision/tiny")
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(measure(args.variant, args.steps, args.devec, args.threads, args.overrides, args.arch,
                                 args.tasks, args.batch)))
        return
    rows = []
    for devec in ((False,) if args.arch else (False, True)):
        for variant in ("functional", "naive"):
            arch = ["--arch", args.arch, "--tasks", str(args.tasks), "--batch", str(args.batch)] if args.arch else []
            cmd = [sys.executable, __file__, "--variant", variant, "--steps", str(args.steps),
                   "--threads", str(args.threads), *(["--devec"] if devec else []), *arch, *args.overrides]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            rows.append(json.loads(out))
            print(rows[-1], flush=True)
    print("\n| variant | +DeVec | vectors | ms / step | peak RSS added (MiB) |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['devec']} | {r['vectors']} | {r['ms_per_step']} | {r['peak_rss_added_mib']} |")


if __name__ == "__main__":
    main()
