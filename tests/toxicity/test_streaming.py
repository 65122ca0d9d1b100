"""Streaming iterative extraction: equals the in-memory engine, resumes after a kill, caches per layer (Sec. 4.3)."""

from __future__ import annotations

import pytest
import torch

from devec.engine import column_basis, iterative
from devec.resume import UnitStore
from devec.toxicity.sources import open_source
from devec.toxicity.streaming import apply_vectors, layer_group, stream_unique
from devec.vectors import ParamPolicy, StoredVectors, open_checkpoint

SETTINGS = {"tau": 0.85, "rank": "energy:0.9"}


def _sources(pool):
    toxic = open_source(pool["toxic"], "dora", "toxic")
    others = [open_source(m["path"], m["kind"], n) for n, m in pool["members"].items()]
    return toxic, others


def test_base_checkpoints_are_sharded(synthetic_pool):
    base = synthetic_pool["base"]
    shards = [p for p in __import__("pathlib").Path(base).glob("*.safetensors")]
    assert len(shards) >= 3


def test_streamed_unique_equals_in_memory_iterative(synthetic_pool, tmp_path):
    toxic, others = _sources(synthetic_pool)
    store = stream_unique(synthetic_pool["base"], toxic, others, tmp_path, **SETTINGS)
    pre = open_checkpoint(synthetic_pool["base"])
    checked = 0
    for name in store.keys():
        w_pre = pre.get(name)
        t = toxic.delta(name, w_pre)
        if t.dim() != 2:
            torch.testing.assert_close(store.get(name), t)      # 1-D: passed through whole
            continue
        pool = [d for o in others if (d := o.delta(name, w_pre)) is not None]
        expected = iterative(t, pool, **SETTINGS)
        torch.testing.assert_close(store.get(name), expected, rtol=1e-5, atol=1e-6)
        checked += 1
    assert checked == len(toxic.params())
    # the toxic vector really shares directions with the pool: something was removed
    rows = [r for r in store.report() if r["action"] == "decompose"]
    assert all(r["pool_size"] == len(others) for r in rows)
    assert sum(r["unique_energy"] for r in rows) / len(rows) < 0.99


def test_unique_part_is_orthogonal_to_shared_directions(synthetic_pool, tmp_path):
    """After the extraction, T_unique keeps little of the pool's column space at each step's shared subspace."""
    toxic, others = _sources(synthetic_pool)
    store = stream_unique(synthetic_pool["base"], toxic, others, tmp_path, **SETTINGS)
    pre = open_checkpoint(synthetic_pool["base"])
    name = "model.layers.0.self_attn.q_proj.weight"
    w_pre = pre.get(name)
    t, u = toxic.delta(name, w_pre), store.get(name)
    assert float(u.norm()) < float(t.norm())
    last = others[-1].delta(name, w_pre)
    ut = column_basis(u, "energy:0.9").U
    ul = column_basis(last, "energy:0.9").U
    cosines = torch.linalg.svdvals(ut.T @ ul)
    assert float(cosines.max()) ** 2 <= SETTINGS["tau"] + 1e-6


def test_no_pool_gives_the_plain_task_vector(synthetic_pool, tmp_path):
    toxic, _ = _sources(synthetic_pool)
    store = stream_unique(synthetic_pool["base"], toxic, [], tmp_path)
    pre = open_checkpoint(synthetic_pool["base"])
    assert set(store.keys()) == set(toxic.params())
    for name in store.keys():
        torch.testing.assert_close(store.get(name), toxic.delta(name, pre.get(name)))


def test_interrupted_run_resumes_from_last_finished_layer(synthetic_pool, tmp_path):
    toxic, others = _sources(synthetic_pool)
    done: list[str] = []

    class Killed(Exception):
        pass

    def kill_after_first(group: str) -> None:
        done.append(group)
        raise Killed

    with pytest.raises(Killed):
        stream_unique(synthetic_pool["base"], toxic, others, tmp_path, on_group=kill_after_first, **SETTINGS)
    (cache,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    units = UnitStore(cache)
    assert units.done(f"{done[0]}/tensors") and units.done(f"{done[0]}/meta")
    first = cache / units._manifest()[f"{done[0]}/tensors"]["file"]
    stamp = first.stat().st_mtime_ns
    assert not [p for p in cache.rglob("*") if p.name.endswith(".tmp")]
    resumed: list[str] = []
    store = stream_unique(synthetic_pool["base"], toxic, others, tmp_path, on_group=resumed.append, **SETTINGS)
    assert done[0] not in resumed and resumed                   # only the unfinished groups were computed
    assert first.stat().st_mtime_ns == stamp
    fresh = stream_unique(synthetic_pool["base"], toxic, others, tmp_path / "fresh", **SETTINGS)
    for name in fresh.keys():
        torch.testing.assert_close(store.get(name), fresh.get(name))


def test_cache_key_depends_on_tau(synthetic_pool, tmp_path):
    toxic, others = _sources(synthetic_pool)
    a = stream_unique(synthetic_pool["base"], toxic, others, tmp_path, tau=0.85, rank="energy:0.9")
    b = stream_unique(synthetic_pool["base"], toxic, others, tmp_path, tau=0.5, rank="energy:0.9")
    assert a.root != b.root
    name = "model.layers.1.mlp.up_proj.weight"
    assert float(b.get(name).norm()) <= float(a.get(name).norm()) + 1e-6   # lower tau removes more


def test_policy_exclude_drops_vectors(synthetic_pool, tmp_path):
    toxic, others = _sources(synthetic_pool)
    store = stream_unique(synthetic_pool["base"], toxic, others, tmp_path,
                          policy=ParamPolicy(vectors="exclude"), **SETTINGS)
    assert all(open_checkpoint(synthetic_pool["base"]).shape(n).__len__() == 2 for n in store.keys())


def test_apply_vectors_negates_in_place(synthetic_pool, tmp_path):
    from transformers import AutoModelForCausalLM

    toxic, others = _sources(synthetic_pool)
    store = stream_unique(synthetic_pool["base"], toxic, others, tmp_path, **SETTINGS)
    model = AutoModelForCausalLM.from_pretrained(synthetic_pool["base"])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    apply_vectors(model, [(-2.0, store)])
    for name, p in model.named_parameters():
        expected = before[name] - 2.0 * store.get(name) if name in store.keys() else before[name]
        torch.testing.assert_close(p.detach(), expected)
    assert isinstance(store, StoredVectors)


def test_layer_groups():
    assert layer_group("model.layers.12.mlp.up_proj.weight") == "layer_012"
    assert layer_group("model.embed_tokens.weight") == "other"
