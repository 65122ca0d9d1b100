"""The engine API refuses bad inputs with a clear ValueError and never returns silently wrong numbers (issue 11.7)."""

import math
import re

import numpy as np
import pytest
import torch

from devec.cache import BasisCache
from devec.engine import (
    LoRAFactors,
    RankRule,
    as_task_vectors,
    check_pool,
    column_basis,
    decompose,
    iterative,
    joint,
    pairwise,
    parse_rank,
    principal_vector_basis,
    shared_subspace,
)
from devec.engine import basis as engine_basis
from tests.conftest import planted


def _lora(n: int = 12, m: int = 8, r: int = 3, seed: int = 0, scale: float = 1.0) -> LoRAFactors:
    gen = torch.Generator().manual_seed(seed)
    return LoRAFactors(torch.randn(n, r, generator=gen), torch.randn(r, m, generator=gen), scale)


def _finite(d) -> bool:
    parts = [d.merged_shared, *d.shared, *d.unique]
    return all(bool(torch.isfinite(t).all()) for t in parts)


@pytest.mark.parametrize("order", ["lora_first", "dense_first"])
def test_lora_and_dense_in_one_pool_is_refused_naming_the_indices(order):
    lora, dense = _lora(), torch.randn(12, 8)
    pool = [lora, dense, dense] if order == "lora_first" else [dense, dense, lora]
    lora_at, dense_at = ([0], [1, 2]) if order == "lora_first" else ([2], [0, 1])
    expected = re.escape(f"mixes LoRA factors (task vectors {lora_at}) and dense tensors (task vectors {dense_at})")
    with pytest.raises(ValueError, match=expected):
        decompose(pool)
    with pytest.raises(ValueError, match="parameter 'blocks.0.attn'"):
        check_pool(pool, 0.85, name="blocks.0.attn")


@pytest.mark.parametrize("scale", [float("nan"), float("inf"), True, "0.5", 1j, None])
def test_lora_scale_must_be_a_finite_real_number(scale):
    with pytest.raises(ValueError, match="LoRA scale must be a finite real number"):
        decompose([_lora(scale=scale), _lora(seed=1)])


def test_lora_scale_and_factors_are_normalised():
    b, a = np.random.default_rng(0).standard_normal((6, 2)), torch.randn(2, 5)
    lora = LoRAFactors(b, a, np.float32(0.5))  # numpy factor, numpy scale, mixed float64 / float32 factors
    assert type(lora.scale) is float and lora.scale == 0.5
    assert isinstance(lora.B, torch.Tensor) and lora.B.dtype == lora.A.dtype == torch.float64
    with pytest.raises(ValueError, match="complex"):
        LoRAFactors(torch.randn(6, 2, dtype=torch.complex64), torch.randn(2, 5))


@pytest.mark.parametrize("svd", ["auto", "full", "gram"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_into_column_basis_is_a_value_error(svd, bad):
    w = torch.randn(20, 10)
    w[3, 4] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        column_basis(w, "full", svd=svd)
    b = torch.randn(20, 2)
    b[0, 1] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        column_basis(LoRAFactors(b, torch.randn(2, 10)), "full")


def test_the_basis_cache_takes_what_the_engine_takes(tmp_path):
    """A numpy array or an integer matrix gives the cache the same basis as the engine; a 3-D tensor is refused."""
    w = torch.randn(20, 10, generator=torch.Generator().manual_seed(0))
    cache = BasisCache(tmp_path / "bases")
    torch.testing.assert_close(cache.column_basis(w.numpy(), "full").U.abs(), column_basis(w, "full").U.abs())
    ints = torch.randint(-5, 5, (20, 10), generator=torch.Generator().manual_seed(1))
    assert cache.column_basis(ints, "full").U.dtype == column_basis(ints, "full").U.dtype == torch.float64
    with pytest.raises(ValueError, match="2-D"):
        cache.column_basis(torch.randn(2, 3, 4), "full")


def test_nan_into_the_basis_cache_is_a_value_error_and_stores_nothing(tmp_path):
    w = torch.randn(20, 10)
    w[0, 0] = float("nan")
    cache = BasisCache(tmp_path / "bases")
    with pytest.raises(ValueError, match="NaN or Inf"):
        cache.column_basis(w, "full")
    assert not list((tmp_path / "bases").rglob("*.safetensors"))


def test_numpy_arrays_tuples_and_generators_are_pools(monkeypatch):
    vectors, _ = planted(n=30, m=20, shared=3, unique=3, k=3, seed=2)
    reference = decompose(vectors, rank="full")
    reads = []
    real = engine_basis.all_finite
    monkeypatch.setattr(engine_basis, "all_finite", lambda t: reads.append(1) or real(t))
    for pool in ([v.numpy() for v in vectors], tuple(vectors), (v for v in vectors)):
        reads.clear()
        d = decompose(pool, rank="full")
        assert len(reads) == len(vectors)  # validation reads each vector once per call, not per inner step
        assert d.shared_dim == reference.shared_dim == 3
        for got, want in zip(d.unique, reference.unique, strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    assert column_basis(vectors[0].numpy(), "full").rank == 6


def test_the_modes_take_generators_and_numpy_pools():
    """joint, pairwise and iterative validate through check_pool and use what it returns (a generator is read once)."""
    vectors, _ = planted(n=30, m=20, shared=3, unique=3, k=3, seed=2)
    assert joint((v for v in vectors), rank="full").shared_dim == 3
    assert len(pairwise((v for v in vectors), rank="full")) == 3
    want = iterative(vectors[0], vectors[1:], rank="full")
    got = iterative(vectors[0].numpy(), (v.numpy() for v in vectors[1:]), rank="full")
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("pool", "match"),
    [(torch.randn(3, 6, 4), r"list\(stacked\)"), (np.zeros((3, 6, 4)), r"list\(stacked\)"),
     ({"a": torch.randn(6, 4), "b": torch.randn(6, 4)}, "got a dict"), (None, "got a NoneType"),
     ([torch.randn(6, 4).tolist(), torch.randn(6, 4).tolist()], "task vector 0 is a list"),
     ([torch.randn(6, 4), "w.safetensors"], "task vector 1 is a str")],
)
def test_pools_of_the_wrong_kind_are_refused(pool, match):
    with pytest.raises(ValueError, match=match):
        decompose(pool)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_integer_and_bool_vectors_are_promoted_to_float64_not_truncated(dtype):
    gen = torch.Generator().manual_seed(4)
    vectors = [torch.randint(-3, 4, (16, 10), generator=gen).to(dtype) for _ in range(3)]
    d = decompose(vectors, tau=0.3, rank="full")
    exact = decompose([v.double() for v in vectors], tau=0.3, rank="full")
    assert d.merged_shared.dtype == torch.float64
    torch.testing.assert_close(d.merged_shared, exact.merged_shared, rtol=0, atol=1e-12)
    for s, u, v in zip(d.shared, d.unique, vectors, strict=True):
        assert s.dtype == u.dtype == torch.float64
        torch.testing.assert_close(s + u, v.double(), rtol=0, atol=1e-12)
    assert column_basis(vectors[0]).rank == column_basis(vectors[0].double()).rank


def test_complex_vectors_are_refused():
    vectors, _ = planted(n=12, m=8, shared=2, unique=2, k=2)
    with pytest.raises(ValueError, match="complex"):
        decompose([v.to(torch.complex128) for v in vectors])
    with pytest.raises(ValueError, match="complex"):
        column_basis(vectors[0].to(torch.complex64))


def test_mixed_dtypes_compute_and_return_in_the_promoted_dtype():
    vectors, _ = planted(n=40, m=30, shared=3, unique=4, k=3, seed=7)
    pool = [vectors[0].to(torch.bfloat16), vectors[1], vectors[2].float()]
    d = decompose(pool, tau=0.85, rank="full")
    assert d.merged_shared.dtype == torch.float64
    z = d.basis
    for s, u, v in zip(d.shared, d.unique, pool, strict=True):
        assert s.dtype == u.dtype == torch.float64
        w = v.double()
        # the projection is computed in float64, not in the first vector's bfloat16/float32 precision
        torch.testing.assert_close(s, z @ (z.T @ w), rtol=0, atol=1e-12 * float(w.norm()))
        torch.testing.assert_close(s + u, w, rtol=0, atol=1e-12 * float(w.norm()))
    assert as_task_vectors(pool)[0].dtype == torch.bfloat16  # each basis keeps its own precision's threshold


def test_values_near_the_float32_maximum_give_finite_outputs():
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(64, 3, generator=gen)
    base = [u @ torch.randn(3, 32, generator=gen) for _ in range(2)]
    factor = 3e38 / max(float(v.abs().max()) for v in base)
    big = [v * factor for v in base]  # float32, finite, entries up to 3e38: ||W||_F overflows float32
    d = decompose(big, tau=0.5, rank="full")
    small = decompose(base, tau=0.5, rank="full")
    assert d.shared_dim == small.shared_dim == 3 and _finite(d)
    assert d.shared_energy() == pytest.approx(small.shared_energy(), rel=1e-5)
    for got, want in zip(d.unique + d.shared + [d.merged_shared], small.unique + small.shared + [small.merged_shared],
                         strict=True):
        assert float((got.double() / factor - want.double()).norm()) <= 1e-5 * float(base[0].norm())


def test_components_that_overflow_a_half_precision_pool_are_a_value_error():
    # Z is the 22.5 degree direction of W_1; projecting W_2 = a (1, 1) onto it gives 1.207 a > float16's maximum
    t = math.pi / 8
    w1 = torch.tensor([[math.cos(t)] * 3, [math.sin(t)] * 3]).half()
    w2 = torch.full((2, 3), 6e4).half()
    with pytest.raises(ValueError, match="overflows torch.float16"):
        decompose([w1, w2], tau=0.5, rank="full")
    d = decompose([w1.float(), w2.float()], tau=0.5, rank="full")
    assert _finite(d) and float(d.shared[1].abs().max()) > torch.finfo(torch.float16).max


def test_a_squared_norm_that_overflows_float64_is_a_value_error():
    w = torch.full((6, 4), 1e300, dtype=torch.float64)
    for svd in ("full", "gram"):
        with pytest.raises(ValueError, match="overflows float64"):
            column_basis(w, "full", svd=svd)
    with pytest.raises(ValueError, match="overflows float64"):
        column_basis(_lora(scale=1e300).to(torch.float64), "full")


@pytest.mark.parametrize("tau", [True, False, "0.5", None, 1j, float("nan"), torch.tensor(0.5)])
def test_tau_must_be_a_real_number_in_the_unit_interval(tau):
    vectors, _ = planted(20, 10, 2, 2, 2)
    with pytest.raises(ValueError, match="tau"):
        decompose(vectors, tau=tau)
    with pytest.raises(ValueError, match="tau"):
        decompose(vectors, tau=tau, validate=False)
    with pytest.raises(ValueError, match="tau"):
        shared_subspace([torch.eye(20, 2, dtype=torch.float64)] * 2, tau)
    with pytest.raises(ValueError, match="tau"):
        principal_vector_basis(torch.eye(20, 2, dtype=torch.float64), torch.eye(20, 2, dtype=torch.float64), tau)


def test_rank_rules_refuse_bools_and_accept_numpy_integers():
    with pytest.raises(ValueError, match="rank rule"):
        decompose(planted(20, 10, 2, 2, 2)[0], rank=True)
    for value in (True, "0.9", None):
        with pytest.raises(ValueError, match="rank rule"):
            RankRule("energy", value)
    assert parse_rank(np.int64(8)) == RankRule("fixed", 8.0)
    with pytest.raises(ValueError, match="without a kind"):
        parse_rank(0.9)


def test_precomputed_bases_of_another_shape_are_refused():
    vectors, _ = planted(n=20, m=10, shared=2, unique=2, k=2)
    other = [column_basis(v) for v in planted(n=30, m=10, shared=2, unique=2, k=2)[0]]
    with pytest.raises(ValueError, match="precomputed bases"):
        decompose(vectors, bases=other)


def test_vectors_on_different_devices_are_refused_before_any_read():
    with pytest.raises(ValueError, match="different devices"):
        decompose([torch.randn(6, 4), torch.empty(6, 4, device="meta")])
