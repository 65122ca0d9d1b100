"""The shared subspace of a pool: eigen-directions of the chained projection P_1...P_k above tau (eqs. 7-11)."""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch

METHODS = ("lowrank", "dense")


@dataclass
class SharedSubspace:
    """Orthonormal basis Z (n x d) of the shared subspace and the chain's eigenvalues (real parts, descending)."""

    basis: torch.Tensor
    eigenvalues: torch.Tensor


def shared_subspace(bases: list[torch.Tensor], tau: float, method: str = "lowrank") -> SharedSubspace:
    """Span of the eigenvectors of ``P_1 P_2 ... P_k`` with eigenvalue > tau, orthonormalised (eqs. 8-11).

    ``lowrank`` works on the r_1 x r_1 chain ``C = G_12 G_23 ... G_k1`` (``G_ij = U_i^T U_j``),
    whose nonzero eigenvalues are those of the n x n chain and whose eigenvectors y map to
    ``U_1 y`` (METHOD.md fact 3); for k = 2 it is the SVD of ``U_1^T U_2`` (principal angles).
    ``dense`` forms the n x n projections literally, for checking and benchmarking.
    Both select with an ordered real Schur form in float64, never ``eig(...).real``.
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r}: use one of {', '.join(METHODS)}")
    tau = check_tau(tau)
    if len(bases) < 2:
        raise ValueError(f"the shared subspace needs at least two task vectors, got {len(bases)}")
    us = [u.to(torch.float64) for u in bases]
    n = us[0].shape[0]
    if any(u.shape[1] == 0 for u in us):
        return SharedSubspace(us[0].new_zeros(n, 0), us[0].new_zeros(0))
    if method == "dense":
        chain = us[0] @ us[0].T
        for u in us[1:]:
            chain = chain @ (u @ u.T)
        q, eigenvalues = _ordered_schur(chain, tau)
        return SharedSubspace(q, eigenvalues)
    if len(us) == 2:
        y, cosines, _ = torch.linalg.svd(us[0].T @ us[1], full_matrices=True)
        eigenvalues = torch.zeros(us[0].shape[1], dtype=torch.float64, device=us[0].device)
        eigenvalues[: cosines.numel()] = cosines.square().clamp(0.0, 1.0)
        keep = int((eigenvalues > tau).sum())
        return SharedSubspace(us[0] @ y[:, :keep], eigenvalues)
    small = us[0].T @ us[1]
    for left, right in zip(us[1:-1], us[2:], strict=False):
        small = small @ (left.T @ right)
    small = small @ (us[-1].T @ us[0])
    q, eigenvalues = _ordered_schur(small, tau)
    return SharedSubspace(us[0] @ q, eigenvalues)


def check_tau(tau: object) -> float:
    """``tau`` as a float in (0, 1], or a ValueError naming ``decomposition.tau`` (bools and NaN are refused)."""
    if isinstance(tau, bool) or not isinstance(tau, numbers.Real) or not 0 < float(tau) <= 1:
        raise ValueError(f"tau must be a real number in (0, 1] (decomposition.tau), got {tau!r}")
    return float(tau)


def _ordered_schur(matrix: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthonormal basis of the invariant subspace for eigenvalues with real part > tau, and all real parts."""
    a = matrix.detach().cpu().numpy().astype(np.float64, copy=False)
    t, z, sdim = scipy.linalg.schur(a, output="real", sort=lambda re, im: re > tau)
    eigenvalues = np.sort(_schur_eigenvalues(t).real)[::-1].copy()
    return torch.from_numpy(z[:, :sdim].copy()).to(matrix.device), torch.from_numpy(eigenvalues)


def _schur_eigenvalues(t: np.ndarray) -> np.ndarray:
    """Eigenvalues read off a real quasi-triangular Schur factor (1x1 and 2x2 diagonal blocks)."""
    n = t.shape[0]
    values = np.empty(n, dtype=np.complex128)
    i = 0
    while i < n:
        if i + 1 < n and t[i + 1, i] != 0.0:
            values[i : i + 2] = np.linalg.eigvals(t[i : i + 2, i : i + 2])
            i += 2
        else:
            values[i] = t[i, i]
            i += 1
    return values
