"""Task vectors of whole models and their decomposition parameter by parameter, with a per-layer report."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from devec.engine import (
    MODES,
    ColumnBasis,
    LoRAFactors,
    TaskVector,
    column_basis,
    decompose,
    frobenius_norm,
    parse_rank,
)
from devec.engine.decompose import all_finite, check_pool
from devec.vectors.checkpoint import Checkpoint, open_checkpoint
from devec.vectors.policy import ParamPolicy

log = logging.getLogger(__name__)

Source = str | os.PathLike | Mapping[str, torch.Tensor] | Checkpoint
NEAR_IDENTITY = 0.9


class TaskVectorPool:
    """k task vectors ``W_ft - W_pre`` read lazily, one parameter at a time (eq. 1 per layer)."""

    def __init__(self, pretrained: Source, finetuned: Sequence[Source], dtype: torch.dtype = torch.float32) -> None:
        if len(finetuned) == 0:
            raise ValueError("the pool is empty: give at least two fine-tuned checkpoints (pool.finetuned)")
        self.pretrained = open_checkpoint(pretrained)
        self.finetuned = [open_checkpoint(f) for f in finetuned]
        self.dtype = dtype
        self.names = check_compatible(self.pretrained, self.finetuned)

    def __len__(self) -> int:
        return len(self.finetuned)

    def shape(self, name: str) -> tuple[int, ...]:
        return self.pretrained.shape(name)

    def vectors(self, name: str) -> list[torch.Tensor]:
        base = self.pretrained.get(name).to(self.dtype)
        out = []
        for ft in self.finetuned:
            v = ft.get(name).to(self.dtype) - base
            if not all_finite(v):
                raise ValueError(f"{ft.source}: parameter {name!r} contains NaN or Inf")
            out.append(v)
        return out


class InMemoryPool:
    """A pool of task vectors already in memory: ``[{name: tensor or LoRAFactors}, ...]``."""

    def __init__(self, task_vectors: Sequence[Mapping[str, TaskVector]]) -> None:
        if len(task_vectors) == 0:
            raise ValueError("the pool is empty: give at least two task vectors")
        self.task_vectors = [dict(tv) for tv in task_vectors]
        names = list(self.task_vectors[0])
        for i, tv in enumerate(self.task_vectors[1:], start=1):
            if set(tv) != set(names):
                missing, extra = sorted(set(names) - set(tv)), sorted(set(tv) - set(names))
                raise ValueError(f"task vector {i} has different parameters: missing {missing[:5]}, extra {extra[:5]}")
            for n in names:
                if tuple(tv[n].shape) != tuple(self.task_vectors[0][n].shape):
                    raise ValueError(f"task vector {i}: parameter {n!r} has shape {tuple(tv[n].shape)}, "
                                     f"task vector 0 has {tuple(self.task_vectors[0][n].shape)}")
        self.names = names

    def __len__(self) -> int:
        return len(self.task_vectors)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.task_vectors[0][name].shape)

    def vectors(self, name: str) -> list[TaskVector]:
        return [tv[name] for tv in self.task_vectors]


def check_compatible(pretrained: Checkpoint, finetuned: Sequence[Checkpoint]) -> list[str]:
    """Same parameter names and shapes in every checkpoint, checked from metadata before any long work."""
    names = pretrained.keys()
    for ft in finetuned:
        missing, extra = sorted(set(names) - set(ft.keys())), sorted(set(ft.keys()) - set(names))
        if missing or extra:
            raise ValueError(f"{ft.source} does not match the pre-trained checkpoint {pretrained.source}: "
                             f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                             f"unexpected {extra[:5]}{'...' if len(extra) > 5 else ''}")
        for n in names:
            if ft.shape(n) != pretrained.shape(n):
                raise ValueError(f"{ft.source}: parameter {n!r} has shape {ft.shape(n)}, "
                                 f"the pre-trained checkpoint has {pretrained.shape(n)}")
    return names


def task_vectors(pretrained: Source, finetuned: Sequence[Source], dtype: torch.dtype = torch.float32
                 ) -> list[dict[str, torch.Tensor]]:
    """``[{name: W_ft - W_pre}]`` for each fine-tuned checkpoint, all in memory (small models)."""
    pool = TaskVectorPool(pretrained, finetuned, dtype=dtype)
    out: list[dict[str, torch.Tensor]] = [{} for _ in range(len(pool))]
    for name in pool.names:
        for tv, v in zip(out, pool.vectors(name), strict=False):
            tv[name] = v
    return out


@dataclass
class LayerResult:
    """One parameter's components; which fields are set depends on the mode."""

    name: str
    action: str
    shared: list[TaskVector] | None = None
    unique: list[TaskVector] | None = None
    merged_shared: TaskVector | None = None
    pairwise_shared: dict[tuple[int, int], TaskVector] | None = None
    unique_target: TaskVector | None = None
    report: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelDecomposition:
    """Whole-model components as state dicts; parameters with action ``exclude`` are absent (not edited)."""

    mode: str
    k: int
    shared: list[dict[str, TaskVector]] = field(default_factory=list)
    unique: list[dict[str, TaskVector]] = field(default_factory=list)
    merged_shared: dict[str, TaskVector] = field(default_factory=dict)
    pairwise_shared: dict[tuple[int, int], dict[str, TaskVector]] = field(default_factory=dict)
    unique_target: dict[str, TaskVector] = field(default_factory=dict)
    report: list[dict[str, Any]] = field(default_factory=list)

    def add(self, layer: LayerResult) -> None:
        self.report.append(layer.report)
        if layer.action == "exclude":
            return
        if layer.shared is not None:
            for i in range(self.k):
                self.shared[i][layer.name] = layer.shared[i]
                self.unique[i][layer.name] = layer.unique[i]
            self.merged_shared[layer.name] = layer.merged_shared
        if layer.pairwise_shared is not None:
            for pair, v in layer.pairwise_shared.items():
                self.pairwise_shared.setdefault(pair, {})[layer.name] = v
        if layer.unique_target is not None:
            self.unique_target[layer.name] = layer.unique_target


def decompose_model(
    pool: TaskVectorPool | InMemoryPool | Sequence[Mapping[str, TaskVector]],
    mode: str = "joint",
    tau: float = 0.85,
    rank: str | int | None = "energy:0.9",
    method: str = "lowrank",
    svd: str = "auto",
    policy: ParamPolicy | None = None,
    target: int = 0,
    basis_fn: Callable[..., ColumnBasis] = column_basis,
    progress: bool = True,
) -> ModelDecomposition:
    """Decompose every parameter of a pool (joint, pairwise or iterative mode) into state dicts and a report."""
    pool = pool if isinstance(pool, TaskVectorPool | InMemoryPool) else InMemoryPool(pool)
    result = ModelDecomposition(mode=mode, k=len(pool))
    if mode == "joint":
        result.shared = [{} for _ in range(len(pool))]
        result.unique = [{} for _ in range(len(pool))]
    for layer in iter_decompose(pool, mode, tau, rank, method, svd, policy, target, basis_fn, progress):
        result.add(layer)
    near = [r["name"] for r in result.report if r.get("near_identity")]
    if near:
        log.warning("%d layer(s) keep a rank >= %.0f%% of their row dimension, so their projection is nearly the "
                    "identity and almost everything is shared: %s. Lower decomposition.rank (e.g. energy:0.5).",
                    len(near), 100 * NEAR_IDENTITY, ", ".join(near[:5]))
    return result


def iter_decompose(
    pool: TaskVectorPool | InMemoryPool,
    mode: str = "joint",
    tau: float = 0.85,
    rank: str | int | None = "energy:0.9",
    method: str = "lowrank",
    svd: str = "auto",
    policy: ParamPolicy | None = None,
    target: int = 0,
    basis_fn: Callable[..., ColumnBasis] = column_basis,
    progress: bool = True,
    names: Sequence[str] | None = None,
) -> Iterator[LayerResult]:
    """Yield one :class:`LayerResult` per parameter, reading the pool lazily (streaming callers write as they go)."""
    if mode not in MODES:
        raise ValueError(f"decomposition.mode={mode!r}: use one of {', '.join(MODES)}")
    rule = parse_rank(rank)
    policy = policy or ParamPolicy()
    k = len(pool)
    check_pool([torch.zeros(1, 1)] * k, tau)
    if mode == "iterative" and not 0 <= target < k:
        raise ValueError(f"target={target} is not an index into the pool of {k} task vectors")
    for name in tqdm(list(names or pool.names), desc=f"DeVec {mode}", disable=not progress, dynamic_ncols=True):
        shape = pool.shape(name)
        action = policy.action(name, shape)
        vectors = pool.vectors(name)
        if action == "decompose":
            yield _decompose_layer(name, vectors, mode, tau, rule, method, svd, target, basis_fn)
        else:
            yield _policy_layer(name, vectors, action, mode, target)


def decomposition_kwargs(cfg: Mapping[str, Any], cache_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Keyword arguments of :func:`decompose_model` from a ``decomposition`` config block.

    With ``cache_dir`` and ``cfg.cache`` true (the default), column bases come from an on-disk
    :class:`devec.cache.BasisCache`, so a sweep over tau computes each SVD once.
    """
    kwargs = {"mode": cfg["mode"], "tau": float(cfg["tau"]), "rank": cfg["rank"],
              "method": cfg.get("method", "lowrank"), "svd": cfg.get("svd", "auto"),
              "policy": ParamPolicy.from_config(cfg.get("policy"))}
    if cache_dir is not None and cfg.get("cache", True):
        from devec.cache import BasisCache

        kwargs["basis_fn"] = BasisCache(Path(cache_dir) / "bases").column_basis
    return kwargs


def _decompose_layer(name: str, vectors: list[TaskVector], mode: str, tau: float, rule, method: str, svd: str,
                     target: int, basis_fn: Callable[..., ColumnBasis]) -> LayerResult:
    shape = tuple(vectors[0].shape)
    matrices = [_as_matrix(v) for v in vectors]
    check_pool(matrices, tau, name=name)
    bases = [basis_fn(m, rule, svd=svd) for m in matrices]
    n = matrices[0].shape[0]
    report: dict[str, Any] = {"name": name, "shape": "x".join(map(str, shape)), "action": "decompose",
                              "ranks": [b.rank for b in bases], "row_dim": n,
                              "near_identity": max(b.rank for b in bases) >= NEAR_IDENTITY * n and n > 1}
    layer = LayerResult(name, "decompose", report=report)
    if mode == "joint":
        d = decompose(matrices, tau=tau, rank=rule, method=method, bases=bases, validate=False)
        layer.shared = [_restore(s, shape) for s in d.shared]
        layer.unique = [_restore(u, shape) for u in d.unique]
        layer.merged_shared = _restore(d.merged_shared, shape)
        energy = d.shared_energy()
        report.update(shared_dim=d.shared_dim, shared_energy=sum(energy) / len(energy),
                      unique_energy=1 - sum(energy) / len(energy))
    elif mode == "pairwise":
        layer.pairwise_shared, dims = {}, []
        for i, j in combinations(range(len(matrices)), 2):
            d = decompose([matrices[i], matrices[j]], tau=tau, rank=rule, method=method, bases=[bases[i], bases[j]],
                          validate=False, components=False)
            layer.pairwise_shared[(i, j)] = _restore(d.merged_shared, shape)
            dims.append(d.shared_dim)
        report.update(shared_dim=sum(dims) / len(dims), shared_dim_max=max(dims))
    else:
        current = matrices[target]
        others = [m for i, m in enumerate(matrices) if i != target]
        other_bases = [b for i, b in enumerate(bases) if i != target]
        mine = bases[target]
        removed = []
        for other, other_basis in zip(others, other_bases, strict=True):
            if removed and removed[-1]:  # the target changed in the last step: its column space too
                mine = basis_fn(current, rule, svd=svd)
            d = decompose([current, other], tau=tau, rank=rule, method=method, bases=[mine, other_basis],
                          validate=False)
            removed.append(d.shared_dim)
            current = d.unique[0]
        layer.unique_target = _restore(current, shape)
        before, after = frobenius_norm(matrices[target]), frobenius_norm(current)
        report.update(shared_dim=sum(removed), unique_energy=(after / before) ** 2 if before > 0 else 0.0,
                      shared_energy=1 - ((after / before) ** 2 if before > 0 else 0.0))
    return layer


def _policy_layer(name: str, vectors: list[TaskVector], action: str, mode: str, target: int) -> LayerResult:
    shape = tuple(vectors[0].shape)
    report = {"name": name, "shape": "x".join(map(str, shape)), "action": action}
    layer = LayerResult(name, action, report=report)
    if action == "exclude":
        return layer
    dense = [v.dense() if isinstance(v, LoRAFactors) else v for v in vectors]
    mean = torch.stack(dense).mean(0) if action == "average" else torch.zeros_like(dense[0])
    if mode == "joint":
        layer.shared = [mean.clone() for _ in dense]
        layer.unique = [v - mean for v in dense]
        layer.merged_shared = mean
    elif mode == "pairwise":
        layer.pairwise_shared = {
            (i, j): ((dense[i] + dense[j]) / 2 if action == "average" else torch.zeros_like(dense[0]))
            for i, j in combinations(range(len(dense)), 2)
        }
    else:
        layer.unique_target = dense[target] - mean
    return layer


def _as_matrix(v: TaskVector) -> TaskVector:
    """Conv and higher-rank weights as (out, in * k_h * k_w ...) matrices (METHOD.md)."""
    if isinstance(v, LoRAFactors) or v.dim() == 2:
        return v
    return v.reshape(v.shape[0], -1)


def _restore(v: TaskVector, shape: tuple[int, ...]) -> TaskVector:
    if isinstance(v, LoRAFactors) or tuple(v.shape) == shape:
        return v
    return v.reshape(shape)

