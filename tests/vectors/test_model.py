import pytest
import torch

from devec import LoRAFactors, decompose
from devec.engine import iterative, pairwise
from devec.vectors import DecompositionSettings, ParamPolicy, decompose_model
from tests.conftest import planted


def _pool(k: int = 3):
    mats, _ = planted(n=24, m=12, shared=3, unique=3, k=k, seed=0)
    convs, _ = planted(n=12, m=4 * 3 * 3, shared=2, unique=2, k=k, seed=1)
    gen = torch.Generator().manual_seed(2)
    return [
        {"block.weight": mats[i].float(), "conv.weight": convs[i].float().reshape(12, 4, 3, 3),
         "block.bias": torch.randn(24, generator=gen), "tok_embeddings.weight": torch.randn(30, 12, generator=gen)}
        for i in range(k)
    ]


def test_joint_matches_engine_and_policies_apply():
    pool = _pool()
    md = decompose_model(pool, mode="joint", rank="full", progress=False,
                         policy=ParamPolicy(vectors="average", embeddings="pass_through"))
    d = decompose([tv["block.weight"] for tv in pool], rank="full")
    for i, tv in enumerate(pool):
        torch.testing.assert_close(md.unique[i]["block.weight"], d.unique[i])
        for name, v in tv.items():  # shared + unique = task vector for every parameter and policy
            torch.testing.assert_close(md.shared[i][name] + md.unique[i][name], v, atol=1e-6, rtol=0)
    mean_bias = torch.stack([tv["block.bias"] for tv in pool]).mean(0)
    torch.testing.assert_close(md.merged_shared["block.bias"], mean_bias)
    assert md.shared[0]["tok_embeddings.weight"].abs().max() == 0  # pass_through: all unique
    assert md.unique[0]["conv.weight"].shape == (12, 4, 3, 3)  # conv reshaped and restored
    rows = {r["name"]: r for r in md.report}
    assert rows["block.weight"]["shared_dim"] == 3 and rows["conv.weight"]["shared_dim"] == 2
    assert rows["block.bias"]["action"] == "average" and rows["tok_embeddings.weight"]["action"] == "pass_through"


def test_pairwise_keeps_reshaped_weights_dense_in_their_shape_and_stores_factors():
    pool = _pool(3)
    md = decompose_model(pool, mode="pairwise", rank="full", progress=False)
    for pair, state in zip(sorted(md.pairwise_shared), md.pairwise_dense(), strict=True):
        conv = md.pairwise_shared[pair]["conv.weight"]
        assert isinstance(conv, torch.Tensor) and conv.shape == (12, 4, 3, 3)
        assert isinstance(md.pairwise_shared[pair]["block.weight"], LoRAFactors)
        assert all(isinstance(v, torch.Tensor) and v.shape == pool[0][k].shape for k, v in state.items())


def test_pairwise_and_iterative_match_engine_and_exclude_drops_parameters():
    pool = _pool(4)
    policy = ParamPolicy(vectors="exclude", exclude=(r"^conv\.",))
    md = decompose_model(pool, mode="pairwise", rank="full", policy=policy, progress=False)
    assert len(md.pairwise_shared) == 6
    engine = pairwise([tv["block.weight"] for tv in pool], rank="full")
    dense = dict(zip(sorted(md.pairwise_shared), md.pairwise_dense(), strict=True))
    rows = {r["name"]: r for r in md.report}
    for pair, v in engine.items():
        kept = md.pairwise_shared[pair]["block.weight"]  # a matrix's pairwise part stays factored, of rank d
        assert isinstance(kept, LoRAFactors) and kept.B.shape[1] <= rows["block.weight"]["shared_dim_max"]
        torch.testing.assert_close(dense[pair]["block.weight"], v)
    assert "block.bias" not in md.pairwise_shared[(0, 1)]  # excluded: not edited
    assert md.pairwise_shared[(0, 1)]["conv.weight"].abs().max() == 0  # name-excluded matrix: passed through
    it = decompose_model(pool, mode="iterative", rank="full", target=2, progress=False)
    others = [tv["block.weight"] for i, tv in enumerate(pool) if i != 2]
    expected = iterative(pool[2]["block.weight"], others, rank="full")
    torch.testing.assert_close(it.unique_target["block.weight"], expected)


def test_lora_values_stay_in_factor_form():
    gen = torch.Generator().manual_seed(3)
    common = torch.randn(16, 2, generator=gen)
    pool = [{"attn.to_q": LoRAFactors(torch.cat([common, torch.randn(16, 2, generator=gen)], 1),
                                      torch.randn(4, 10, generator=gen), 1.0)} for _ in range(3)]
    md = decompose_model(pool, mode="joint", rank="full", progress=False)
    assert isinstance(md.unique[0]["attn.to_q"], LoRAFactors)
    assert md.report[0]["shared_dim"] == 2


def test_include_patterns_and_near_identity_warning(caplog):
    pool = [{"a.weight": torch.randn(6, 40), "b.weight": torch.randn(6, 40)} for _ in range(2)]
    md = decompose_model(pool, rank="full", policy=ParamPolicy(include=(r"^a\.",)), progress=False)
    rows = {r["name"]: r for r in md.report}
    assert rows["a.weight"]["action"] == "decompose" and rows["b.weight"]["action"] == "pass_through"
    assert rows["a.weight"]["near_identity"] is True
    assert "nearly the" in caplog.text and "a.weight" in caplog.text


def test_bad_arguments():
    pool = _pool(2)
    with pytest.raises(ValueError, match="decomposition.mode"):
        decompose_model(pool, mode="sideways", progress=False)
    with pytest.raises(ValueError, match="target=5"):
        decompose_model(pool, mode="iterative", target=5, progress=False)
    with pytest.raises(ValueError, match="at least two"):
        decompose_model(pool[:1], progress=False)
    with pytest.raises(ValueError, match="policy.vectors"):
        ParamPolicy(vectors="keep")
    with pytest.raises(ValueError, match="different parameters"):
        decompose_model([pool[0], {"x": torch.zeros(2, 2)}], progress=False)


def test_settings_are_validated_once_from_the_config():
    cfg = {"mode": "pairwise", "tau": 0.8, "rank": "energy:0.9", "method": "lowrank", "svd": "auto", "cache": False,
           "policy": {"vectors": "average"}}
    s = DecompositionSettings.from_config(cfg, target=1)
    assert (s.mode, s.tau, s.target, s.policy.vectors, s.cache) == ("pairwise", 0.8, 1, "average", False)
    assert s.replace(mode="joint").mode == "joint" and "cache" not in s.key()
    for key, bad in [("mode", "sideways"), ("tau", 1.5), ("tau", True), ("rank", "energy:x"), ("method", "fast"),
                     ("svd", "qr"), ("cache", "yes")]:
        with pytest.raises(ValueError):
            DecompositionSettings.from_config({**cfg, key: bad})


def test_stored_units_round_trip_lora_and_dense_components(tmp_path):
    from devec.resume import UnitStore

    gen = torch.Generator().manual_seed(4)
    lora = [{"blocks.0.to_q": LoRAFactors(torch.randn(12, 3, generator=gen), torch.randn(3, 8, generator=gen), 0.5),
             "blocks.1.to_q": LoRAFactors(torch.randn(12, 2, generator=gen), torch.randn(2, 8, generator=gen), 1.0),
             "blocks.1.bias": torch.randn(12, generator=gen)} for _ in range(3)]
    fresh = decompose_model(lora, mode="joint", rank="full", progress=False)
    store = UnitStore(tmp_path)
    decompose_model(lora, mode="joint", rank="full", store=store, progress=False)
    loaded = decompose_model(lora, mode="joint", rank="full", store=UnitStore(tmp_path), progress=False,
                             on_unit=lambda unit: pytest.fail(f"{unit} was computed again"))
    assert loaded.report == fresh.report
    for got, want in zip(loaded.unique + [loaded.merged_shared], fresh.unique + [fresh.merged_shared], strict=True):
        for name, v in want.items():
            assert type(got[name]) is type(v)
            torch.testing.assert_close(got[name].dense() if isinstance(v, LoRAFactors) else got[name],
                                       v.dense() if isinstance(v, LoRAFactors) else v, rtol=0, atol=0)
