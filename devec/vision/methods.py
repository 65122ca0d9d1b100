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
    paper: bool = True              # false: a row we add beyond the paper's tables (shown as extra)

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
    """TIES-merging (Yadav et al.) as [48]'s code: global top-k trim, elected sign, disjoint merge, times lambda.

    The preset the paper compares with is [48]'s ``main_ties_merging.py``: k = 20 %, ``merge_func: sum``,
    lambda 0.3; the TIES paper's variant is ``merge_func: mean`` with lambda picked on validation
    (conf/method/vision/ties_paper.yaml).
    """

    k: float = 0.2
    merge_func: str = "sum"
    coefficient: float | None = 0.3
    grid: list[float] = field(default_factory=lambda: [0.3, 0.5, 0.7, 0.9, 1.1, 1.3, 1.5])

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_k(self.k)
        if self.merge_func not in ("sum", "mean"):
            raise ValueError(f"merge_func={self.merge_func!r}: use sum ([48]'s dis-sum) or mean (the TIES paper's "
                             "dis-mean)")

    def merge_vectors(self, vectors: Vectors) -> dict[str, torch.Tensor]:
        """The TIES-merged task vector (before lambda)."""
        return ties_merge(vectors, float(self.k), self.merge_func)

    def merge(self, ctx: MergeContext) -> tuple[Params, dict]:
        return _select(ctx, asdict(self), self.merge_vectors(ctx.vectors))


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
    batches: int = 2              # batches per task and step ([48]: two of 16)
    devec: bool = False
    devec_init: float = 0.0

    def __post_init__(self) -> None:
        if self.granularity not in ("task", "layer"):
            raise ValueError(f"granularity={self.granularity!r}: use task or layer")
        if self.steps < 0 or self.batch_size < 1 or self.batches < 1:
            raise ValueError(f"steps={self.steps}, batch_size={self.batch_size}, batches={self.batches}: need "
                             "steps >= 0, batch_size >= 1 and batches >= 1")
        _check_k(self.k)

    def merge(self, ctx: MergeContext) -> tuple[Params, dict]:
        vectors = ties_vectors(ctx.vectors, float(self.k)) if self.ties else list(ctx.vectors)
        init = [float(self.init)] * len(vectors) + [float(self.devec_init)] * len(ctx.shared)
        merged = MergedParams(ctx.pretrained, vectors + list(ctx.shared), init, self.granularity)
        clamp = list(self.clamp) if self.clamp is not None else None
        losses = adamerge(ctx.pool.model.visual, ctx.pool.heads, ctx.tasks, merged, int(self.steps), float(self.lr),
                          int(self.batch_size), clamp, seed=ctx.seed, progress=ctx.progress,
                          batches=int(self.batches))
        with torch.no_grad():
            params = {k: v.detach() for k, v in merged().items()}
        lam = merged.coefficients.detach()
        k = len(vectors)
        info = {"entropy_first": losses[0] if losses else None, "entropy_last": losses[-1] if losses else None,
                "task_coefficients_mean": float(lam[:k].mean()),
                "shared_coefficients_mean": float(lam[k:].mean()) if ctx.shared else None,
                **coefficient_summary(lam[:k], clamp)}
        return params, info


def coefficient_summary(lam: torch.Tensor, clamp: Sequence[float] | None) -> dict[str, Any]:
    """Where learned task coefficients ended: spread, mean per task vector, and the fraction at each clamp bound."""
    flat = lam.reshape(lam.shape[0], -1).float()
    out: dict[str, Any] = {"task_coefficients_sd": float(flat.std()) if flat.numel() > 1 else 0.0,
                           "task_coefficients_per_task": [round(float(x), 4) for x in flat.mean(1)]}
    if clamp is not None:
        out["task_coefficients_at_bounds"] = [float((flat <= float(clamp[0]) + 1e-6).float().mean()),
                                              float((flat >= float(clamp[1]) - 1e-6).float().mean())]
    return out


@dataclass
class SupervisedCoefficients(Method):
    """Task Arithmetic + DeVec as Sec. 4.1: one coefficient per vector (task vectors, and with ``devec`` the
    pairwise shared ones), learned with cross-entropy through the frozen heads on each task's labelled ``split``;
    the encoder and the vectors stay frozen."""

    split: str = "train"
    steps: int = 500
    lr: float = 1.0e-3
    batch_size: int = 16          # per task and step
    init: float = 0.3
    devec: bool = False
    devec_init: float = 0.0

    def __post_init__(self) -> None:
        if self.split not in ("train", "val"):
            raise ValueError(f"split={self.split!r}: learn the coefficients on train (the paper) or val, "
                             "never on test")
        if self.steps < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(f"steps={self.steps}, batch_size={self.batch_size}, lr={self.lr}: need steps >= 0, "
                             "batch_size >= 1 and lr > 0")

    def merge(self, ctx: MergeContext) -> tuple[Params, dict]:
        from devec.vision.train import fit_multitask

        vectors = list(ctx.vectors) + list(ctx.shared)
        init = [float(self.init)] * len(ctx.vectors) + [float(self.devec_init)] * len(ctx.shared)
        merged = MergedParams(ctx.pretrained, vectors, init, "task")
        splits = {n: getattr(t, self.split) for n, t in ctx.tasks.items()}
        losses = fit_multitask(ctx.pool.model.visual, {n: ctx.pool.heads[n] for n in ctx.tasks}, splits, merged,
                               int(self.steps), float(self.lr), int(self.batch_size), seed=ctx.seed,
                               progress=ctx.progress)
        with torch.no_grad():
            params = {k: v.detach() for k, v in merged().items()}
        lam = [float(x) for x in merged.coefficients.detach().cpu()]
        k = len(ctx.vectors)
        return params, {"split": self.split, "steps": int(self.steps), "lr": float(self.lr),
                        "batch_size": int(self.batch_size), "cross_entropy_first": losses[0] if losses else None,
                        "cross_entropy_last": losses[-1] if losses else None, "task_coefficients": lam[:k],
                        "shared_coefficients": lam[k:]}


@dataclass
class FisherMerging(Method):
    """Fisher merging (Matena & Raffel): each fine-tuned encoder's diagonal Fisher on its task's training split,
    then the Fisher-weighted average (FusionBench's ``clip_fisher_merging`` settings by default)."""

    examples: int = 256           # training images per task for the Fisher
    batch_size: int = 32
    estimator: str = "batch"      # batch (FusionBench / MergeLM) | exact (per example and class)
    normalize: bool = True        # scale each model by its inverse global Fisher norm
    minimal_weight: float = 1.0e-6

    def __post_init__(self) -> None:
        if self.examples < 1 or self.batch_size < 1:
            raise ValueError(f"examples={self.examples}, batch_size={self.batch_size}: both must be >= 1")
        if self.estimator not in ("batch", "exact"):
            raise ValueError(f"estimator={self.estimator!r}: use batch (FusionBench's) or exact")

    def merge(self, ctx: MergeContext) -> tuple[Params, dict]:
        from devec.vision.fisher import fisher_diagonal, fisher_merge

        fishers = []
        for i, name in enumerate(ctx.tasks):
            fishers.append(fisher_diagonal(ctx.pool.model.visual, ctx.pool.finetuned[name], ctx.pool.heads[name],
                                           ctx.tasks[name].train, int(self.examples), int(self.batch_size),
                                           self.estimator, seed=ctx.seed + i))
        merged = fisher_merge(ctx.vectors, fishers, bool(self.normalize), float(self.minimal_weight))
        return combine(ctx.pretrained, [merged], [1.0]), {"examples": int(self.examples)}


@dataclass
class RegMean(Method):
    """RegMean (Jin et al.): per linear layer the closed form from each task's input Grams on its training split,
    off-diagonal scaled by ``alpha``; other parameters averaged (FusionBench's ``clip_regmean`` settings)."""

    examples: int = 256           # training images per task for the Gram matrices
    batch_size: int = 32
    alpha: float = 0.6            # off-diagonal scale (FusionBench reduce_non_diagonal_ratio)

    def __post_init__(self) -> None:
        if self.examples < 1 or self.batch_size < 1:
            raise ValueError(f"examples={self.examples}, batch_size={self.batch_size}: both must be >= 1")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha={self.alpha}: the off-diagonal scale is in [0, 1] (1: plain least squares)")

    def merge(self, ctx: MergeContext) -> tuple[Params, dict]:
        from devec.vision.regmean import gram_matrices, regmean_merge

        finetuned = [ctx.pool.finetuned[n] for n in ctx.tasks]
        grams = [gram_matrices(ctx.pool.model.visual, ctx.pool.finetuned[n], ctx.tasks[n].train, int(self.examples),
                               int(self.batch_size), seed=ctx.seed + i) for i, n in enumerate(ctx.tasks)]
        params = regmean_merge(finetuned, grams, float(self.alpha))
        return params, {"regmean_layers": sorted(grams[0]), "examples": int(self.examples)}


def _check_k(k: float) -> None:
    if not 0.0 < float(k) <= 1.0:
        raise ValueError(f"k={k}: the fraction of each task vector's entries TIES keeps, in (0, 1] (0.2 = top 20 %)")


def flatten_model(vectors: Vectors) -> tuple[torch.Tensor, list[str]]:
    """(n, d): each task vector flattened over the whole model (parameters in sorted name order), and the names."""
    names = sorted(vectors[0])
    for i, v in enumerate(vectors):
        if sorted(v) != names:
            raise ValueError(f"task vector {i} has parameters {sorted(set(v) ^ set(names))[:3]} the first lacks "
                             "or has: TIES needs the same parameters in every vector")
    return torch.stack([torch.cat([v[n].reshape(-1) for n in names]) for v in vectors]), names


def unflatten_model(flat: torch.Tensor, like: Mapping[str, torch.Tensor], names: Sequence[str]
                    ) -> dict[str, torch.Tensor]:
    """The inverse of :func:`flatten_model` for one row."""
    out, start = {}, 0
    for n in names:
        size = like[n].numel()
        out[n] = flat[start:start + size].view_as(like[n])
        start += size
    return out


def trim_top_k(flat: torch.Tensor, k: float) -> torch.Tensor:
    """Keep each row's top-k magnitudes over the whole row ([48] ``topk_values_mask``: ties at the threshold kept)."""
    d = flat.shape[1]
    drop = d - int(d * k)
    if drop < 1:
        return flat.clone()
    kth = flat.abs().kthvalue(drop, dim=1, keepdim=True).values
    return flat * (flat.abs() >= kth)


def elect_sign(trimmed: torch.Tensor) -> torch.Tensor:
    """The sign of the summed trimmed values per entry; zero signs take the majority sign ([48] ``resolve_sign``)."""
    sign = torch.sign(trimmed.sum(0))
    sign[sign == 0] = torch.sign(sign.sum())
    return sign


def disjoint(trimmed: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Each vector's entries that agree with the elected sign (zero elsewhere)."""
    keep = torch.where(sign.unsqueeze(0) > 0, trimmed > 0, trimmed < 0)
    return trimmed * keep


def ties_vectors(vectors: Vectors, k: float) -> Vectors:
    """TIES's trim (top-k over each vector flattened across the whole model) and sign election: each vector keeps
    its entries that agree (AdaMerging++'s vectors, [48] ``ties_merging_split``)."""
    _check_k(k)
    flat, names = flatten_model(vectors)
    trimmed = trim_top_k(flat, k)
    selected = disjoint(trimmed, elect_sign(trimmed))
    return [unflatten_model(row, vectors[0], names) for row in selected]


def ties_merge(vectors: Vectors, k: float, merge: str = "sum") -> dict[str, torch.Tensor]:
    """The disjoint merge of :func:`ties_vectors`: their sum ([48]'s dis-sum) or mean over the agreeing entries."""
    flat, names = flatten_model(vectors)
    trimmed = trim_top_k(flat, k)
    selected = disjoint(trimmed, elect_sign(trimmed))
    total = selected.sum(0)
    if merge == "mean":
        total = total / (selected != 0).sum(0).clamp(min=1)
    return unflatten_model(total, vectors[0], names)
