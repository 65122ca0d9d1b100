"""Peak memory of the streamed iterative extraction (Sec. 4.3) against holding the whole pool in memory.

Builds a pool of k multi-shard LLaMA checkpoints (untrained, real formats: sharded safetensors, a DoRA adapter),
then runs, each in a fresh process, (a) ``stream_unique`` (layer by layer from the shards) and (b) the same
extraction after loading every task vector into memory. Reports the peak resident memory each adds on top of the
process after imports (resident set sampled every 2 ms), next to the pool size and one layer's tensors x (k + 2).

    python benchmarks/bench_streaming.py                      # k=6, hidden 256, 8 layers
    python benchmarks/bench_streaming.py --k 10 --hidden 384 --layers 12
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from _child import RSS_SAMPLER  # benchmarks/ is on sys.path when a benchmark runs as a script

CHILD = r"""
import gc, json, sys, threading, time, torch
torch.set_num_threads(1)
""" + RSS_SAMPLER + r"""
from devec.toxicity.sources import open_source
from devec.toxicity.streaming import stream_unique, layer_group
from devec.engine import iterative
from devec.vectors import open_checkpoint
import transformers  # noqa: F401 (imported by both modes)
pool, mode, cache = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
toxic = open_source(pool["toxic"], "dora", "toxic")
others = [open_source(m["path"], m["kind"], n) for n, m in pool["members"].items()]
gc.collect()
before = rss_mib()
peak[0] = before
threading.Thread(target=sample, daemon=True).start()
if mode == "stream":
    stream_unique(pool["base"], toxic, others, cache, tau=0.85, rank="energy:0.9")
else:
    pre = open_checkpoint(pool["base"])
    base = {n: pre.get(n) for n in pre.keys()}
    t = {n: d for n in base if (d := toxic.delta(n, base[n])) is not None}
    vecs = [{n: d for n in base if (d := o.delta(n, base[n])) is not None} for o in others]
    out = {}
    for n, v in t.items():
        pool_n = [x[n] for x in vecs if n in x]
        out[n] = iterative(v, pool_n, tau=0.85, rank="energy:0.9") if v.dim() == 2 and pool_n else v
time.sleep(0.05)
print(json.dumps({"mode": mode, "baseline_mib": before, "peak_mib": peak[0], "added_mib": peak[0] - before}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=6, help="pool size (other task vectors)")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--intermediate", type=int, default=688)
    ap.add_argument("--vocab", type=int, default=2000)
    ap.add_argument("--shard", default="2MB", help="max_shard_size of every checkpoint")
    ap.add_argument("--out", default=None, help="also write the JSON result here")
    args = ap.parse_args()

    import torch

    from devec.toxicity.synthetic import make_pool

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        pool = make_pool(Path(tmp) / "pool", k=args.k, hidden_size=args.hidden, layers=args.layers,
                         intermediate_size=args.intermediate, vocab_size=args.vocab, max_shard_size=args.shard,
                         dora_members=1)
        files = [f for f in (Path(tmp) / "pool").rglob("*.safetensors")]
        pool_mib = sum(f.stat().st_size for f in files) / 2**20
        shards = len(list(Path(pool["base"]).glob("*.safetensors")))
        h, i = args.hidden, args.intermediate
        layer_mib = 4 * (4 * h * h + 3 * h * i + 2 * h) / 2**20
        rows = {}
        for mode in ("stream", "in_memory"):
            res = subprocess.run([sys.executable, "-c", CHILD, json.dumps(pool), mode, str(Path(tmp) / f"c-{mode}")],
                                 capture_output=True, text=True)
            if res.returncode != 0:
                raise SystemExit(f"{mode} run failed:\n{res.stderr[-3000:]}")
            rows[mode] = json.loads(res.stdout.strip().splitlines()[-1])
    result = {
        "k": args.k, "hidden": args.hidden, "layers": args.layers, "shards_per_checkpoint": shards,
        "pool_on_disk_mib": round(pool_mib, 1), "one_layer_mib": round(layer_mib, 2),
        "one_layer_x_(k+2)_mib": round(layer_mib * (args.k + 2), 1),
        "stream_added_peak_mib": round(rows["stream"]["added_mib"], 1),
        "in_memory_added_peak_mib": round(rows["in_memory"]["added_mib"], 1),
        "process_baseline_mib": round(rows["stream"]["baseline_mib"], 1),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
