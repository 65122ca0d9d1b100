"""Merging methods: one general task-arithmetic merge, ``theta_pre + sum_i lambda_i v_i``, with different rules.

Each method takes a :class:`MergeContext` (pre-trained weights, task vectors, DeVec's pairwise shared vectors,
validation tasks) and returns the merged encoder's parameters (or a per-task function for individual models).
Each is a small dataclass whose fields are its parameters, built from its ``_target_`` config (conf/method/vision/),
so a misspelt key is an error. ``devec: true`` adds the k(k-1)/2 pairwise shared components (eq. 14 per pair) as
extra task vectors with their own coefficient: one common coefficient picked on validation for the non-adaptive
methods, one learned coefficient per shared vector (per layer for layer-wise) for AdaMerging (Sec. 4.1, Tables 1, 2).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
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

@dataclass
class Method:
    """A row of a merging table (``_target_`` config in conf/method/vision/); its id is its key under ``methods``.

    ``label`` is what tables show; ``baseline`` (a +DeVec row) is the id of the row whose average it changes.
    """

    label: str | None = None
    baseline: str | None = None

    @property
    def devec(self) -> bool:
        """Whether DeVec's pairwise shared vectors are added (methods that support it have a ``devec`` field)."""
        return False

    def merge(self, ctx: MergeContext) -> tuple[Any, dict]:
        """The merged encoder's parameters (or a per-task function of them) and what the method reports."""
        raise NotImplementedError


@dataclass
class Pretrained(Method):
    """The pre-trained model with its zero-shot heads."""

    def merge(self, ctx: MergeContext) -> tuple[Params, dict]:
        return dict(ctx.pretrained), {}


@dataclass
class Individual(Method):
    """Each task evaluated with its own fine-tuned encoder (the upper reference)."""

    def merge(self, ctx: MergeContext) -> tuple[Callable[[str], Params], dict]:
        return (lambda name: ctx.pool.finetuned[name]), {}


@dataclass
class WeightAverage(Method):
    """Weight averaging: lambda = 1/k for every task vector (``devec``: + mu sum(shared), mu from ``devec_grid``)."""

    devec: bool = False
    devec_grid: list[float] = field(default_factory=lambda: [0.0, 0.05, 0.1, 0.2, 0.3])

    def merge(self, ctx: MergeContext) -> tuple[Params, dict]:
        mean = sum_vectors([{k: v / len(ctx.vectors) for k, v in t.items()} for t in ctx.vectors])
        return _select(ctx, {"coefficient": 1.0, "devec_grid": self.devec_grid}, mean)


@dataclass
class TaskArithmetic(Method):
    """Task Arithmetic (Ilharco et al.): theta_pre + lambda sum_t tau_t, lambda fixed or picked on validation."""

    coefficient: float | None = None
    grid: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    devec: bool = False
    devec_grid: list[float] = field(default_factory=lambda: [0.0, 0.05, 0.1, 0.2, 0.3])

    def __post_init__(self) -> None:
        if self.coefficient is None and not self.grid:
            raise ValueError(f"grid={self.grid}: set a coefficient, or a non-empty grid to pick lambda from")

    def merge(self, ctx: MergeContext) -> tuple[Params, dict]:
        return _select(ctx, asdict(self), sum_vectors(ctx.vectors))


@dataclass
class Ties(TaskArithmetic):
    """TIES-merging (Yadav et al.): trim to the top-k magnitudes, elect sign, disjoint mean, scaled by lambda."""

    k: float = 0.2
    grid: list[float] = field(default_factory=lambda: [0.3, 0.5, 0.7, 0.9, 1.1, 1.3, 1.5])

    def merge(self, ctx: MergeContext) -> tuple[Params, dict]:
        agreed = ties_vectors(ctx.vectors, float(self.k))
        total = sum_vectors(agreed)
        count = sum_vectors([{n: (v != 0).float() for n, v in t.items()} for t in agreed])
        merged = {n: total[n] / count[n].clamp(min=1) for n in total}
        return _select(ctx, asdict(self), merged)


@dataclass
class AdaMerging(Method):
    """AdaMerging task-wise / layer-wise (``ties``: AdaMerging++), DeVec's shared vectors learned alongside."""

    granularity: str = "layer"
    ties: bool = False
    k: float = 0.2
    steps: int = 500
    lr: float = 1.0e-3
    init: float = 0.3
    clamp: list[float] | None = None
    batch_size: int = 16
    devec: bool = False
    devec_init: float = 0.0

    def __post_init__(self) -> None:
        if self.granularity not in ("task", "layer"):
            raise ValueError(f"granularity={self.granularity!r}: use task or layer")
        if self.steps < 0 or self.batch_size < 1:
            raise ValueError(f"steps={self.steps}, batch_size={self.batch_size}: need steps >= 0 and batch_size >= 1")

    def merge(self, ctx: MergeContext) -> tuple[Params, dict]:
        vectors = ties_vectors(ctx.vectors, float(self.k)) if self.ties else list(ctx.vectors)
        init = [float(self.init)] * len(vectors) + [float(self.devec_init)] * len(ctx.shared)
        merged = MergedParams(ctx.pretrained, vectors + list(ctx.shared), init, self.granularity)
        clamp = list(self.clamp) if self.clamp is not None else None
        losses = adamerge(ctx.pool.model.visual, ctx.pool.heads, ctx.tasks, merged, int(self.steps), float(self.lr),
                          int(self.batch_size), clamp, seed=ctx.seed, progress=ctx.progress)
        with torch.no_grad():
            params = {k: v.detach() for k, v in merged().items()}
        lam = merged.coefficients.detach()
        k = len(vectors)
        info = {"entropy_first": losses[0] if losses else None, "entropy_last": losses[-1] if losses else None,
                "task_coefficients_mean": float(lam[:k].mean()),
                "shared_coefficients_mean": float(lam[k:].mean()) if ctx.shared else None}
        return params, info


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
