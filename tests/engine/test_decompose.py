import math

import numpy as np
import pytest
import scipy.linalg
import torch

from devec import LoRAFactors, column_basis, decompose, principal_angles, principal_vector_basis
from devec.engine import orthonormal_basis, shared_subspace
from tests.conftest import planted


@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("method", ["lowrank", "dense"])
def test_recovers_planted_shared_subspace(k, method):
    vectors, truth = planted(n=96, m=64, shared=6, unique=5, k=k, seed=k)
    d = decompose(vectors, tau=0.85, rank="full", method=method)
    assert d.shared_dim == 6
    assert principal_angles(d.basis, truth).max() < 1e-8


def test_shared_plus_unique_is_the_task_vector_and_basis_is_orthonormal():
    vectors, _ = planted(n=80, m=50, shared=5, unique=7, k=4, seed=1, sigma=0.01)
    d = decompose(vectors, tau=0.85, rank="energy:0.95")
    for s, u, w in zip(d.shared, d.unique, vectors, strict=False):
        torch.testing.assert_close(s + u, w, rtol=0, atol=1e-12)
        # unique lies in the orthogonal complement of the shared subspace
        assert (d.basis.T @ u).abs().max() < 1e-10
    gram = d.basis.T @ d.basis
    torch.testing.assert_close(gram, torch.eye(d.shared_dim, dtype=gram.dtype), rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_inputs_split_to_their_own_precision(dtype):
    vectors, _ = planted(n=120, m=90, shared=6, unique=5, k=3, seed=4, sigma=0.01)
    exact = decompose(vectors, tau=0.85, rank="energy:0.95")
    low = decompose([v.to(dtype) for v in vectors], tau=0.85, rank="energy:0.95")
    eps = torch.finfo(dtype).eps
    assert low.shared_dim == exact.shared_dim
    for s, u, w, s64 in zip(low.shared, low.unique, vectors, exact.shared, strict=True):
        assert s.dtype == u.dtype == dtype
        scale = float(w.norm())
        assert float((s.double() + u.double() - w.to(dtype).double()).norm()) <= 4 * eps * scale
        assert float((s.double() - s64).norm()) <= 50 * eps * scale
        assert float((low.basis.T @ u.double()).norm()) <= 50 * eps * scale
    assert float((low.merged_shared.double() - exact.merged_shared).norm()) <= 50 * eps * float(
        exact.merged_shared.norm())


@pytest.mark.parametrize("lora", [False, True])
def test_components_false_gives_the_same_merged_shared_without_the_full_size_parts(lora):
    vectors, _ = planted(n=50, m=40, shared=4, unique=3, k=3, seed=6)
    if lora:
        vectors = [LoRAFactors(*_factor(v)) for v in vectors]
    full = decompose(vectors, tau=0.85, rank="full")
    merged_only = decompose(vectors, tau=0.85, rank="full", components=False)
    dense = (lambda t: t.dense()) if lora else (lambda t: t)
    torch.testing.assert_close(dense(merged_only.merged_shared), dense(full.merged_shared), rtol=0, atol=1e-12)
    assert merged_only.shared_energy() == pytest.approx(full.shared_energy(), abs=1e-12)
    if not lora:
        assert merged_only.shared == [] and merged_only.unique == []


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_factored_merged_shared_is_rank_d_and_equals_the_dense_one(dtype):
    vectors, _ = planted(n=50, m=40, shared=4, unique=3, k=2, seed=7)
    vectors = [v.to(dtype) for v in vectors]
    dense = decompose(vectors, tau=0.85, rank="full", components=False)
    factored = decompose(vectors, tau=0.85, rank="full", components=False, factored=True)
    kept = factored.merged_shared
    assert isinstance(kept, LoRAFactors) and kept.dtype == dtype
    assert kept.B.shape == (50, dense.shared_dim) and kept.A.shape == (dense.shared_dim, 40)
    eps = torch.finfo(dtype).eps
    scale = float(dense.merged_shared.double().norm())
    assert float((kept.dense().double() - dense.merged_shared.double()).norm()) <= 50 * eps * scale
    assert factored.shared_energy() == pytest.approx(dense.shared_energy(), abs=10 * eps)


def test_factored_pool_that_shares_nothing_gives_an_empty_factor():
    gen = torch.Generator().manual_seed(0)
    q = torch.linalg.qr(torch.randn(40, 8, generator=gen, dtype=torch.float64))[0]
    a, b = q[:, :4] @ torch.randn(4, 30, generator=gen, dtype=torch.float64), q[:, 4:] @ torch.randn(
        4, 30, generator=gen, dtype=torch.float64)
    kept = decompose([a, b], tau=0.85, rank="full", components=False, factored=True).merged_shared
    assert kept.B.shape == (40, 0) and not kept.dense().any()


def _factor(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    u, s, vh = torch.linalg.svd(v, full_matrices=False)
    r = int((s > 1e-10 * s[0]).sum())
    return u[:, :r] * s[:r], vh[:r]


def test_merged_shared_is_frobenius_weighted_average():
    vectors, _ = planted(n=40, m=30, shared=4, unique=3, k=3, seed=2)
    vectors = [v * s for v, s in zip(vectors, (1.0, 3.0, 0.5), strict=False)]
    d = decompose(vectors, tau=0.85, rank="full")
    norms = [float(s.norm()) for s in d.shared]
    expected = sum(n * s for n, s in zip(norms, d.shared, strict=False)) / sum(norms)
    torch.testing.assert_close(d.merged_shared, expected)


def test_k2_eigenvalues_are_squared_cosines_of_principal_angles():
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(60, 40, generator=gen, dtype=torch.float64)
    b = torch.randn(60, 40, generator=gen, dtype=torch.float64)
    ba, bb = column_basis(a, "fixed:12"), column_basis(b, "fixed:9")
    sub = shared_subspace([ba.U, bb.U], tau=0.5)
    angles = scipy.linalg.subspace_angles(ba.U.numpy(), bb.U.numpy())  # descending angles
    expected = np.sort(np.cos(angles) ** 2)[::-1]
    values = sub.eigenvalues.numpy()
    assert ((values >= 0) & (values <= 1)).all()
    np.testing.assert_allclose(values[: expected.size], expected, atol=1e-12)
    assert np.all(values[expected.size:] == 0)
    # the dense n x n chain has the same nonzero spectrum
    dense = shared_subspace([ba.U, bb.U], tau=0.5, method="dense").eigenvalues.numpy()
    np.testing.assert_allclose(dense[: expected.size], expected, atol=1e-10)


def test_principal_angles_match_scipy_including_tiny_angles():
    gen = torch.Generator().manual_seed(4)
    a = torch.randn(50, 6, generator=gen, dtype=torch.float64)
    b = a + 1e-9 * torch.randn(50, 6, generator=gen, dtype=torch.float64)
    c = torch.randn(50, 4, generator=gen, dtype=torch.float64)
    for x, y in ((a, b), (a, c)):
        ours = principal_angles(x, y).numpy()
        theirs = np.sort(scipy.linalg.subspace_angles(x.numpy(), y.numpy()))
        np.testing.assert_allclose(ours, theirs, atol=1e-14, rtol=1e-6)
    assert principal_angles(a, b).max() > 0  # resolved below sqrt(eps), not rounded to zero


def _eig_real_basis(vectors, r, tau):
    """The tempting route METHOD.md warns about: eig of the dense chain, then .real of the eigenvectors."""
    chain = None
    for w in vectors:
        u = torch.linalg.svd(w, full_matrices=False)[0][:, :r]
        chain = u @ u.T if chain is None else chain @ (u @ u.T)
    values, vecs = np.linalg.eig(chain.numpy())
    return torch.from_numpy(vecs[:, values.real > tau].real.copy())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_k3_near_degenerate_cluster_keeps_every_direction(seed):
    gen = torch.Generator().manual_seed(seed)
    n, d, u = 120, 20, 10
    q = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))[0]
    truth = q[:, :d]
    vectors = []
    for i in range(3):  # each task sees the shared directions slightly rotated: a cluster of eigenvalues near 1
        shared = torch.linalg.qr(truth + 0.004 * torch.randn(n, d, generator=gen, dtype=torch.float64))[0]
        own = q[:, d + u * i: d + u * (i + 1)]
        vectors.append(torch.cat([shared, own], 1) @ torch.randn(d + u, 80, generator=gen, dtype=torch.float64))
    naive = _eig_real_basis(vectors, d + u, 0.85)
    ours = decompose(vectors, tau=0.85, rank=f"fixed:{d + u}")
    dense = decompose(vectors, tau=0.85, rank=f"fixed:{d + u}", method="dense")
    # the naive route selects d eigenvectors but complex-conjugate pairs collapse under .real
    assert naive.shape[1] == d and torch.linalg.matrix_rank(naive) < d
    assert ours.shared_dim == d and dense.shared_dim == d
    assert math.degrees(principal_angles(ours.basis, truth).max()) < 10
    assert principal_angles(ours.basis, dense.basis).max() < 1e-6


def test_lowrank_and_dense_routes_agree():
    vectors, _ = planted(n=150, m=70, shared=8, unique=10, k=4, seed=5, sigma=0.02)
    lo = decompose(vectors, tau=0.85, rank="fixed:18", method="lowrank")
    de = decompose(vectors, tau=0.85, rank="fixed:18", method="dense")
    assert lo.shared_dim == de.shared_dim > 0
    assert principal_angles(lo.basis, de.basis).max() < 1e-6
    for a, b in zip(lo.unique, de.unique, strict=False):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-8)


def test_lora_factors_equal_dense_input_without_forming_the_product():
    gen = torch.Generator().manual_seed(6)
    n, m, r = 70, 50, 6
    common = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    loras = []
    for scale in (0.5, 2.0, 1.0):
        b = torch.cat([common, torch.randn(n, r - 3, generator=gen, dtype=torch.float64)], 1)
        loras.append(LoRAFactors(b, torch.randn(r, m, generator=gen, dtype=torch.float64), scale))
    fact = decompose(loras, tau=0.85, rank="full")
    dense = decompose([lo.dense() for lo in loras], tau=0.85, rank="full")
    assert fact.shared_dim == dense.shared_dim == 3
    assert all(isinstance(u, LoRAFactors) and u.B.shape == (n, r) for u in fact.unique)
    for a, b in zip(fact.unique + fact.shared, dense.unique + dense.shared, strict=False):
        torch.testing.assert_close(a.dense(), b, rtol=0, atol=1e-10)
    torch.testing.assert_close(fact.merged_shared.dense(), dense.merged_shared, rtol=0, atol=1e-10)
    assert abs(loras[0].norm() - float(loras[0].dense().norm())) < 1e-9


def test_theorem_61_first_side_equals_prop_31_and_others_stay_close():
    vectors, truth = planted(n=100, m=80, shared=10, unique=10, k=2, seed=7, sigma=0.05)
    bases = [column_basis(v, "fixed:20") for v in vectors]
    prop = decompose(vectors, tau=0.85, bases=bases).basis
    first = principal_vector_basis(bases[0].U, bases[1].U, 0.85, side="first")
    assert principal_angles(prop, first).max() < 1e-10
    for side in ("second", "bisector"):
        other = principal_vector_basis(bases[0].U, bases[1].U, 0.85, side=side)
        assert other.shape == prop.shape
        gram = other.T @ other
        torch.testing.assert_close(gram, torch.eye(other.shape[1], dtype=gram.dtype), rtol=0, atol=1e-10)
        assert 0 < math.degrees(principal_angles(prop, other).max()) < 30


def test_zero_vector_layer_shares_nothing():
    vectors = [torch.zeros(10, 8, dtype=torch.float64), torch.randn(10, 8, dtype=torch.float64)]
    d = decompose(vectors, tau=0.85)
    assert d.shared_dim == 0
    torch.testing.assert_close(d.unique[1], vectors[1])


def test_orthonormal_basis_drops_null_directions():
    a = torch.randn(20, 3, dtype=torch.float64)
    assert orthonormal_basis(torch.cat([a, a[:, :1] * 2], 1)).shape[1] == 3


@pytest.mark.parametrize("method", ["lowrank", "dense"])
@pytest.mark.parametrize("tau", [0.5, 0.85, 0.95])
def test_tau_keeps_exactly_the_directions_whose_squared_cosine_exceeds_it(method, tau):
    """Two subspaces with known principal angles: the shared dimension is #{cos^2 > tau} (eq. 10)."""
    gen = torch.Generator().manual_seed(11)
    q = torch.linalg.qr(torch.randn(60, 20, generator=gen, dtype=torch.float64))[0]
    cos = torch.tensor([0.999, 0.97, 0.9, 0.8, 0.6, 0.3, 0.1], dtype=torch.float64).sqrt()  # squared cosines
    a = q[:, :7]
    b = cos * q[:, :7] + (1 - cos**2).sqrt() * q[:, 7:14]  # b_j at angle arccos(cos_j) from a_j
    wa = a @ torch.randn(7, 30, generator=gen, dtype=torch.float64)
    wb = b @ torch.randn(7, 30, generator=gen, dtype=torch.float64)
    d = decompose([wa, wb], tau=tau, rank="full", method=method)
    assert d.shared_dim == int((cos**2 > tau).sum())
    np.testing.assert_allclose(d.eigenvalues[:7].numpy(), (cos**2).numpy(), atol=1e-10)


def test_iterative_stops_when_the_unique_part_is_exhausted():
    """Once the target's unique part is gone, later members share nothing with its rounding noise."""
    import torch

    from devec.engine.modes import iterative_result

    torch.manual_seed(0)
    basis = torch.linalg.qr(torch.randn(10, 3, dtype=torch.float64))[0]
    target = basis @ torch.randn(3, 8, dtype=torch.float64)
    same = basis @ torch.randn(3, 8, dtype=torch.float64)          # spans the whole target: removes all of it
    unrelated = [torch.randn(10, 8, dtype=torch.float64) for _ in range(3)]   # rank 8 of 10 rows
    r = iterative_result(target, [same, *unrelated], tau=0.85, rank="full")
    assert r.removed_dims[0] == 3
    assert r.removed_dims[1:] == [0, 0, 0]
    assert float(r.unique.norm()) < 1e-10 * float(target.norm())
