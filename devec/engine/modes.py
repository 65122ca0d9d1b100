"""Pool modes for one parameter: joint (all k), pairwise (every pair), iterative (toxicity, Sec. 4.3).

Each mode takes a list of same-shape matrices (dense or LoRA factors). :func:`pairwise_result` and
:func:`iterative_result` also return the shared dimension of every step, which a whole-model report needs;
:func:`pairwise` and :func:`iterative` return only the vectors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import combinations

import torch

from devec.engine.basis import ColumnBasis, TaskVector, column_basis
from devec.engine.decompose import Decomposition, check_pool, decompose
from devec.engine.rank import parse_rank

MODES = ("joint", "pairwise", "iterative")

BasisFn = Callable[..., ColumnBasis]
"""Anything with :func:`column_basis`'s signature ``(vector, rank, svd=...)``, e.g. a disk cache."""


@dataclass
class PairwiseResult:
    """The merged shared component (eq. 14) and the shared dimension d of every pair (i, j), i < j (``factored``:
    the components of dense pools are :class:`LoRAFactors` ``Z_ij @ C_ij`` of rank d)."""

    merged_shared: dict[tuple[int, int], TaskVector]
    shared_dims: dict[tuple[int, int], int]


@dataclass
class IterativeResult:
    """The target's unique part after every step, and the shared dimension each step removed."""

    unique: TaskVector
    removed_dims: list[int]


def joint(vectors: Sequence[TaskVector], tau: float = 0.85, rank="full", method: str = "lowrank",
          svd: str = "auto", bases: Sequence[ColumnBasis] | None = None,
          basis_fn: BasisFn = column_basis) -> Decomposition:
    """One decomposition of all k vectors together (Figs. 2, 3, 9; style mixing)."""
    rule = parse_rank(rank)
    vectors = check_pool(vectors, tau)  # any iterable, validated and converted once
    bases = list(bases) if bases is not None else [basis_fn(v, rule, svd=svd) for v in vectors]
    return decompose(vectors, tau=tau, rank=rule, method=method, svd=svd, bases=bases, validate=False)


def pairwise(vectors: Sequence[TaskVector], tau: float = 0.85, rank="full", method: str = "lowrank",
             svd: str = "auto", bases: Sequence[ColumnBasis] | None = None,
             basis_fn: BasisFn = column_basis) -> dict[tuple[int, int], TaskVector]:
    """The merged shared component (eq. 14) of every pair (i, j), i < j: k(k-1)/2 vectors (Tables 1, 2)."""
    return pairwise_result(vectors, tau, rank, method, svd, bases, basis_fn).merged_shared


def pairwise_result(vectors: Sequence[TaskVector], tau: float = 0.85, rank="full", method: str = "lowrank",
                    svd: str = "auto", bases: Sequence[ColumnBasis] | None = None,
                    basis_fn: BasisFn = column_basis, factored: bool = False) -> PairwiseResult:
    """:func:`pairwise` with the shared dimension of every pair. ``factored=True`` keeps each pair's component of a
    dense pool as rank-d factors (k(k-1)/2 dense n x m outputs are most of pairwise mode's memory and time)."""
    rule = parse_rank(rank)
    vectors = check_pool(vectors, tau)  # any iterable, validated and converted once
    bases = list(bases) if bases is not None else [basis_fn(v, rule, svd=svd) for v in vectors]
    out = PairwiseResult({}, {})
    for i, j in combinations(range(len(vectors)), 2):
        d = decompose([vectors[i], vectors[j]], tau=tau, rank=rule, method=method, bases=[bases[i], bases[j]],
                      validate=False, components=False, factored=factored)
        out.merged_shared[(i, j)], out.shared_dims[(i, j)] = d.merged_shared, d.shared_dim
    return out


def iterative(target: TaskVector, others: Sequence[TaskVector], tau: float = 0.85, rank="full",
              method: str = "lowrank", svd: str = "auto",
              other_bases: Sequence[ColumnBasis] | None = None, basis_fn: BasisFn = column_basis,
              target_basis: ColumnBasis | None = None) -> TaskVector:
    """Remove from ``target`` what it shares with each other vector in turn; return its unique part (Sec. 4.3)."""
    return iterative_result(target, others, tau, rank, method, svd, other_bases, basis_fn, target_basis).unique


def iterative_result(target: TaskVector, others: Sequence[TaskVector], tau: float = 0.85, rank="full",
                     method: str = "lowrank", svd: str = "auto",
                     other_bases: Sequence[ColumnBasis] | None = None, basis_fn: BasisFn = column_basis,
                     target_basis: ColumnBasis | None = None) -> IterativeResult:
    """:func:`iterative` with the shared dimension removed at each step (``target_basis``: the target's, if known)."""
    rule = parse_rank(rank)
    target, *others = check_pool([target, *others], tau)
    if other_bases is None:
        other_bases = [basis_fn(v, rule, svd=svd) for v in others]
    current, mine, removed = target, target_basis, []
    for other, other_basis in zip(others, other_bases, strict=True):
        if mine is None or (removed and removed[-1] > 0):  # the target's column space changed in the last step
            mine = basis_fn(current, rule, svd=svd)
        if removed and _exhausted(current, target):  # nothing real is left: a basis of rounding noise shares noise
            removed.append(0)
            continue
        d = decompose([current, other], tau=tau, rank=rule, method=method, bases=[mine, other_basis], validate=False)
        current = d.unique[0]
        removed.append(d.shared_dim)
    return IterativeResult(current, removed)


def _exhausted(current: TaskVector, target: TaskVector) -> bool:
    """True when ``current`` is rounding noise of ``target`` (relative norm within 100 machine epsilons)."""
    if not (isinstance(current, torch.Tensor) and isinstance(target, torch.Tensor)):
        return False
    scale = float(torch.linalg.vector_norm(target.double()))
    eps = torch.finfo(current.dtype).eps if current.is_floating_point() else 0.0
    return scale == 0.0 or float(torch.linalg.vector_norm(current.double())) <= 100 * eps * scale
