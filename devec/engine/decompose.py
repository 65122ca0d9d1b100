"""DeVec for one pool of same-shape task vectors: shared and unique components (Sec. 3.2, eqs. 6-14)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch

from devec.engine.basis import (
    SVD_BACKENDS,
    ColumnBasis,
    LoRAFactors,
    TaskVector,
    _column_basis,
    all_finite,
    as_task_vectors,
    frobenius_norm,
    pool_dtype,
    require_finite,
)
from devec.engine.rank import RankRule, parse_rank
from devec.engine.subspace import check_tau, shared_subspace

__all__ = ["Decomposition", "all_finite", "check_pool", "decompose", "merge_shared"]
OVERFLOW_MARGIN = 0.5  # ||W||_F below this fraction of a dtype's maximum: no partial sum or output can overflow it


@dataclass
class Decomposition:
    """Result of :func:`decompose`; components keep their input form (dense tensor or LoRA factors)."""

    basis: torch.Tensor
    eigenvalues: torch.Tensor
    shared: list[TaskVector]
    unique: list[TaskVector]
    merged_shared: TaskVector
    ranks: list[int]
    tau: float
    rank_rule: RankRule = field(default_factory=RankRule)
    shared_energy_fractions: list[float] | None = None

    @property
    def shared_dim(self) -> int:
        """d, the dimension of the shared subspace (eq. 11)."""
        return self.basis.shape[1]

    def shared_energy(self) -> list[float]:
        """Fraction of each task vector's squared Frobenius norm in its shared component (shared is orthogonal
        to unique, so ||W||^2 = ||shared||^2 + ||unique||^2)."""
        if self.shared_energy_fractions is not None:
            return list(self.shared_energy_fractions)
        out = []
        for s, u in zip(self.shared, self.unique, strict=True):
            ss, uu = frobenius_norm(s) ** 2, frobenius_norm(u) ** 2
            out.append(ss / (ss + uu) if ss + uu > 0 and math.isfinite(ss + uu) else 0.0)
        return out


def decompose(
    vectors: Iterable[TaskVector],
    tau: float = 0.85,
    rank: str | int | RankRule | None = "full",
    method: str = "lowrank",
    svd: str = "auto",
    bases: Sequence[ColumnBasis] | None = None,
    validate: bool = True,
    components: bool = True,
    factored: bool = False,
) -> Decomposition:
    """Split each task vector into shared = P_shared W_i (eq. 12) and unique = W_i - shared (eq. 13).

    ``vectors`` are same-shape 2-D tensors or :class:`LoRAFactors`, in any iterable, by the policy of
    :func:`devec.engine.as_task_vectors` (numpy arrays converted, integers promoted to float64, complex refused);
    mixed float dtypes give components in their promoted dtype (:func:`devec.engine.basis.pool_dtype`).
    ``bases`` may hand in precomputed column bases (e.g. from a cache) instead of recomputing the SVDs;
    ``validate=False`` skips :func:`check_pool`'s read pass (NaN/Inf) for callers that already ran it.
    ``components=False`` leaves ``shared`` and ``unique`` empty for dense vectors and computes only
    ``merged_shared`` and the energies (pairwise mode needs no more). ``factored=True`` returns a dense pool's
    ``merged_shared`` as :class:`LoRAFactors` ``Z @ C`` (n x d and d x m, C the eq. 14 mix of the C_i = Z^T W_i),
    equal to the dense one up to rounding: the n x m product is then left to whoever needs it dense.
    Outputs are finite or a ValueError says why.
    """
    rule = parse_rank(rank)
    if svd not in SVD_BACKENDS:
        raise ValueError(f"svd={svd!r}: use one of {', '.join(SVD_BACKENDS)}")
    vectors = check_pool(vectors, tau) if validate else as_task_vectors(vectors, check_finite=False)
    tau = check_tau(tau)
    bases = _bases(vectors, bases, rule, svd)
    sub = shared_subspace([b.U for b in bases], tau, method=method)
    z = sub.basis
    dtype = pool_dtype(vectors)
    result = Decomposition(basis=z, eigenvalues=sub.eigenvalues, shared=[], unique=[], merged_shared=None,
                           ranks=[b.rank for b in bases], tau=tau, rank_rule=rule)
    if isinstance(vectors[0], LoRAFactors):
        result.shared, result.unique = map(list, zip(*(_split(z, v, dtype) for v in vectors), strict=True))
        result.merged_shared = merge_shared(result.shared)
        _check_outputs(result, dtype, "LoRA factors")
        return result
    # Every shared part is Z C_i with C_i = Z^T W_i (d x m): norms and eq. 14 come from the small C_i. The
    # products run in the pool's working precision (float32 for float32/bf16/fp16, float64 for float64): their
    # error is then the input's own rounding, and no float64 copy of any W_i is made. Every partial sum and output
    # entry is bounded by some ||W_i||_F (Z has orthonormal columns), so the bases' energies tell when float32
    # could overflow (then the products run in float64) and when the outputs must be checked for Inf.
    largest = math.sqrt(max(b.total_energy for b in bases))
    work = _working_dtype(dtype, largest)
    z_work = z.to(work)
    coefficients = [z_work.T @ v.to(work) for v in vectors]
    if components:
        for v, c in zip(vectors, coefficients, strict=True):
            shared = (z_work @ c).to(dtype)
            result.shared.append(shared)
            result.unique.append(v.to(dtype) - shared)
    coefficients = [c.double() for c in coefficients]
    norms = [float(c.norm()) for c in coefficients]
    total = sum(norms)
    weights = [n / total if total > 0 else 1.0 / len(vectors) for n in norms]
    combined = sum(w * c for w, c in zip(weights, coefficients, strict=True))
    if factored:
        result.merged_shared = LoRAFactors(z_work.to(dtype), combined.to(dtype), 1.0)
    else:
        result.merged_shared = (z_work @ combined.to(work)).to(dtype)
    result.shared_energy_fractions = [n * n / b.total_energy if b.total_energy > 0 else 0.0
                                      for n, b in zip(norms, bases, strict=True)]
    if largest >= OVERFLOW_MARGIN * torch.finfo(dtype).max:
        _check_outputs(result, dtype, f"||W||_F up to {largest:.3g}")
    return result


def _bases(vectors: list[TaskVector], bases: Sequence[ColumnBasis] | None, rule: RankRule,
           svd: str) -> list[ColumnBasis]:
    """The column basis of every vector: computed, or the precomputed ones checked against the pool."""
    if bases is None:
        return [_column_basis(v, rule, svd) for v in vectors]
    bases = list(bases)
    if len(bases) != len(vectors):
        raise ValueError(f"got {len(bases)} precomputed bases for {len(vectors)} task vectors")
    n = vectors[0].shape[0]
    wrong = [i for i, b in enumerate(bases) if b.U.dim() != 2 or b.U.shape[0] != n]
    if wrong:
        raise ValueError(f"precomputed bases {wrong} do not have {n} rows like the task vectors (shape "
                         f"{tuple(vectors[0].shape)}): were they computed for another parameter?")
    return bases


def _check_outputs(result: Decomposition, dtype: torch.dtype, why: str) -> None:
    """ValueError when a component overflowed ``dtype`` (one read pass; only run where overflow is possible)."""
    named = [("merged_shared", result.merged_shared)]
    named += [(f"shared[{i}]", s) for i, s in enumerate(result.shared)]
    named += [(f"unique[{i}]", u) for i, u in enumerate(result.unique)]
    for label, t in named:
        parts = (t.B, t.A) if isinstance(t, LoRAFactors) else (t,)
        if not all(all_finite(p) for p in parts):
            raise ValueError(f"DeVec's {label} overflows {dtype} ({why}, its maximum is {torch.finfo(dtype).max:.3g}):"
                             " pass the task vectors in a wider dtype (float32 or float64) or rescale them")


def merge_shared(shared: Sequence[TaskVector]) -> TaskVector:
    """Frobenius-norm weighted average of the shared components (eq. 14), in their promoted dtype."""
    shared = as_task_vectors(shared, check_finite=False)
    if not shared:
        raise ValueError("merge_shared needs at least one shared component, got none")
    dtype = pool_dtype(shared)
    norms = [frobenius_norm(s) for s in shared]
    total = sum(norms)
    weights = [n / total if total > 0 else 1.0 / len(shared) for n in norms]
    if isinstance(shared[0], LoRAFactors):
        b = torch.cat([(s.B.double() * (w * s.scale)).to(dtype) for s, w in zip(shared, weights, strict=True)], 1)
        a = torch.cat([s.A.to(dtype) for s in shared], dim=0)
        return LoRAFactors(b, a, 1.0)
    merged = torch.zeros_like(shared[0], dtype=torch.float64)
    for s, w in zip(shared, weights, strict=True):
        merged += w * s.double()
    return merged.to(dtype)


def check_pool(vectors: Iterable[TaskVector], tau: float, name: str = "") -> list[TaskVector]:
    """Refuse pools DeVec cannot decompose, with a message naming the parameter and what to change.

    Checks ``tau`` (a real number in (0, 1]), then the pool by :func:`devec.engine.as_task_vectors` (types,
    dtypes, one kind, one shape, one device), its size (at least two), and last the one read pass for NaN/Inf.
    Returns the pool as a list of tensors or LoRA factors: use it, since a generator is read here.
    """
    where = f" for parameter {name!r}" if name else ""
    check_tau(tau)
    pool = as_task_vectors(vectors, name, check_finite=False)
    if len(pool) < 2:
        raise ValueError(f"DeVec needs a pool of at least two task vectors{where}, got {len(pool)}")
    require_finite(pool, name)
    return pool


def _split(z: torch.Tensor, v: LoRAFactors, dtype: torch.dtype) -> tuple[LoRAFactors, LoRAFactors]:
    """(Z Z^T v, v - Z Z^T v) of a LoRA vector in factor form: Z Z^T B A = (Z Z^T B) A."""
    b = v.B.double()
    shared_b = z @ (z.T @ b)
    a = v.A.to(dtype)
    return LoRAFactors(shared_b.to(dtype), a, v.scale), LoRAFactors((b - shared_b).to(dtype), a, v.scale)


def _working_dtype(dtype: torch.dtype, largest_norm: float = 0.0) -> torch.dtype:
    """float64 for float64 pools and where float32 products could overflow, else float32."""
    if dtype == torch.float64 or largest_norm >= OVERFLOW_MARGIN * torch.finfo(torch.float32).max:
        return torch.float64
    return torch.float32
