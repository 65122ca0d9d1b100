"""The chance level of sharing: the shared dimension random subspaces of the same kept ranks would have.

DeVec keeps the eigen-directions of the chained projection above tau (eq. 10). When the kept ranks are a large
fraction of the row count n, independent subspaces already share directions by chance (r_1 + r_2 > n forces at
least r_1 + r_2 - n). :func:`chance_shared_dim` simulates that level: ``draws`` independent draws of Haar-random
subspaces of R^n with the given ranks, each put through the engine's own mode (:mod:`devec.engine.modes`) at the
same tau, and the mean of the shared dimension the mode reports.

Only the relative position of the subspaces matters (every shared dimension depends on the bases through their
products U_i^T U_j), so the draws live in the smallest space that holds them all: with R = sum(r_i) < n, the
Gaussian n x R matrix whose column blocks span the subspaces is G = Q T with Q Haar and T the R x R Bartlett factor
(T_jj^2 ~ chi^2(n - j), T_ij ~ N(0, 1) above the diagonal), and span(T_i) has the geometry of span(G_i). The cost
is then a QR of min(n, R) x r_i per vector and draw, whatever n is.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch

from devec.engine.basis import ColumnBasis, TaskVector, column_basis
from devec.engine.modes import MODES, iterative_result, joint, pairwise_result

__all__ = ["CHANCE_METHOD", "chance_pair_dim", "chance_shared_dim", "random_bases"]

CHANCE_METHOD = ("simulated: Haar-random subspaces with the layer's row count and kept ranks, {draws} draws, mean "
                 "shared dimension of the same mode at the same tau")
"""How the chance level is computed, for results and reports (``.format(draws=K)``)."""


def chance_shared_dim(n: int, ranks: Sequence[int], tau: float, mode: str, *, draws: int = 8, seed: int = 0,
                      target: int = 0, method: str = "lowrank", device: str | None = None) -> float:
    """Mean shared dimension of ``draws`` draws of Haar-random subspaces of R^n with dimensions ``ranks``.

    In the units the driver reports as ``shared_dim``: joint, the dimension of the chain's shared subspace;
    pairwise, the mean over pairs; iterative, the total removed from vector ``target`` against the others in turn
    (its basis after a step spans what is left of it, so a step removes from r_target minus what went before).
    """
    ranks = tuple(int(r) for r in ranks)
    _check(n, ranks, mode, draws, target)
    return _chance(int(n), ranks, float(tau), mode, int(draws), int(seed), int(target), method,
                   None if device is None else str(device))


def chance_pair_dim(n: int, r1: int, r2: int, tau: float, *, draws: int = 8, seed: int = 0,
                    method: str = "lowrank", device: str | None = None) -> float:
    """Mean shared dimension of two Haar-random subspaces of R^n of dimensions ``r1`` and ``r2`` (one pair)."""
    lo, hi = sorted((int(r1), int(r2)))  # the count is symmetric in the pair: one cache entry for both orders
    return chance_shared_dim(n, (lo, hi), tau, "pairwise", draws=draws, seed=seed, method=method, device=device)


def random_bases(n: int, ranks: Sequence[int], rng: np.random.Generator) -> list[torch.Tensor]:
    """Orthonormal float64 bases of independent Haar-random subspaces of R^n with dimensions ``ranks``.

    The bases have min(n, sum(ranks)) rows: below n, they are the subspaces expressed in the span of all of them
    (Bartlett factor, module docstring), which leaves every U_i^T U_j distributed as for n rows.
    """
    total = sum(ranks)
    if n <= total:
        blocks = [rng.standard_normal((n, r)) for r in ranks]
    else:
        t = np.triu(rng.standard_normal((total, total)), k=1)
        t[np.diag_indices(total)] = np.sqrt(rng.chisquare(n - np.arange(total)))
        edges = np.cumsum([0, *ranks])
        blocks = [t[:, lo:hi] for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    return [torch.linalg.qr(torch.from_numpy(np.ascontiguousarray(b)))[0] for b in blocks]


@functools.lru_cache(maxsize=4096)
def _chance(n: int, ranks: tuple[int, ...], tau: float, mode: str, draws: int, seed: int, target: int,
            method: str, device: str | None) -> float:
    rng = np.random.default_rng(seed)
    dims = [_shared_dim([u.to(device) if device else u for u in random_bases(n, ranks, rng)], tau, mode, target,
                        method) for _ in range(draws)]
    return float(np.mean(dims))


def _shared_dim(us: list[torch.Tensor], tau: float, mode: str, target: int, method: str) -> float:
    """The shared dimension the mode reports for these bases, computed by :mod:`devec.engine.modes`.

    Each basis U_i stands for the vector [U_i | 0] (its column space, unit singular values) and is handed in as
    its own precomputed basis; the iterative mode recomputes the target's from its unique part (:func:`_unit_basis`:
    the directions left).
    """
    width = max(1, max(u.shape[1] for u in us))
    vectors = [torch.cat([u, u.new_zeros(u.shape[0], width - u.shape[1])], dim=1) for u in us]
    bases = [ColumnBasis(u, u.new_ones(u.shape[1]), float(u.shape[1])) for u in us]
    if mode == "joint":
        return float(joint(vectors, tau, "full", method, svd="full", bases=bases).shared_dim)
    if mode == "pairwise":
        dims = pairwise_result(vectors, tau, "full", method, svd="full", bases=bases).shared_dims
        return sum(dims.values()) / len(dims)
    rest = [i for i in range(len(us)) if i != target]
    r = iterative_result(vectors[target], [vectors[i] for i in rest], tau, "full", method, svd="full",
                         other_bases=[bases[i] for i in rest], basis_fn=_unit_basis, target_basis=bases[target])
    return float(sum(r.removed_dims))


def _unit_basis(vector: TaskVector, rank: object = None, svd: str = "full") -> ColumnBasis:
    """The directions of a unit-spectrum vector's unique part: singular values 1 are kept, rounding residue (~1e-16)
    is not, even when nothing is left (a rank rule relative to sigma_1 would then keep the residue)."""
    b = column_basis(vector, "full", svd="full")
    keep = int((b.singular_values[: b.rank] > 0.5).sum())
    return ColumnBasis(b.U[:, :keep].contiguous(), b.singular_values, b.total_energy)


def _check(n: int, ranks: tuple[int, ...], mode: str, draws: int, target: int) -> None:
    """ValueErrors naming the argument and what to change."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: use one of {', '.join(MODES)}")
    if isinstance(n, bool) or int(n) < 1:
        raise ValueError(f"n={n!r}: the row count must be a positive integer")
    if len(ranks) < 2:
        raise ValueError(f"ranks={list(ranks)}: the chance level needs at least two kept ranks, one per task vector")
    bad = [r for r in ranks if not 0 <= r <= n]
    if bad:
        raise ValueError(f"ranks={list(ranks)}: every kept rank must lie in [0, n={n}], got {bad}")
    if isinstance(draws, bool) or int(draws) < 1:
        raise ValueError(f"draws={draws!r}: simulate at least one draw (decomposition.chance_draws=0 turns the "
                         "chance level off before it gets here)")
    if mode == "iterative" and not 0 <= target < len(ranks):
        raise ValueError(f"target={target}: not an index into the {len(ranks)} ranks")
