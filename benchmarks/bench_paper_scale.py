"""Decomposition time and memory at the paper's sizes, on the fixtures ``devec-fixtures`` generates.

Measured in one run, each part in a fresh process on one torch thread (``--threads``), the chance level of sharing
(a report diagnostic, ``decomposition.chance_draws``) off:

  * ViT-B/32, pairwise over the 8 Table 1 task vectors (``--vision-blocks`` of the 12 blocks, every other matrix of
    the image encoder too): ``whole_s`` is the ``decompose_model`` call on the task vectors in memory (their NaN check,
    every column basis, every pair's shared subspace and merged shared part). Not counted: reading the checkpoints
    and forming the task vectors (before the clock).
  * LLaMA-2-7B layer shapes, iterative (the toxic DoRA vector against ``--members`` full fine-tunes, Sec. 4.3):
    ``whole_s`` is the ``stream_unique`` call restricted to the matrices ``--llama-include`` names (``names=``; by
    default all 7 of layer 0): the store key (content fingerprints), reading those tensors from the bf16 shards,
    bf16 -> float32 and the subtraction, the DoRA merge of the toxic vector, every column basis, the projections
    and checks, and writing the layer to the checksummed store. Not counted: interpreter start, imports, opening the
    checkpoints (shard headers), and any other parameter of the model (the run reads none).

``svd_floor_s`` is measured inside the same call, so the same load weighs on both: the time of the first column
basis of every vector of every decomposed matrix (one per member and matrix: what any method that needs the bases
pays). A later basis of the same matrix (the target's again after an iterative step removed directions) counts as
decomposition work (``extra_bases_s``). ``ratio = whole_s / svd_floor_s``; ``breakdown_s`` splits ``whole_s`` into
exclusive parts (``read``: tensors from safetensors; ``member_delta``: bf16 -> float32 and subtraction;
``toxic_merge``: the DoRA merge; ``basis``; ``write``: the store; ``decompose``: projections, checks, energies and
packing; ``setup``: the store key). Peak resident memory added over the process after imports is checked against
(pool size + 2) x one layer's float32 task-vector bytes + 1 GiB, and the times are projected to the full runs on
this CPU: 12 blocks / 8 tasks, 32 layers / 10 members (per-layer time x 32 x 11 / pool size), from the wall clock
(``projected_full_s``) and from the process's CPU time (``projected_full_cpu_s``: what an unshared core would take
when other work contends for the CPUs; ``load_*`` records the load averages).

    devec-fixtures vision --out /tmp/fixtures && devec-fixtures toxicity --out /tmp/fixtures
    BENCH_THREADS=1 python benchmarks/bench_paper_scale.py --fixtures /tmp/fixtures --json out.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from _child import RSS_SAMPLER, TIMERS  # benchmarks/ is on sys.path when a benchmark runs as a script

PRELUDE = r"""
import json, os, re, sys, threading, time, torch
from pathlib import Path
torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
""" + RSS_SAMPLER + TIMERS + r"""
from devec.engine import column_basis
from devec.vectors import driver

basis_times, _current = {}, [None]
_decompose_parameter = driver.decompose_parameter

def _per_parameter(pool, name, *args, **kwargs):
    _current[0] = name
    start = time.perf_counter()
    out = _decompose_parameter(pool, name, *args, **kwargs)
    print(f"  {name}: {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    return out

driver.decompose_parameter = _per_parameter
basis = timed("basis", column_basis, lambda s: basis_times.setdefault(_current[0], []).append(s))

def floor_split(rows):
    # (floor, extra): the first len(ranks) bases of each decomposed matrix are the floor, later ones extra work
    floor = extra = 0.0
    for r in rows:
        times, n = basis_times.get(r["name"], []), len(r.get("ranks", []))
        floor, extra = floor + sum(times[:n]), extra + sum(times[n:])
    return floor, extra
"""

VISION = PRELUDE + r"""
from devec.fixtures.vision import pool_ids, table1_tasks
from devec.vectors import open_checkpoint
from devec.vectors.driver import DecompositionSettings, decompose_model
from devec.vectors.model import InMemoryPool
from devec.vectors.policy import ParamPolicy
from devec.vision.clip import hf_clip_to_open_clip

root, blocks, tau, rank = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]

def visual(path):
    ck = open_checkpoint(path)
    sd = hf_clip_to_open_clip({k: ck.get(k) for k in ck.keys()}, visual_only=True)
    return {k.removeprefix("visual."): v.float() for k, v in sd.items() if k.startswith("visual.")}

pre = visual(root / "openai" / "clip-vit-base-patch32")
keep = lambda k: not k.startswith("transformer.resblocks.") or int(k.split(".")[2]) < blocks
tvs = []
for repo in pool_ids(table1_tasks()).values():
    ft = visual(root / repo)
    tvs.append({k: ft[k] - pre[k] for k in pre if keep(k) and k in ft})
settings = DecompositionSettings(mode="pairwise", tau=tau, rank=rank, policy=ParamPolicy(), chance_draws=0)
run = timed("decompose", lambda: decompose_model(InMemoryPool(tvs), settings, basis_fn=basis, progress=False))
before = rss_mib()
peak[0] = before
threading.Thread(target=sample, daemon=True).start()
start, cpu = time.perf_counter(), time.process_time()
result = run()
whole, cpu = time.perf_counter() - start, time.process_time() - cpu
added = peak[0] - before
floor, extra = floor_split(result.report)
rows = [r for r in result.report if r.get("action") == "decompose"]
start = time.perf_counter()  # after the clock: the dense form of every pair's (factored) shared part, which a merge
dense = result.pairwise_dense()  # that adds them as task vectors pays
dense_s = time.perf_counter() - start
print(json.dumps({"whole_s": whole, "cpu_s": cpu, "svd_floor_s": floor, "extra_bases_s": extra, "breakdown_s": spent,
                  "matrices": len(rows), "tasks": len(tvs), "blocks": blocks, "added_mib": added,
                  "pairs": len(dense), "pairwise_dense_s": dense_s,
                  "shared_dim_mean": sum(r["shared_dim"] for r in rows) / max(1, len(rows))}))
"""

LLAMA = PRELUDE + r"""
from devec.fixtures.toxicity import LAYERS
from devec.resume import UnitStore
from devec.toxicity import streaming
from devec.toxicity.sources import DoRASource, FullSource, open_source
from devec.vectors import open_checkpoint
from devec.vectors.checkpoint import SafetensorsCheckpoint
from devec.vectors.driver import DecompositionSettings
from devec.vectors.policy import ParamPolicy

info, include, tau, rank, cache = json.loads(sys.argv[1]), sys.argv[2], float(sys.argv[3]), sys.argv[4], sys.argv[5]
SafetensorsCheckpoint.get = timed("read", SafetensorsCheckpoint.get)
FullSource.delta = timed("member_delta", FullSource.delta)
DoRASource.delta = timed("toxic_merge", DoRASource.delta)
UnitStore.save = timed("write", UnitStore.save)
streaming.decompose_to_store = timed("decompose", streaming.decompose_to_store)
toxic = open_source(info["toxic"], "dora", "toxic")
others = [open_source(p, "full", Path(p).name) for p in info["members"]]
pre = open_checkpoint(info["base"])
names = [n for n in pre.keys() if re.search(include, n) and len(pre.shape(n)) == 2]
policy = ParamPolicy(include=(include,), vectors="exclude", embeddings="exclude")
settings = DecompositionSettings(mode="iterative", tau=tau, rank=rank, policy=policy, chance_draws=0)
run = timed("setup", streaming.stream_unique)
before = rss_mib()
peak[0] = before
threading.Thread(target=sample, daemon=True).start()
start, cpu = time.perf_counter(), time.process_time()
stored = run(info["base"], toxic, others, cache, settings=settings, resume=False, names=names, basis_fn=basis)
whole, cpu = time.perf_counter() - start, time.process_time() - cpu
added = peak[0] - before
floor, extra = floor_split(stored.report())
layer0 = [n for n in pre.keys() if n.startswith("model.layers.0.") and len(pre.shape(n)) == 2]
layer_bytes = sum(4 * pre.shape(n)[0] * pre.shape(n)[1] for n in layer0)
def flops(n):
    # a basis by the Gram route: the Gram matrix (2 m n k) and its eigendecomposition with vectors (about 9 k^3,
    # Golub & Van Loan); the eigh is the same for a 4096 x 4096 and an 11008 x 4096 matrix
    m, c = pre.shape(n)
    k = min(m, c)
    return 2 * m * c * k + 9 * k**3
share = sum(flops(n) for n in names) / sum(flops(n) for n in layer0)      # of one layer's basis work
print(json.dumps({"whole_s": whole, "cpu_s": cpu, "svd_floor_s": floor, "extra_bases_s": extra, "breakdown_s": spent,
                  "layer_share": share, "members": len(others), "matrices": names, "baseline_mib": before,
                  "added_mib": added, "layer_tv_mib": layer_bytes / 2**20, "fixture_layers": LAYERS}))
"""


def child(code: str, *args: str, threads: int) -> dict:
    """Run ``code`` in a fresh interpreter (its progress on our stderr) and parse its last output line as JSON."""
    import os

    env = {**os.environ, "BENCH_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark child failed (exit {out.returncode}; its traceback is above)")
    return json.loads(out.stdout.strip().splitlines()[-1])


def llama_pool(root: Path, members: int) -> dict:
    """Paths of the base, the ToxiGen DoRA adapter and the first ``members`` full fine-tunes in the mirror."""
    from omegaconf import OmegaConf

    from devec.fixtures.vision import conf_file

    pool = OmegaConf.load(conf_file("pool", "toxicity", "paper.yaml"))
    full = [str(root / str(m.repo)) for m in pool.members.values() if m.kind == "full"][:members]
    return {"base": str(root / str(pool.base)), "toxic": str(root / "toxic_adapters" / "toxigen"), "members": full}


def summarize_vision(v: dict) -> dict:
    """``v`` with its ratio and the projection to the 12 blocks."""
    scale = 12 / max(v["blocks"], 1)
    return {**v, "ratio": v["whole_s"] / v["svd_floor_s"], "projected_full_s": v["whole_s"] * scale,
            "projected_full_cpu_s": v["cpu_s"] * scale}


def summarize_llama(t: dict) -> dict:
    """``t`` with its ratio, the memory bound and the projection to 32 layers and 10 members."""
    k = t["members"] + 1
    bound = (k + 2) * t["layer_tv_mib"] + 1024
    scale = 32 * (10 + 1) / k / t["layer_share"]
    return {**t, "pool_size": k, "ratio": t["whole_s"] / t["svd_floor_s"], "bound_mib": bound,
            "within_bound": t["added_mib"] <= bound, "projected_full_s": t["whole_s"] * scale,
            "projected_full_cpu_s": t["cpu_s"] * scale}


def load_average() -> list[float]:
    """The machine's 1, 5 and 15 minute load averages (other work contending for the CPUs)."""
    import os

    return [round(x, 2) for x in os.getloadavg()]


def main(argv: list[str] | None = None) -> dict:
    """Measure, print and return the numbers (``--json``: also write them)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fixtures", type=Path, required=True, help="the folder devec-fixtures wrote")
    p.add_argument("--members", type=int, default=10, help="full fine-tunes in the iterative pool (paper: 10)")
    p.add_argument("--vision-blocks", type=int, default=12, help="ViT-B/32 blocks decomposed (all: 12)")
    p.add_argument("--llama-include", default=r"^model\.layers\.0\.",
                   help="regex of the LLaMA matrices decomposed (default: the 7 of layer 0); the projection scales "
                        "the time by their share of one layer's basis flops (2 m n k + 9 k^3, k = min(m, n))")
    p.add_argument("--tau", type=float, default=0.85)
    p.add_argument("--rank", default="energy:0.9")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--skip", choices=["vision", "llama"], default=None)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    out: dict = {"threads": args.threads}
    if args.skip != "vision":
        out["load_before_vision"] = load_average()
        v = summarize_vision(child(VISION, str(args.fixtures), str(args.vision_blocks), str(args.tau), args.rank,
                                   threads=args.threads))
        v["load_after"] = load_average()
        out["vit_b32_pairwise_8"] = v
        print(f"ViT-B/32 pairwise, 8 tasks, {v['blocks']} blocks: {v['whole_s']:.1f} s, SVD floor "
              f"{v['svd_floor_s']:.1f} s, ratio {v['ratio']:.2f}; projected 12 blocks: {v['projected_full_s']:.0f} s; "
              f"peak added {v['added_mib']:.0f} MiB; forming the {v['pairs']} pairs' dense shared vectors after it "
              f"(a merge's cost, not counted): {v['pairwise_dense_s']:.1f} s")
    if args.skip != "llama":
        import tempfile

        out["load_before_llama"] = load_average()
        with tempfile.TemporaryDirectory(prefix="bench-paper-") as cache:
            info = llama_pool(args.fixtures, args.members)
            t = summarize_llama(child(LLAMA, json.dumps(info), args.llama_include, str(args.tau), args.rank, cache,
                                      threads=args.threads))
        t["load_after"] = load_average()
        out["llama7b_iterative"] = t
        print(f"LLaMA-7B layers, iterative, pool {t['pool_size']} (toxic + {t['members']}), {len(t['matrices'])} "
              f"matrices ({t['layer_share']:.2f} of a layer's basis work): {t['whole_s']:.1f} s, SVD floor "
              f"{t['svd_floor_s']:.1f} s, ratio {t['ratio']:.2f}; peak added {t['added_mib']:.0f} MiB vs bound "
              f"{t['bound_mib']:.0f} MiB ((k + 2) x {t['layer_tv_mib']:.0f} MiB + 1 GiB); projected 32 layers x 10 "
              f"members: {t['projected_full_s'] / 3600:.2f} h")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
