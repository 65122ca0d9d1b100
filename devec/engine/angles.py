"""Principal angles between subspaces and the principal-vector alternative (Appendix 6, Theorem 6.1)."""

from __future__ import annotations

import torch

from devec.engine.subspace import check_tau

SIDES = ("first", "second", "bisector")


def orthonormal_basis(a: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis of the column space of ``a`` (float64), dropping numerically null directions."""
    a = a.to(torch.float64)
    if a.shape[1] == 0:
        return a
    u, s, _ = torch.linalg.svd(a, full_matrices=False)
    keep = s > s[0] * max(a.shape) * torch.finfo(torch.float64).eps if s[0] > 0 else s > 0
    return u[:, keep]


def principal_angles(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Principal angles (radians, ascending) between the column spaces of ``a`` and ``b``.

    Uses cosines for large angles and sines for small ones (Knyazev & Argentati), so that
    angles near zero are accurate to machine precision rather than sqrt(eps).
    """
    qa, qb = orthonormal_basis(a), orthonormal_basis(b)
    if qa.shape[1] < qb.shape[1]:
        qa, qb = qb, qa
    if qb.shape[1] == 0:
        return qa.new_zeros(0)
    cross = qa.T @ qb
    cosines = torch.linalg.svdvals(cross).clamp(0.0, 1.0)
    sines = torch.linalg.svdvals(qb - qa @ cross).clamp(0.0, 1.0).flip(0)
    return torch.where(cosines.square() < 0.5, torch.arccos(cosines), torch.arcsin(sines))


def principal_vector_basis(u1: torch.Tensor, u2: torch.Tensor, tau: float, side: str = "bisector") -> torch.Tensor:
    """Shared basis by Theorem 6.1 (Golub & Van Loan 12.4.3): principal vector pairs with cos^2 > tau.

    ``first`` returns ``U_1 y_k``, ``second`` returns ``U_2 z_k``, ``bisector`` the normalised
    ``U_1 y_k + U_2 z_k`` (orthonormal since ``y_i^T G z_j = cos_i delta_ij``).
    """
    if side not in SIDES:
        raise ValueError(f"side={side!r}: use one of {', '.join(SIDES)}")
    tau = check_tau(tau)
    u1, u2 = u1.to(torch.float64), u2.to(torch.float64)
    y, cosines, zt = torch.linalg.svd(u1.T @ u2, full_matrices=False)
    keep = int((cosines.square() > tau).sum())
    first, second = u1 @ y[:, :keep], u2 @ zt.T[:, :keep]
    if side == "first":
        return first
    if side == "second":
        return second
    both = first + second
    return both / both.norm(dim=0, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
