"""Where a vision pool recipe sits in the merging regime: zero-shot, individual, Weight Averaging, Task Arithmetic
(lambda on validation), AdaMerging (Layer), and the pairwise sharing of the task vectors against chance.

    python benchmarks/vision_regime.py                                   # the embedded default, seed 0
    python benchmarks/vision_regime.py pool.finetune.steps=400 pool.finetune.lr=3e-4 --adamerging 500
    python benchmarks/vision_regime.py pool.pretrain.context=null        # the full-frame corpus
    python benchmarks/vision_regime.py --curve                           # + accuracy and entropy along TA's lambda
    python benchmarks/vision_regime.py --oracle 200                      # + the ceiling of learned coefficients

Overrides are Hydra overrides of the table1_multitask composition (pool.*, data.*, seed); the models are cached under
DEVEC_CACHE like any run's. One process, one torch thread.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from devec.vectors import DecompositionSettings, decompose_model
from devec.vectors.sharing import sharing_summary
from devec.vision.adamerging import MergedParams, entropy
from devec.vision.data import load_tasks
from devec.vision.methods import (
    AdaMerging,
    Individual,
    MergeContext,
    Pretrained,
    TaskArithmetic,
    WeightAverage,
    combine,
    sum_vectors,
)
from devec.vision.pool import load_pool
from devec.vision.taskpool import evaluate, logits
from devec.vision.train import fit_multitask

CONF = Path(__file__).resolve().parents[1] / "conf"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. pool.finetune.steps=400")
    ap.add_argument("--adamerging", type=int, default=150, help="AdaMerging (Layer) steps (0: skip)")
    ap.add_argument("--curve", action="store_true", help="test accuracy and AdaMerging's entropy along TA's lambda")
    ap.add_argument("--oracle", type=int, default=0, metavar="STEPS",
                    help="coefficients (task-wise, layer-wise) learned by cross-entropy on the labelled validation "
                         "split for STEPS Adam steps: how far AdaMerging's coefficients could lift the merge (0: skip)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=table1_multitask", "logger=none", *args.overrides])
    cache = Path(os.environ.get("DEVEC_CACHE", Path.home() / ".cache" / "devec"))
    names = list(cfg.vision.tasks)
    t0 = time.time()
    tasks = load_tasks(cfg.data, names, cache)
    pool = load_pool(cfg.pool, cfg.data, tasks, names, cache)
    built = time.time() - t0
    ctx = MergeContext(pool, tasks, pool.task_vectors(names), [], seed=int(cfg.seed))
    methods = {"ZS": Pretrained(), "FT": Individual(), "WA": WeightAverage(),
               "TA": TaskArithmetic(coefficient=None, grid=list(cfg.methods.task_arithmetic_val.grid))}
    if args.adamerging:
        methods["AdaM (Layer)"] = AdaMerging(steps=args.adamerging, clamp=[0.0, 1.0])
    avg = {}
    for label, method in methods.items():
        params, info = method.merge(ctx)
        scores = evaluate(pool, params, tasks, split="test")
        avg[label] = scores["avg"]
        extra = f" (lambda {info['lambda']})" if label == "TA" else ""
        if label.startswith("AdaM"):
            extra = (f" (coefficients: mean {info['task_coefficients_mean']:.3f}, "
                     f"sd {info['task_coefficients_sd']:.3f}, at 0 / 1: {info['task_coefficients_at_bounds']}; "
                     f"entropy {info['entropy_first']:.2f} -> {info['entropy_last']:.2f})")
        print(f"{label:13s} avg {scores['avg']:5.1f} | " + " ".join(f"{n} {scores[n]:.0f}" for n in names) + extra)
    for granularity in ("task", "layer") if args.oracle else ():
        scores, lam = oracle(pool, tasks, ctx.vectors, granularity, args.oracle)
        print(f"oracle ({granularity}-wise, labels of val) avg {scores['avg']:5.1f} | "
              + " ".join(f"{n} {scores[n]:.0f}" for n in names)
              + f" (coefficients: mean {float(lam.mean()):.3f}, sd {float(lam.std()) if lam.numel() > 1 else 0:.3f})")
    if args.curve:
        print("lambda | test avg | summed test entropy (AdaMerging's objective, full test sets)")
        total = sum_vectors(ctx.vectors)
        for lam in [0.0, *cfg.methods.task_arithmetic_val.grid]:
            params = combine(pool.pretrained, [total], [float(lam)])
            print(f"{float(lam):.2f} | {evaluate(pool, params, tasks, split='test')['avg']:5.1f} | "
                  f"{summed_entropy(pool, params, tasks):.3f}")
    settings = DecompositionSettings.from_config(OmegaConf.to_container(cfg.decomposition, resolve=True),
                                                 mode="pairwise")
    sharing = sharing_summary(decompose_model(ctx.vectors, settings, progress=False).report)
    print(f"FT - ZS {avg['FT'] - avg['ZS']:+.1f}; TA - ZS {avg['TA'] - avg['ZS']:+.1f}; TA - WA "
          f"{avg['TA'] - avg['WA']:+.1f}; TA / FT {100 * avg['TA'] / avg['FT']:.0f} %"
          + (f"; AdaM - TA {avg['AdaM (Layer)'] - avg['TA']:+.1f}" if args.adamerging else ""))
    print(f"pairwise sharing: {sharing['layers_above_chance']} of {sharing['layers']} layers above chance; mean "
          f"shared dim {sharing['mean_shared_dim']:.2f} (chance {sharing['mean_chance_dim']:.2f})")
    print(f"pool built or loaded in {built:.0f} s; total {time.time() - t0:.0f} s")


def oracle(pool, tasks, vectors, granularity: str, steps: int, lr: float = 5e-3, init: float = 0.3):
    """Test scores of the merge whose coefficients are fitted with cross-entropy on the labelled val splits (16 per
    task and step): the ceiling of AdaMerging's coefficient family, which sees no labels."""
    merged = MergedParams(pool.pretrained, vectors, [init] * len(vectors), granularity)
    fit_multitask(pool.model.visual, {n: pool.heads[n] for n in tasks}, {n: t.val for n, t in tasks.items()}, merged,
                  steps, lr, 16)
    with torch.no_grad():
        params = {k: v.detach() for k, v in merged().items()}
    return evaluate(pool, params, tasks, split="test"), merged.coefficients.detach()


@torch.no_grad()
def summed_entropy(pool, params, tasks) -> float:
    """AdaMerging's objective over whole test sets: the sum over tasks of the mean prediction entropy."""
    out = 0.0
    for name, task in tasks.items():
        x, _ = next(task.test.batches(len(task.test)))
        out += float(entropy(logits(pool, params, name, x)))
    return out


if __name__ == "__main__":
    main()
