"""The pool config: hub-style entries resolved to local checkpoints, sub-pools in extraction order, clear errors."""

from __future__ import annotations

import pytest

from devec.toxicity.pool import load_pool


def _cfg(pool, **extra):
    members = {"toxic": {"repo": pool["toxic"], "kind": "dora"}}
    members.update({n: {"repo": m["path"], "kind": m["kind"]} for n, m in pool["members"].items()})
    cfg = {"_target_": "devec.toxicity.pool.HubPool", "base": pool["base"], "toxic": "toxic", "members": members,
           "subpools": {"Pair": ["ft1", "ft0"], "Random": {"random": 2, "seed": 0}}}
    cfg.update(extra)
    return cfg


def test_local_entries_and_subpools(synthetic_pool, tmp_path):
    pool = load_pool(_cfg(synthetic_pool), tmp_path)
    assert pool.toxic.kind == "dora" and pool.base == synthetic_pool["base"]
    assert [s.name for s in pool.subpool("Pair")] == ["ft1", "ft0"]
    random_names = [s.name for s in pool.subpool("Random")]
    assert len(set(random_names)) == 2 and random_names == [s.name for s in pool.subpool("Random")]
    with pytest.raises(ValueError, match="Pair"):
        pool.subpool("Nope")


def test_missing_toxic_adapter_says_how_to_train_it(synthetic_pool, tmp_path):
    cfg = _cfg(synthetic_pool)
    cfg["members"]["toxic"]["repo"] = str(tmp_path / "not-trained-yet")
    with pytest.raises(FileNotFoundError, match="toxicity_train_dora"):
        load_pool(cfg, tmp_path)


def test_subpool_with_unknown_member(synthetic_pool, tmp_path):
    pool = load_pool(_cfg(synthetic_pool, subpools={"Bad": ["ft0", "llama2_chat"]}), tmp_path)
    with pytest.raises(ValueError, match="llama2_chat"):
        pool.subpool("Bad")
