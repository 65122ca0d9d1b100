"""The Gram route builds W W^T / W^T W from float64 blocks of W: same bases and spectra as the whole float64 copy,
without ever holding that copy (issue 15, item 5)."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from devec import column_basis, principal_angles
from devec.engine import basis as basis_mod
from devec.engine.rank import parse_rank, zero_rtol

PLANTED = 12  # planted column rank; the spectrum decays from 1 to 0.1 over these, then a gap to the noise


def gram_basis_before(vector: torch.Tensor, rank: str) -> basis_mod.ColumnBasis:
    """The Gram route as it was before blocks: one float64 copy of W, then the full product (the reference)."""
    rule = parse_rank(rank)
    rtol = max(zero_rtol(vector.dtype, tuple(vector.shape)), basis_mod.GRAM_MIN_RTOL)
    w = vector.to(torch.float64)
    n, m = w.shape
    gram = w @ w.T if n <= m else w.T @ w
    total = float(gram.diagonal().sum())
    evals, evecs = torch.linalg.eigh(gram)
    s = evals.flip(0).clamp_min(0).sqrt()
    evecs = evecs.flip(1)
    r = rule.select(s, (n, m), total_energy=total, rtol=rtol)
    u = evecs[:, :r] if n <= m else torch.linalg.qr(w @ (evecs[:, :r] / s[:r]))[0]
    return basis_mod.ColumnBasis(u.contiguous(), s, total)


def planted_matrix(n: int, m: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """A task-like n x m matrix: PLANTED directions with singular values 1 .. 0.1, plus 1e-4 noise, in ``dtype``."""
    gen = torch.Generator().manual_seed(seed)
    left, _ = torch.linalg.qr(torch.randn(n, PLANTED, generator=gen, dtype=torch.float64))
    right, _ = torch.linalg.qr(torch.randn(m, PLANTED, generator=gen, dtype=torch.float64))
    sigma = torch.logspace(0, -1, PLANTED, dtype=torch.float64)
    w = (left * sigma) @ right.T + 1e-4 * torch.randn(n, m, generator=gen, dtype=torch.float64) / m**0.5
    return w.to(dtype)


@pytest.fixture(params=["default", "small"])
def blocks(request, monkeypatch):
    """The default block sizes (one block at these sizes) and small ones that split W and the Gram unevenly."""
    if request.param == "small":
        monkeypatch.setattr(basis_mod, "GRAM_CHUNK_BYTES", 8 * 7 * 130, raising=False)  # 7 columns of 130 rows
        monkeypatch.setattr(basis_mod, "GRAM_BLOCK", 37, raising=False)
    return request.param


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("shape", [(301, 130), (130, 301)], ids=["tall", "wide"])
@pytest.mark.parametrize("rank", [f"fixed:{PLANTED}", "epsilon:0.01"])
def test_blocked_gram_matches_the_whole_float64_copy(blocks, dtype, shape, rank):
    w = planted_matrix(*shape, dtype)
    before = gram_basis_before(w, rank)
    after = column_basis(w, rank, svd="gram")
    assert after.U.dtype == torch.float64 and after.rank == before.rank == PLANTED
    scale = float(before.singular_values[0]) ** 2
    assert float((after.singular_values.square() - before.singular_values.square()).abs().max()) < 1e-12 * scale
    kept = slice(0, PLANTED)
    rel = (after.singular_values[kept] - before.singular_values[kept]).abs() / before.singular_values[kept]
    assert float(rel.max()) < 1e-12
    assert abs(after.total_energy - before.total_energy) < 1e-12 * before.total_energy
    assert float(principal_angles(after.U, before.U).max()) < 1e-9  # same subspace, up to sign and rotation
    eye = torch.eye(after.rank, dtype=torch.float64)
    assert float((after.U.T @ after.U - eye).abs().max()) < 1e-12


class Float64Sizes(TorchDispatchMode):
    """Records the element count of every float64 tensor an aten op returns (copies, products, factorizations)."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.sizes += [t.numel() for t in tree_leaves(out) if isinstance(t, torch.Tensor) and t.dtype == torch.float64]
        return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", [(3000, 90), (90, 3000)], ids=["tall", "wide"])
def test_gram_route_never_holds_a_float64_copy_of_the_matrix(monkeypatch, dtype, shape):
    monkeypatch.setattr(basis_mod, "GRAM_CHUNK_BYTES", 64 * 2**10, raising=False)  # 8192 float64 per block
    w = planted_matrix(*shape, dtype)
    with Float64Sizes() as seen:
        out = column_basis(w, f"fixed:{PLANTED}", svd="auto")  # float32 / bf16 take the Gram route
    n, m = shape
    allowed = max(8192, min(n, m) ** 2, n * out.rank)  # a block, the Gram, the basis
    assert max(seen.sizes) <= allowed < n * m // 2, f"a float64 tensor of {max(seen.sizes)} elements (W: {n * m})"
