"""Column-space bases of task vectors: the U_i of eq. 6, truncated by a rank rule."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from devec.engine.rank import RankRule, parse_rank, zero_rtol

SVD_BACKENDS = ("auto", "full", "gram", "randomized")
RANDOMIZED_SEED = 0
GRAM_MIN_RTOL = 1e-6  # the Gram route resolves sigma_j / sigma_1 down to about sqrt(eps_64 * n): well below this
# Below GRAM_MIN_RTOL * sigma_1 a direction holds under 1e-12 of sigma_1^2: less than float32's own resolution
# of the energy (eps_32 ~ 1.2e-7), so for float32/bf16/fp16 inputs the Gram route loses nothing they resolve.
GRAM_CHUNK_BYTES = 32 * 2**20  # the Gram route converts W to float64 in blocks of about this size, never whole
GRAM_BLOCK = 512  # rows per block of the Gram's lower triangle: ~n^2 m (1 + 512 / n) flops, not 2 n^2 m


@dataclass
class LoRAFactors:
    """A low-rank task vector ``W = scale * B @ A`` (B: n x r, A: r x m), never formed densely."""

    B: torch.Tensor
    A: torch.Tensor
    scale: float = 1.0

    def __post_init__(self) -> None:
        self.scale = _real_scale(self.scale)
        b = _as_real_tensor(self.B, "LoRA factor B")
        a = _as_real_tensor(self.A, "LoRA factor A")
        if b.dtype != a.dtype:  # one precision for both factors: the wider of the two
            common = torch.promote_types(b.dtype, a.dtype)
            b, a = b.to(common), a.to(common)
        self.B, self.A = b, a
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

    @property
    def device(self) -> torch.device:
        return self.B.device

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

KEPT_DTYPES = (torch.float64, torch.float32, torch.bfloat16, torch.float16)


def _real_scale(scale: object) -> float:
    """A LoRA scale as a finite Python float; anything else is a ValueError."""
    if isinstance(scale, torch.Tensor | np.ndarray) and scale.ndim == 0:
        scale = scale.item()
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not math.isfinite(float(scale)):
        raise ValueError(f"LoRA scale must be a finite real number (e.g. alpha / rank), got {scale!r}")
    return float(scale)


def _as_real_tensor(value: object, what: str) -> torch.Tensor:
    """``value`` as a real floating tensor, by the policy of :func:`as_task_vector` (no finiteness check)."""
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise ValueError(f"{what} is a numpy array of Python objects; pass a numeric array or a torch.Tensor")
        value = torch.as_tensor(value)
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{what} is a {type(value).__name__}; pass a torch.Tensor, a numpy array or LoRAFactors")
    if value.is_complex():
        raise ValueError(f"{what} is complex ({value.dtype}); DeVec takes real task vectors: pass the real part "
                         "explicitly (t.real) if that is what you mean")
    if not value.is_floating_point():  # bool and integers: exact in float64 up to 2**53, never truncated back
        return value.to(torch.float64)
    if value.dtype not in KEPT_DTYPES:  # float8 and other storage-only types: the engine computes in float32
        return value.to(torch.float32)
    return value


def _label(name: str = "", index: int | None = None) -> str:
    """'task vector 3 for parameter 'w'' style prefix for error messages."""
    where = f" for parameter {name!r}" if name else ""
    return f"task vector{'' if index is None else f' {index}'}{where}"


def as_task_vector(vector: object, name: str = "", index: int | None = None,
                   check_finite: bool = True) -> TaskVector:
    """One task vector as the engine takes it, or a ValueError that names it (``index`` in its pool, ``name``).

    Policy: a ``torch.Tensor`` or :class:`LoRAFactors`; a numpy array is converted with ``torch.as_tensor``
    (memory shared); anything else is refused. Bool and integer dtypes become float64 (exact up to 2**53; results
    are float64, never truncated to integers); complex dtypes are refused; float64/32, bf16 and fp16 are kept as
    they are, other floating types (float8) become float32. The vector must be 2-D, and (``check_finite``, one
    read pass) free of NaN and Inf; a LoRA scale must be a finite real number (checked by :class:`LoRAFactors`).
    """
    label = _label(name, index)
    if isinstance(vector, LoRAFactors):
        out = vector
    else:
        out = _as_real_tensor(vector, label)
        if out.dim() != 2:
            raise ValueError(f"{label} is not a matrix (shape {tuple(out.shape)}): the engine takes 2-D tensors; "
                             "reshape it first")
    if check_finite and not all(all_finite(p) for p in _parts(out)):
        raise ValueError(f"{label} contains NaN or Inf")
    return out


def as_task_vectors(vectors: Iterable[object], name: str = "", check_finite: bool = True) -> list[TaskVector]:
    """A pool of same-shape task vectors as a list, each by :func:`as_task_vector`'s policy, or a ValueError.

    ``vectors`` may be any iterable (list, tuple, generator), read once; a single tensor, array, LoRA or a mapping
    is refused (pass ``list(stacked)`` or ``list(d.values())``). All must be dense or all LoRA factors, on one
    device, of one shape. Mixed float dtypes are kept: each basis uses its own precision's zero threshold and
    :func:`devec.engine.decompose` computes and returns components in :func:`pool_dtype`. The finiteness check
    runs last, after every cheap check, so a malformed pool fails before any tensor is read.
    """
    where = f" for parameter {name!r}" if name else ""
    if isinstance(vectors, torch.Tensor | np.ndarray | LoRAFactors | str | bytes | Mapping) or not isinstance(
            vectors, Iterable):
        hint = " (use list(stacked) for a stacked k x n x m tensor)" if hasattr(vectors, "shape") else ""
        raise ValueError(f"the pool{where} must be a list, tuple or other iterable of task vectors (2-D tensors or "
                         f"LoRAFactors), got a {type(vectors).__name__}{hint}")
    pool = [as_task_vector(v, name, i, check_finite=False) for i, v in enumerate(vectors)]
    lora = [i for i, v in enumerate(pool) if isinstance(v, LoRAFactors)]
    if lora and len(lora) != len(pool):
        dense = [i for i in range(len(pool)) if i not in lora]
        raise ValueError(f"the pool{where} mixes LoRA factors (task vectors {lora}) and dense tensors (task vectors "
                         f"{dense}); pass all as LoRAFactors, or all dense (LoRAFactors.dense())")
    _check_same(pool, lambda v: tuple(v.shape), "different shapes", where)
    _check_same(pool, lambda v: _parts(v)[0].device, "are on different devices", where, "move them to one device")
    if check_finite:
        require_finite(pool, name)
    return pool


def require_finite(pool: Sequence[TaskVector], name: str = "") -> None:
    """ValueError naming the first task vector (index, parameter ``name``) holding NaN or Inf; one read pass."""
    for i, v in enumerate(pool):
        if not all(all_finite(p) for p in _parts(v)):
            raise ValueError(f"{_label(name, i)} contains NaN or Inf")


def _check_same(pool: list[TaskVector], key, what: str, where: str, fix: str = "") -> None:
    """ValueError naming the indices per distinct ``key`` when the pool's vectors disagree on it."""
    groups: dict[object, list[int]] = {}
    for i, v in enumerate(pool):
        groups.setdefault(key(v), []).append(i)
    if len(groups) > 1:
        detail = "; ".join(f"{k}: task vectors {idx}" for k, idx in groups.items())
        verb = "have " if what.startswith("different") else ""
        raise ValueError(f"task vectors{where} {verb}{what}: {detail}" + (f"; {fix}" if fix else ""))


def pool_dtype(vectors: Iterable[TaskVector]) -> torch.dtype:
    """The dtype a pool's results come in: ``torch.promote_types`` of every vector's dtype (bf16 + fp16 -> float32)."""
    dtypes = {v.dtype for v in vectors}
    out = dtypes.pop()
    for d in dtypes:
        out = torch.promote_types(out, d)
    return out


def all_finite(t: torch.Tensor) -> bool:
    """No NaN or Inf in ``t``. A plain sum is NaN or Inf whenever an entry is, so a finite sum settles it in one
    read pass; only a sum that overflowed goes on to the elementwise check."""
    if not t.is_floating_point() or math.isfinite(float(t.sum())):
        return True
    return bool(torch.isfinite(t).all())


def _parts(v: TaskVector) -> tuple[torch.Tensor, ...]:
    return (v.B, v.A) if isinstance(v, LoRAFactors) else (v,)


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
    of the smaller Gram matrix, built from float64 blocks of W without a float64 copy of it; exact to the precision
    of float32/bf16 inputs, about 3x faster), ``randomized`` (for a fixed target rank far below min(n, m)), or
    ``auto``. LoRA factors go through QR of B and the SVD of the small ``R_B A`` in O((n + m) r^2). ``vector`` is
    checked by :func:`as_task_vector` (one read pass).
    """
    rule = parse_rank(rank)
    if svd not in SVD_BACKENDS:
        raise ValueError(f"svd={svd!r}: use one of {', '.join(SVD_BACKENDS)}")
    return _column_basis(as_task_vector(vector), rule, svd)


def _column_basis(vector: TaskVector, rule: RankRule, svd: str) -> ColumnBasis:
    """:func:`column_basis` of a vector :func:`as_task_vector` already accepted."""
    if isinstance(vector, LoRAFactors):
        return _lora_basis(vector, rule)
    rtol = zero_rtol(vector.dtype, tuple(vector.shape))
    route = svd_route(tuple(vector.shape), rule, svd, vector.dtype)
    if route == "gram":  # float64 one block at a time: no full float64 copy of W
        return _gram_basis(vector.detach(), rule, rtol)
    w = vector.detach().to(torch.float64)
    shape = (w.shape[0], w.shape[1])
    total = _finite_energy(float(w.square().sum()))
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
    """Left singular vectors from the eigendecomposition of W W^T (n <= m) or W^T W (n > m), in float64.

    ``w`` keeps its own dtype: :func:`_gram_lower` and :func:`_matmul_f64` convert it to float64 one block at a
    time, so the extra memory is the Gram matrix and one block, not a float64 copy of W (360 MB at 11008 x 4096).
    """
    n, m = w.shape
    gram = _gram_lower(w if n <= m else w.T)
    total = _finite_energy(float(gram.diagonal().sum()))  # ||W||_F^2; finite, so is every entry of the Gram
    evals, evecs = torch.linalg.eigh(gram, UPLO="L")  # only the lower triangle is filled
    del gram
    s = evals.flip(0).clamp_min(0).sqrt()
    evecs = evecs.flip(1)
    r = rule.select(s, (n, m), total_energy=total, rtol=max(rtol, GRAM_MIN_RTOL))
    if n <= m:
        u = evecs[:, :r]
    else:  # u_j = W v_j / sigma_j, then one QR so the columns are orthonormal to machine precision
        u, _ = torch.linalg.qr(_matmul_f64(w, evecs[:, :r] / s[:r]))
    return ColumnBasis(u.contiguous(), s, total)


def _chunk(rows: int) -> int:
    """How many float64 vectors of length ``rows`` fit in GRAM_CHUNK_BYTES (at least one)."""
    return max(1, GRAM_CHUNK_BYTES // (8 * max(rows, 1)))


def _gram_lower(a: torch.Tensor) -> torch.Tensor:
    """The lower triangle of ``a @ a.T`` in float64 (upper triangle zero), ``a`` converted a block of columns at a
    time: a blocked symmetric rank-k update, about half the multiplications of the full product."""
    n, m = a.shape
    gram = torch.zeros(n, n, dtype=torch.float64, device=a.device)
    edges = list(range(0, n, GRAM_BLOCK)) + [n]
    step = _chunk(n)
    for j in range(0, m, step):
        c = a[:, j: j + step].to(torch.float64)
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):  # row block lo:hi, columns 0:hi (lower part)
            gram[lo:hi, :hi].addmm_(c[lo:hi], c[:hi].T)
    return gram


def _matmul_f64(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``w @ x`` in float64 for a float64 ``x``, ``w`` converted a block of rows at a time."""
    out = torch.empty(w.shape[0], x.shape[1], dtype=torch.float64, device=x.device)
    step = _chunk(w.shape[1])
    for i in range(0, w.shape[0], step):
        torch.mm(w[i: i + step].to(torch.float64), x, out=out[i: i + step])
    return out


def _lora_basis(lora: LoRAFactors, rule: RankRule) -> ColumnBasis:
    b = lora.B.detach().to(torch.float64)
    a = lora.A.detach().to(torch.float64)
    q, r_b = torch.linalg.qr(b)
    u_small, s, _ = torch.linalg.svd(lora.scale * (r_b @ a), full_matrices=False)
    total = _finite_energy(float(s.square().sum()))
    kept = rule.select(s, lora.shape, total_energy=total, rtol=zero_rtol(lora.dtype, lora.shape))
    return ColumnBasis((q @ u_small[:, :kept]).contiguous(), s, total)


def _finite_energy(total: float) -> float:
    """||W||_F^2 in float64, or a ValueError when it overflows (entries near float64's maximum, or a huge scale)."""
    if not math.isfinite(total):
        raise ValueError("the task vector's squared Frobenius norm overflows float64 (entries or LoRA scale near "
                         f"{torch.finfo(torch.float64).max:.1e}); rescale it, e.g. divide it by its largest entry")
    return total
