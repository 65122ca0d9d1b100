"""Pool modes for one parameter: joint (all k), pairwise (every pair), iterative (toxicity, Sec. 4.3)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import combinations

from devec.engine.basis import ColumnBasis, TaskVector, column_basis
from devec.engine.decompose import Decomposition, check_pool, decompose
from devec.engine.rank import RankRule, parse_rank

MODES = ("joint", "pairwise", "iterative")

BasisFn = Callable[..., ColumnBasis]
"""Anything with :func:`column_basis`'s signature ``(vector, rank, svd=...)``, e.g. a disk cache."""


def joint(vectors: Sequence[TaskVector], tau: float = 0.85, rank="full", method: str = "lowrank",
          svd: str = "auto", bases: Sequence[ColumnBasis] | None = None,
          basis_fn: BasisFn = column_basis) -> Decomposition:
    """One decomposition of all k vectors together (Figs. 2, 3, 9; style mixing)."""
    rule = parse_rank(rank)
    check_pool(vectors, tau)
    bases = list(bases) if bases is not None else [basis_fn(v, rule, svd=svd) for v in vectors]
    return decompose(vectors, tau=tau, rank=rule, method=method, svd=svd, bases=bases, validate=False)


def pairwise(vectors: Sequence[TaskVector], tau: float = 0.85, rank="full", method: str = "lowrank",
             svd: str = "auto", bases: Sequence[ColumnBasis] | None = None,
             basis_fn: BasisFn = column_basis) -> dict[tuple[int, int], TaskVector]:
    """The merged shared component (eq. 14) of every pair (i, j), i < j: k(k-1)/2 vectors (Tables 1, 2)."""
    rule = parse_rank(rank)
    check_pool(vectors, tau)
    bases = list(bases) if bases is not None else [basis_fn(v, rule, svd=svd) for v in vectors]
    out = {}
    for i, j in combinations(range(len(vectors)), 2):
        d = decompose([vectors[i], vectors[j]], tau=tau, rank=rule, method=method, bases=[bases[i], bases[j]],
                      validate=False, components=False)
        out[(i, j)] = d.merged_shared
    return out


def iterative(target: TaskVector, others: Sequence[TaskVector], tau: float = 0.85, rank="full",
              method: str = "lowrank", svd: str = "auto",
              other_bases: Sequence[ColumnBasis] | None = None, basis_fn: BasisFn = column_basis) -> TaskVector:
    """Remove from ``target`` what it shares with each other vector in turn; return its unique part (Sec. 4.3)."""
    rule: RankRule = parse_rank(rank)
    check_pool([target, *others], tau)
    if other_bases is None:
        other_bases = [basis_fn(v, rule, svd=svd) for v in others]
    current, mine, changed = target, None, True
    for other, other_basis in zip(others, other_bases, strict=True):
        if changed:  # the target's column space changes only when a step removed something
            mine = basis_fn(current, rule, svd=svd)
        d = decompose([current, other], tau=tau, rank=rule, method=method, bases=[mine, other_basis], validate=False)
        current, changed = d.unique[0], d.shared_dim > 0
    return current
