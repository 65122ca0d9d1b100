"""Decomposition time and memory at the paper's sizes, on the fixtures ``devec-fixtures`` generates.

Measured in one run (each part in a fresh process, one torch thread unless --threads):
  * ViT-B/32, pairwise over the 8 Table 1 task vectors (``--vision-blocks`` of the 12 blocks): the whole-model
    decomposition time and the SVD-only floor (a column basis of every decomposed matrix of every task vector);
  * LLaMA-2-7B layer shapes, iterative (the toxic DoRA vector against ``--members`` full fine-tunes, Sec. 4.3),
    streamed from the sharded checkpoints (``stream_unique``) for the matrices ``--llama-include`` names: the time,
    its SVD-only floor, and the peak resident memory added over the process after imports, against
    (pool size + 2) x one layer's float32 task-vector bytes + 1 GiB;
  * the projected full-run time on this CPU: 12 blocks / 8 tasks, 32 layers / 10 members.

    devec-fixtures vision --out /tmp/fixtures && devec-fixtures toxicity --out /tmp/fixtures
    python benchmarks/bench_paper_scale.py --fixtures /tmp/fixtures --json out.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from _child import RSS_SAMPLER  # benchmarks/ is on sys.path when a benchmark runs as a script

PRELUDE = r"""
import json, os, sys, threading, time, torch
from pathlib import Path
torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
""" + RSS_SAMPLER

VISION = PRELUDE + r"""
from devec.engine import column_basis
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
pool = InMemoryPool(tvs)
policy = ParamPolicy()
settings = DecompositionSettings(mode="pairwise", tau=tau, rank=rank, policy=policy)
start = time.perf_counter()
decompose_model(pool, settings, progress=False)
whole = time.perf_counter() - start
mats = [k for k, v in tvs[0].items() if policy.action(k, tuple(v.shape)) == "decompose"]
start = time.perf_counter()
for tv in tvs:
    for k in mats:
        column_basis(tv[k].reshape(tv[k].shape[0], -1), rank)
floor = time.perf_counter() - start
print(json.dumps({"whole_s": whole, "svd_floor_s": floor, "matrices": len(mats), "tasks": len(tvs),
                  "blocks": blocks}))
"""

LLAMA = PRELUDE + r"""
from devec.engine import column_basis
from devec.fixtures.toxicity import LAYERS
from devec.toxicity.sources import open_source
from devec.toxicity.streaming import stream_unique
from devec.vectors import open_checkpoint
from devec.vectors.driver import DecompositionSettings
from devec.vectors.policy import ParamPolicy

info, include, tau, rank, cache = json.loads(sys.argv[1]), sys.argv[2], float(sys.argv[3]), sys.argv[4], sys.argv[5]
toxic = open_source(info["toxic"], "dora", "toxic")
others = [open_source(p, "full", Path(p).name) for p in info["members"]]
include = (include,)
policy = ParamPolicy(include=include, vectors="exclude", embeddings="exclude")
settings = DecompositionSettings(mode="iterative", tau=tau, rank=rank, policy=policy, chance_draws=0)
before = rss_mib()
peak[0] = before
threading.Thread(target=sample, daemon=True).start()
start = time.perf_counter()
stream_unique(info["base"], toxic, others, cache, settings=settings, resume=False)
whole = time.perf_counter() - start
added = peak[0] - before
pre = open_checkpoint(info["base"])
names = [n for n in pre.keys() if policy.action(n, pre.shape(n)) == "decompose"]
layer0 = [n for n in pre.keys() if n.startswith("model.layers.0.") and len(pre.shape(n)) == 2]
layer_bytes = sum(4 * pre.shape(n)[0] * pre.shape(n)[1] for n in layer0)
gram = lambda n: pre.shape(n)[0] * pre.shape(n)[1] * min(pre.shape(n))   # the Gram route's cost
share = sum(gram(n) for n in names) / sum(gram(n) for n in layer0)        # of one layer's basis work
start = time.perf_counter()
for n in names:
    w = pre.get(n)
    for src in [toxic, *others]:
        d = src.delta(n, w)
        if d is not None:
            column_basis(d.float(), rank)
floor = time.perf_counter() - start
print(json.dumps({"whole_s": whole, "svd_floor_s": floor, "layer_share": share, "members": len(others),
                  "matrices": names, "baseline_mib": before, "added_mib": added,
                  "layer_tv_mib": layer_bytes / 2**20, "fixture_layers": LAYERS}))
"""


def child(code: str, *args: str, threads: int) -> dict:
    """Run ``code`` in a fresh interpreter and parse its last output line as JSON."""
    import os

    env = {**os.environ, "BENCH_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def llama_pool(root: Path, members: int) -> dict:
    """Paths of the base, the ToxiGen DoRA adapter and the first ``members`` full fine-tunes in the mirror."""
    from omegaconf import OmegaConf

    from devec.fixtures.vision import conf_file

    pool = OmegaConf.load(conf_file("pool", "toxicity", "paper.yaml"))
    full = [str(root / str(m.repo)) for m in pool.members.values() if m.kind == "full"][:members]
    return {"base": str(root / str(pool.base)), "toxic": str(root / "toxic_adapters" / "toxigen"), "members": full}


def main(argv: list[str] | None = None) -> dict:
    """Measure, print and return the numbers (``--json``: also write them)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fixtures", type=Path, required=True, help="the folder devec-fixtures wrote")
    p.add_argument("--members", type=int, default=10, help="full fine-tunes in the iterative pool (paper: 10)")
    p.add_argument("--vision-blocks", type=int, default=12, help="ViT-B/32 blocks decomposed (all: 12)")
    p.add_argument("--llama-include", default=r"^model\.layers\.0\.",
                   help="regex of the LLaMA matrices decomposed (default: layer 0); the projection scales the time "
                        "by their share of one layer's Gram work (m n min(m, n) per matrix)")
    p.add_argument("--tau", type=float, default=0.85)
    p.add_argument("--rank", default="energy:0.9")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--skip", choices=["vision", "llama"], default=None)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    out: dict = {"threads": args.threads}
    if args.skip != "vision":
        v = child(VISION, str(args.fixtures), str(args.vision_blocks), str(args.tau), args.rank, threads=args.threads)
        v["ratio"] = v["whole_s"] / v["svd_floor_s"]
        v["projected_full_s"] = v["whole_s"] * 12 / max(v["blocks"], 1)
        out["vit_b32_pairwise_8"] = v
        print(f"ViT-B/32 pairwise, 8 tasks, {v['blocks']} blocks: {v['whole_s']:.1f} s, SVD floor "
              f"{v['svd_floor_s']:.1f} s, ratio {v['ratio']:.2f}; projected 12 blocks: {v['projected_full_s']:.0f} s")
    if args.skip != "llama":
        import tempfile

        with tempfile.TemporaryDirectory(prefix="bench-paper-") as cache:
            info = llama_pool(args.fixtures, args.members)
            t = child(LLAMA, json.dumps(info), args.llama_include, str(args.tau), args.rank, cache,
                      threads=args.threads)
        k = t["members"] + 1
        t["ratio"] = t["whole_s"] / t["svd_floor_s"]
        t["bound_mib"] = (k + 2) * t["layer_tv_mib"] + 1024
        t["within_bound"] = t["added_mib"] <= t["bound_mib"]
        per_layer = t["whole_s"] / t["layer_share"]
        t["projected_full_s"] = per_layer * 32 * (10 + 1) / k
        out["llama7b_iterative"] = t
        print(f"LLaMA-7B layers, iterative, pool {k} (toxic + {t['members']}), {len(t['matrices'])} matrices "
              f"({t['layer_share']:.2f} of a layer's basis work): "
              f"{t['whole_s']:.1f} s, SVD floor {t['svd_floor_s']:.1f} s, ratio {t['ratio']:.2f}; peak added "
              f"{t['added_mib']:.0f} MiB vs bound {t['bound_mib']:.0f} MiB ((k + 2) x {t['layer_tv_mib']:.0f} MiB "
              f"+ 1 GiB); projected 32 layers x 10 members: {t['projected_full_s'] / 3600:.2f} h")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
