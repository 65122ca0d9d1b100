"""DeVec for one pool of same-shape task vectors: shared and unique components (Sec. 3.2, eqs. 6-14)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from devec.engine.basis import ColumnBasis, LoRAFactors, TaskVector, column_basis, frobenius_norm
from devec.engine.rank import RankRule, parse_rank
from devec.engine.subspace import shared_subspace


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
    vectors: Sequence[TaskVector],
    tau: float = 0.85,
    rank: str | int | RankRule | None = "full",
    method: str = "lowrank",
    svd: str = "auto",
    bases: Sequence[ColumnBasis] | None = None,
    validate: bool = True,
    components: bool = True,
) -> Decomposition:
    """Split each task vector into shared = P_shared W_i (eq. 12) and unique = W_i - shared (eq. 13).

    ``vectors`` are same-shape 2-D tensors or :class:`LoRAFactors`; ``bases`` may hand in
    precomputed column bases (e.g. from a cache) instead of recomputing the SVDs; ``validate=False`` skips
    :func:`check_pool` for callers that already ran it. ``components=False`` leaves ``shared`` and ``unique``
    empty for dense vectors and computes only ``merged_shared`` and the energies (pairwise mode needs no more).
    """
    rule = parse_rank(rank)
    if validate:
        check_pool(vectors, tau)
    if bases is None:
        bases = [column_basis(v, rule, svd=svd) for v in vectors]
    elif len(bases) != len(vectors):
        raise ValueError(f"got {len(bases)} precomputed bases for {len(vectors)} task vectors")
    sub = shared_subspace([b.U for b in bases], tau, method=method)
    z = sub.basis
    result = Decomposition(basis=z, eigenvalues=sub.eigenvalues, shared=[], unique=[], merged_shared=None,
                           ranks=[b.rank for b in bases], tau=tau, rank_rule=rule)
    if isinstance(vectors[0], LoRAFactors):
        result.shared, result.unique = map(list, zip(*(_split(z, v) for v in vectors), strict=True))
        result.merged_shared = merge_shared(result.shared)
        return result
    # Every shared part is Z C_i with C_i = Z^T W_i (d x m): norms and eq. 14 come from the small C_i. The
    # products run in the input's working precision (float32 for float32/bf16/fp16, float64 for float64):
    # their error is then the input's own rounding, and no float64 copy of any W_i is made.
    work = _working_dtype(vectors[0].dtype)
    z_work = z.to(work)
    coefficients = [z_work.T @ v.to(work) for v in vectors]
    if components:
        for v, c in zip(vectors, coefficients, strict=True):
            shared = (z_work @ c).to(v.dtype)
            result.shared.append(shared)
            result.unique.append(v - shared)
    coefficients = [c.double() for c in coefficients]
    norms = [float(c.norm()) for c in coefficients]
    total = sum(norms)
    weights = [n / total if total > 0 else 1.0 / len(vectors) for n in norms]
    combined = sum(w * c for w, c in zip(weights, coefficients, strict=True))
    result.merged_shared = (z_work @ combined.to(work)).to(vectors[0].dtype)
    result.shared_energy_fractions = [n * n / b.total_energy if b.total_energy > 0 else 0.0
                                      for n, b in zip(norms, bases, strict=True)]
    return result


def merge_shared(shared: Sequence[TaskVector]) -> TaskVector:
    """Frobenius-norm weighted average of the shared components (eq. 14)."""
    norms = [frobenius_norm(s) for s in shared]
    total = sum(norms)
    weights = [n / total if total > 0 else 1.0 / len(shared) for n in norms]
    if isinstance(shared[0], LoRAFactors):
        b = torch.cat([s.B * (w * s.scale) for s, w in zip(shared, weights, strict=False)], dim=1)
        a = torch.cat([s.A for s in shared], dim=0)
        return LoRAFactors(b, a, 1.0)
    merged = torch.zeros_like(shared[0], dtype=torch.float64)
    for s, w in zip(shared, weights, strict=False):
        merged += w * s.double()
    return merged.to(shared[0].dtype)


def check_pool(vectors: Sequence[TaskVector], tau: float, name: str = "") -> None:
    """Refuse pools DeVec cannot decompose, with a message naming the parameter and what to change."""
    where = f" for parameter {name!r}" if name else ""
    if not (isinstance(tau, int | float) and 0 < tau <= 1):
        raise ValueError(f"tau must be in (0, 1] (decomposition.tau), got {tau!r}")
    if len(vectors) < 2:
        raise ValueError(f"DeVec needs a pool of at least two task vectors{where}, got {len(vectors)}")
    shapes = {tuple(v.shape) for v in vectors}
    if len(shapes) != 1:
        raise ValueError(f"task vectors{where} have different shapes: {sorted(shapes)}")
    for i, v in enumerate(vectors):
        if len(v.shape) != 2:
            raise ValueError(f"task vector {i}{where} is not a matrix (shape {tuple(v.shape)}); reshape it first")
        parts = (v.B, v.A) if isinstance(v, LoRAFactors) else (v,)
        if not all(all_finite(p) for p in parts):
            raise ValueError(f"task vector {i}{where} contains NaN or Inf")


def all_finite(t: torch.Tensor) -> bool:
    """No NaN or Inf in ``t``. A plain sum is NaN or Inf whenever an entry is, so a finite sum settles it in one
    read pass; only a sum that overflowed goes on to the elementwise check."""
    if not t.is_floating_point() or math.isfinite(float(t.sum())):
        return True
    return bool(torch.isfinite(t).all())


def _split(z: torch.Tensor, v: LoRAFactors) -> tuple[LoRAFactors, LoRAFactors]:
    """(Z Z^T v, v - Z Z^T v) of a LoRA vector in factor form: Z Z^T B A = (Z Z^T B) A."""
    b = v.B.double()
    shared_b = z @ (z.T @ b)
    return LoRAFactors(shared_b.to(v.dtype), v.A, v.scale), LoRAFactors((b - shared_b).to(v.dtype), v.A, v.scale)


def _working_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32

