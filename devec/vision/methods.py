"""Merging methods: one general task-arithmetic merge, ``theta_pre + sum_i lambda_i v_i``, with different rules.

Each method takes a :class:`MergeContext` (pre-trained weights, task vectors, DeVec's pairwise shared vectors,
validation tasks) and returns the merged encoder's parameters (or a per-task function for individual models).
``method.devec=true`` adds the k(k-1)/2 pairwise shared components (eq. 14 per pair) as extra task vectors with
their own coefficient: one common coefficient picked on validation for the non-adaptive methods, one learned
coefficient per shared vector (per layer for layer-wise) for AdaMerging (Sec. 4.1, Tables 1 and 2).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from devec.vision.adamerging import MergedParams, adamerge
from devec.vision.data import Task
from devec.vision.pool import VisionPool
from devec.vision.taskpool import evaluate

Params = dict[str, torch.Tensor]
Vectors = list[dict[str, torch.Tensor]]


@dataclass
class MergeContext:
    """What a method sees: the pool, the merged tasks (val/test splits), task vectors and DeVec's extra vectors."""

    pool: VisionPool
    tasks: dict[str, Task]
    vectors: Vectors
    shared: Vectors = field(default_factory=list)
    val_limit: int | None = None
    seed: int = 0
    progress: Any = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def pretrained(self) -> Params:
        return self.pool.pretrained

    def val_score(self, params: Params) -> float:
        """Average validation accuracy over the merged tasks (coefficient selection)."""
        return evaluate(self.pool, params, self.tasks, split="val", limit=self.val_limit)["avg"]


def combine(pretrained: Mapping[str, torch.Tensor], vectors: Sequence[Mapping[str, torch.Tensor]],
            coefficients: Sequence[float]) -> Params:
    """``theta_pre + sum_i lambda_i v_i`` (Task Arithmetic); parameters absent from a vector are left as they are."""
    out = {k: v.clone() for k, v in pretrained.items()}
    for vec, lam in zip(vectors, coefficients, strict=True):
        if lam == 0:
            continue
        for k, v in vec.items():
            out[k] += lam * v
    return out


def sum_vectors(vectors: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for vec in vectors:
        for k, v in vec.items():
            out[k] = out[k] + v if k in out else v.clone()
    return out


def _select(ctx: MergeContext, cfg: Mapping[str, Any], merged: Mapping[str, torch.Tensor], grid_key: str = "grid"
            ) -> tuple[Params, dict[str, Any]]:
    """Pick lambda (and DeVec's mu when ``devec``) on validation: ``theta_pre + lambda v + mu sum(shared)``."""
    fixed = cfg.get("coefficient")
    lambdas = [float(fixed)] if fixed is not None else [float(x) for x in cfg[grid_key]]
    shared = sum_vectors(ctx.shared) if ctx.shared else None
    mus = [float(x) for x in cfg.get("devec_grid", [0.0])] if shared is not None else [0.0]
    if len(lambdas) * len(mus) == 1:
        return combine(ctx.pretrained, [merged, shared or {}], [lambdas[0], mus[0]]), \
            {"lambda": lambdas[0], "mu": mus[0]}
    best, best_score, curve = None, -1.0, []
    grid = list(itertools.product(lambdas, mus))
    items = ctx.progress(grid, desc="coefficients on validation", leave=False) if ctx.progress else grid
    for lam, mu in items:
        params = combine(ctx.pretrained, [merged, shared or {}], [lam, mu])
        score = ctx.val_score(params)
        curve.append({"lambda": lam, "mu": mu, "val_avg": score})
        if score > best_score:
            best, best_score = (lam, mu), score
    lam, mu = best
    return combine(ctx.pretrained, [merged, shared or {}], [lam, mu]), \
        {"lambda": lam, "mu": mu, "val_avg": best_score, "val_curve": curve}


# ---------------------------------------------------------------- the methods

def pretrained(ctx: MergeContext, cfg: Mapping[str, Any]) -> tuple[Params, dict]:
    """The pre-trained model with its zero-shot heads."""
    return dict(ctx.pretrained), {}


def individual(ctx: MergeContext, cfg: Mapping[str, Any]) -> tuple[Callable[[str], Params], dict]:
    """Each task evaluated with its own fine-tuned encoder (the upper reference)."""
    return (lambda name: ctx.pool.finetuned[name]), {}


def weight_average(ctx: MergeContext, cfg: Mapping[str, Any]) -> tuple[Params, dict]:
    """Weight averaging: lambda = 1/k for every task vector."""
    cfg = {**cfg, "coefficient": 1.0}
    return _select(ctx, cfg, sum_vectors([{k: v / len(ctx.vectors) for k, v in t.items()} for t in ctx.vectors]))


def task_arithmetic(ctx: MergeContext, cfg: Mapping[str, Any]) -> tuple[Params, dict]:
    """Task Arithmetic (Ilharco et al.): theta_pre + lambda sum_t tau_t, lambda fixed or picked on validation."""
    return _select(ctx, cfg, sum_vectors(ctx.vectors))


def ties_vectors(vectors: Vectors, k: float) -> Vectors:
    """TIES-merging's trim (top-k magnitude per vector) and sign election; each vector keeps agreeing entries."""
    out: Vectors = [{} for _ in vectors]
    for name in vectors[0]:
        stacked = torch.stack([v[name] for v in vectors]).flatten(1)
        keep = max(1, int(round(k * stacked.shape[1])))
        thresh = stacked.abs().kthvalue(stacked.shape[1] - keep + 1, dim=1, keepdim=True).values
        zero = torch.zeros((), dtype=stacked.dtype, device=stacked.device)
        trimmed = torch.where(stacked.abs() >= thresh, stacked, zero)
        sign = torch.sign(trimmed.sum(0))
        agreed = torch.where(torch.sign(trimmed) == sign, trimmed, zero)
        for i, t in enumerate(out):
            t[name] = agreed[i].view_as(vectors[0][name])
    return out


def ties(ctx: MergeContext, cfg: Mapping[str, Any]) -> tuple[Params, dict]:
    """TIES-merging (Yadav et al.): trim, elect sign, disjoint mean, scaled by lambda."""
    agreed = ties_vectors(ctx.vectors, float(cfg.get("k", 0.2)))
    total = sum_vectors(agreed)
    count = sum_vectors([{n: (v != 0).float() for n, v in t.items()} for t in agreed])
    merged = {n: total[n] / count[n].clamp(min=1) for n in total}
    return _select(ctx, cfg, merged)


def adamerging(ctx: MergeContext, cfg: Mapping[str, Any]) -> tuple[Params, dict]:
    """AdaMerging task-wise / layer-wise (``ties: true``: AdaMerging++), DeVec's shared vectors learned alongside."""
    vectors = ties_vectors(ctx.vectors, float(cfg.get("k", 0.2))) if cfg.get("ties") else list(ctx.vectors)
    init = [float(cfg["init"])] * len(vectors) + [float(cfg.get("devec_init", 0.0))] * len(ctx.shared)
    merged = MergedParams(ctx.pretrained, vectors + list(ctx.shared), init, str(cfg["granularity"]))
    clamp = cfg.get("clamp")
    losses = adamerge(ctx.pool.model.visual, ctx.pool.heads, ctx.tasks, merged, int(cfg["steps"]), float(cfg["lr"]),
                      int(cfg["batch_size"]), list(clamp) if clamp is not None else None, seed=ctx.seed,
                      progress=ctx.progress)
    with torch.no_grad():
        params = {k: v.detach() for k, v in merged().items()}
    lam = merged.coefficients.detach()
    k = len(vectors)
    info = {"entropy_first": losses[0] if losses else None, "entropy_last": losses[-1] if losses else None,
            "task_coefficients_mean": float(lam[:k].mean()),
            "shared_coefficients_mean": float(lam[k:].mean()) if ctx.shared else None}
    return params, info


METHODS: dict[str, Callable[[MergeContext, Mapping[str, Any]], tuple[Any, dict]]] = {
    "pretrained": pretrained, "individual": individual, "weight_average": weight_average,
    "task_arithmetic": task_arithmetic, "ties": ties, "adamerging": adamerging,
}


def run_method(ctx: MergeContext, cfg: Mapping[str, Any]) -> tuple[Any, dict]:
    """Look up ``cfg.name`` in the registry and merge."""
    name = cfg["name"]
    if name not in METHODS:
        raise ValueError(f"method.name={name!r}: use one of {', '.join(METHODS)} (conf/method/vision/)")
    return METHODS[name](ctx, cfg)
