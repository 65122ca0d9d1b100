"""Column-space bases of task vectors: the U_i of eq. 6, truncated by a rank rule."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from devec.engine.rank import RankRule, parse_rank, zero_rtol

SVD_BACKENDS = ("auto", "full", "gram", "randomized")
RANDOMIZED_SEED = 0
GRAM_MIN_RTOL = 1e-6  # the Gram route resolves sigma_j / sigma_1 down to about sqrt(eps_64 * n): well below this
# Below GRAM_MIN_RTOL * sigma_1 a direction holds under 1e-12 of sigma_1^2: less than float32's own resolution
# of the energy (eps_32 ~ 1.2e-7), so for float32/bf16/fp16 inputs the Gram route loses nothing they resolve.


@dataclass
class LoRAFactors:
    """A low-rank task vector ``W = scale * B @ A`` (B: n x r, A: r x m), never formed densely."""

    B: torch.Tensor
    A: torch.Tensor
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.B.dim() != 2 or self.A.dim() != 2 or self.B.shape[1] != self.A.shape[0]:
            raise ValueError(
                f"LoRA factors must be B (n x r) and A (r x m), got B {tuple(self.B.shape)} and A {tuple(self.A.shape)}"
            )

    @property
    def shape(self) -> tuple[int, int]:
        return (self.B.shape[0], self.A.shape[1])

    @property
    def dtype(self) -> torch.dtype:
        return self.B.dtype

    def dense(self) -> torch.Tensor:
        """The matrix ``scale * B @ A`` (for checks and for small layers only)."""
        return (self.B @ self.A) * self.scale

    def norm(self) -> float:
        """Frobenius norm, from the r x r Gram matrices (no dense product)."""
        b, a = self.B.double(), self.A.double()
        return abs(self.scale) * float(torch.sqrt(torch.clamp(((b.T @ b) * (a @ a.T)).sum(), min=0)))

    def to(self, dtype: torch.dtype) -> LoRAFactors:
        return LoRAFactors(self.B.to(dtype), self.A.to(dtype), self.scale)


TaskVector = torch.Tensor | LoRAFactors


def frobenius_norm(v: TaskVector) -> float:
    """||v||_F in float64, for a dense task vector or LoRA factors (the latter without the dense product)."""
    return v.norm() if isinstance(v, LoRAFactors) else float(v.double().norm())


@dataclass
class ColumnBasis:
    """Orthonormal U (n x r, float64) of a task vector's kept column space, with its spectrum."""

    U: torch.Tensor
    singular_values: torch.Tensor
    total_energy: float

    @property
    def rank(self) -> int:
        return self.U.shape[1]

    @property
    def kept_energy(self) -> float:
        """Fraction of ||W||_F^2 inside the kept directions."""
        if self.total_energy <= 0:
            return 0.0
        return float(self.singular_values[: self.rank].double().square().sum()) / self.total_energy


def column_basis(vector: TaskVector, rank: str | int | RankRule | None = "full", svd: str = "auto") -> ColumnBasis:
    """Truncated left singular vectors of one task vector (eq. 6 with METHOD.md's rank rule).

    ``svd`` picks the route (see :func:`svd_route`): ``full`` (exact SVD), ``gram`` (float64 eigendecomposition
    of the smaller Gram matrix; exact to the precision of float32/bf16 inputs, about 3x faster), ``randomized``
    (for a fixed target rank far below min(n, m)), or ``auto``. LoRA factors go through QR of B and the SVD of
    the small ``R_B A`` in O((n + m) r^2).
    """
    rule = parse_rank(rank)
    if svd not in SVD_BACKENDS:
        raise ValueError(f"svd={svd!r}: use one of {', '.join(SVD_BACKENDS)}")
    if isinstance(vector, LoRAFactors):
        return _lora_basis(vector, rule)
    if vector.dim() != 2:
        raise ValueError(f"column_basis takes a 2-D matrix, got shape {tuple(vector.shape)}")
    rtol = zero_rtol(vector.dtype, tuple(vector.shape))
    route = svd_route(tuple(vector.shape), rule, svd, vector.dtype)
    w = vector.detach().to(torch.float64)
    shape = (w.shape[0], w.shape[1])
    if route == "gram":
        return _gram_basis(w, rule, rtol)
    total = float(w.square().sum())
    if route == "randomized":
        target = rule.target_rank(shape)
        if target is None:
            raise ValueError(f"svd='randomized' needs a rank rule with a target rank (fixed or ratio), got '{rule}'")
        q = min(min(shape), target + 10)
        with torch.random.fork_rng(devices=[w.device] if w.is_cuda else []):
            torch.manual_seed(RANDOMIZED_SEED)  # the same basis for the same matrix, whatever ran before
            u, s, _ = torch.svd_lowrank(w, q=q, niter=4)
    else:
        u, s, _ = torch.linalg.svd(w, full_matrices=False)
    r = rule.select(s, shape, total_energy=total, rtol=rtol)
    return ColumnBasis(u[:, :r].contiguous(), s, total)


def svd_route(shape: tuple[int, ...], rule: RankRule, svd: str, dtype: torch.dtype = torch.float64) -> str:
    """The route :func:`column_basis` takes: ``full``, ``gram`` or ``randomized`` (``svd`` unless it is ``auto``).

    ``auto`` takes the Gram route when the input's own precision (float32, bf16, fp16) cannot resolve the energy of
    any direction the Gram route drops, unless a small target rank makes the randomized SVD cheaper; float64 inputs get
    the exact SVD, or the randomized one for a small target rank.
    """
    if svd != "auto":
        return svd
    target = rule.target_rank((shape[0], shape[1]))
    small_target = target is not None and 4 * (target + 10) < min(shape)
    low_precision = dtype.is_floating_point and torch.finfo(dtype).eps >= torch.finfo(torch.float32).eps
    if low_precision and not (small_target and min(shape) > 20 * (target + 10)):
        return "gram"
    return "randomized" if small_target else "full"


def _gram_basis(w: torch.Tensor, rule: RankRule, rtol: float) -> ColumnBasis:
    """Left singular vectors from the eigendecomposition of W W^T (n <= m) or W^T W (n > m), in float64."""
    n, m = w.shape
    gram = w @ w.T if n <= m else w.T @ w
    total = float(gram.diagonal().sum())  # ||W||_F^2
    evals, evecs = torch.linalg.eigh(gram)
    s = evals.flip(0).clamp_min(0).sqrt()
    evecs = evecs.flip(1)
    r = rule.select(s, (n, m), total_energy=total, rtol=max(rtol, GRAM_MIN_RTOL))
    if n <= m:
        u = evecs[:, :r]
    else:  # u_j = W v_j / sigma_j, then one QR so the columns are orthonormal to machine precision
        u, _ = torch.linalg.qr(w @ (evecs[:, :r] / s[:r]))
    return ColumnBasis(u.contiguous(), s, total)


def _lora_basis(lora: LoRAFactors, rule: RankRule) -> ColumnBasis:
    b = lora.B.detach().to(torch.float64)
    a = lora.A.detach().to(torch.float64)
    q, r_b = torch.linalg.qr(b)
    u_small, s, _ = torch.linalg.svd(lora.scale * (r_b @ a), full_matrices=False)
    total = float(s.square().sum())
    kept = rule.select(s, lora.shape, total_energy=total, rtol=zero_rtol(lora.dtype, lora.shape))
    return ColumnBasis((q @ u_small[:, :kept]).contiguous(), s, total)
