import pytest
import torch

from devec import column_basis, decompose, parse_rank
from devec.engine import RankRule, iterative, joint, pairwise
from devec.engine.decompose import all_finite
from tests.conftest import planted


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [("full", "full", None), ("energy:0.9", "energy", 0.9), ("ratio:0.25", "ratio", 0.25), ("fixed:64", "fixed", 64),
     ("epsilon:1e-3", "epsilon", 1e-3), (" Energy:0.5 ", "energy", 0.5)],
)
def test_parse_rank_command_line_forms(text, kind, value):
    rule = parse_rank(text)
    assert (rule.kind, rule.value) == (kind, value)
    assert parse_rank(str(rule)) == rule


@pytest.mark.parametrize("bad", ["energy", "energy:0", "energy:1.5", "ratio:0", "fixed:0", "fixed:2.5", "epsilon:1",
                                 "full:3", "svd:3", "fixed:x"])
def test_rank_rules_that_keep_nothing_or_are_malformed_are_refused(bad):
    with pytest.raises(ValueError, match="rank rule"):
        parse_rank(bad)


def test_rank_rules_select_as_documented():
    s = torch.tensor([4.0, 2.0, 1.0, 0.5, 0.0], dtype=torch.float64)
    shape = (5, 10)
    assert RankRule("full").select(s, shape) == 4
    assert parse_rank("fixed:2").select(s, shape) == 2
    assert parse_rank("ratio:0.5").select(s, shape) == 3
    assert parse_rank("epsilon:0.3").select(s, shape) == 2  # 4, 2 > 1.2
    total = float(s.square().sum())  # 21.25
    assert parse_rank("energy:0.75").select(s, shape) == 1  # 16/21.25 = 0.753
    assert parse_rank("energy:0.95").select(s, shape) == 3  # 21/21.25 = 0.988
    assert parse_rank("energy:0.95").select(s[:2], shape, total_energy=total) == 2


def test_randomized_svd_finds_the_same_top_subspace():
    vectors, _ = planted(n=400, m=300, shared=10, unique=10, k=1, seed=0)
    exact = column_basis(vectors[0], "fixed:20", svd="full")
    fast = column_basis(vectors[0], "fixed:20", svd="auto")
    from devec import principal_angles

    assert fast.rank == exact.rank == 20
    assert principal_angles(exact.U, fast.U).max() < 1e-6
    with pytest.raises(ValueError, match="target rank"):
        column_basis(vectors[0], "energy:0.9", svd="randomized")


@pytest.mark.parametrize("tau", [0, -0.1, 1.01, float("nan")])
def test_tau_outside_unit_interval_is_refused(tau):
    vectors, _ = planted(20, 10, 2, 2, 2)
    with pytest.raises(ValueError, match="tau"):
        decompose(vectors, tau=tau)


def test_bad_pools_are_refused_with_clear_messages():
    a, b = torch.randn(6, 4), torch.randn(6, 5)
    with pytest.raises(ValueError, match="at least two"):
        decompose([a])
    with pytest.raises(ValueError, match="at least two"):
        decompose([])
    with pytest.raises(ValueError, match="different shapes"):
        decompose([a, b])
    bad = a.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        decompose([a, bad])
    inf = a.clone()
    inf[1, 1] = float("inf")
    with pytest.raises(ValueError, match="NaN or Inf"):
        decompose([inf, a])
    with pytest.raises(ValueError, match="not a matrix"):
        decompose([torch.randn(6), torch.randn(6)])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_all_finite_catches_every_nan_and_inf_and_survives_overflowing_sums(dtype):
    big = torch.full((8, 8), torch.finfo(dtype).max / 2, dtype=dtype)  # finite, but its plain sum overflows
    assert all_finite(big)
    assert all_finite(torch.zeros(0, 3, dtype=dtype))
    for bad in (float("nan"), float("inf"), float("-inf")):
        for base in (torch.randn(5, 7).to(dtype), big):
            t = base.clone()
            t[3, 4] = bad
            assert not all_finite(t)
    both = torch.randn(4, 4).to(dtype)
    both[0, 0], both[1, 1] = float("inf"), float("-inf")  # sum is NaN, not Inf
    assert not all_finite(both)


def test_modes_pairwise_count_and_iterative_removes_what_is_shared():
    vectors, truth = planted(n=60, m=40, shared=4, unique=4, k=4, seed=9)
    pairs = pairwise(vectors, rank="full")
    assert sorted(pairs) == [(i, j) for i in range(4) for j in range(i + 1, 4)]
    assert len(pairwise(planted(30, 20, 2, 2, 8)[0], rank="full")) == 28
    t_unique = iterative(vectors[0], vectors[1:], rank="full")
    # what T shares with the others (the planted directions) is gone; its own part stays
    assert (truth.T @ t_unique).abs().max() < 1e-9
    assert float(t_unique.norm()) > 0.1 * float(vectors[0].norm())
    j = joint(vectors, rank="full")
    torch.testing.assert_close(j.unique[0], t_unique, rtol=0, atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_full_rank_ignores_rounding_noise_of_the_input_dtype(dtype):
    vectors, _ = planted(n=40, m=30, shared=3, unique=4, k=1, seed=3)
    assert column_basis(vectors[0].to(dtype), "full").rank == 7


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_low_precision_tall_matrices_keep_their_rank(dtype):
    # max(n, m) * eps of bf16 is 9.4 here: a threshold that grows with n would call every direction noise
    vectors, _ = planted(n=1200, m=64, shared=5, unique=7, k=1, seed=5)
    assert column_basis(vectors[0].to(dtype), "full").rank == 12
    assert column_basis(vectors[0].to(dtype), "energy:0.999").rank >= 10


def test_randomized_svd_is_deterministic_and_leaves_global_rng_alone():
    vectors, _ = planted(n=300, m=200, shared=5, unique=5, k=1, seed=1, sigma=0.1)
    torch.manual_seed(123)
    first = column_basis(vectors[0], "fixed:10", svd="randomized")
    after = torch.rand(3)
    torch.manual_seed(123)
    torch.rand(50)  # a different global random state must not change the basis
    second = column_basis(vectors[0], "fixed:10", svd="randomized")
    assert torch.equal(first.U, second.U)
    torch.manual_seed(123)
    assert torch.equal(torch.rand(3), after)


@pytest.mark.parametrize("shape", [(300, 120), (120, 300)])
def test_gram_route_matches_the_exact_svd_for_float32_inputs(shape):
    from devec import principal_angles
    from devec.engine.basis import svd_route

    gen = torch.Generator().manual_seed(5)
    n, m = shape
    w = (torch.randn(n, 12, generator=gen) * torch.logspace(0, -3, 12)) @ torch.randn(12, m, generator=gen)
    w = w + 1e-6 * torch.randn(n, m, generator=gen)  # float32: a spectrum over the input's own rounding level
    assert svd_route(shape, parse_rank("energy:0.999"), "auto", torch.float32) == "gram"
    assert svd_route(shape, parse_rank("energy:0.999"), "auto", torch.float64) == "full"
    for rule in ("full", "energy:0.999", "epsilon:1e-2", "fixed:7"):
        gram, exact = column_basis(w, rule, svd="gram"), column_basis(w, rule, svd="full")
        assert gram.rank == exact.rank
        assert principal_angles(gram.U, exact.U).max() < 1e-8
        torch.testing.assert_close(gram.U.T @ gram.U, torch.eye(gram.rank, dtype=torch.float64), rtol=0, atol=1e-12)
