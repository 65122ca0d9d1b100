"""The one decomposition driver: checksummed toxicity layers, NaN found early or without losing layers, the basis
cache and resume wired into toxicity and experiment=decompose (issue 11 items 2, 5, 10; issue 10)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from devec.cache import BasisCache
from devec.resume import MANIFEST, UnitStore
from devec.runtime import Run
from devec.toxicity.pool import ToxicityPool
from devec.toxicity.sources import open_source
from devec.toxicity.streaming import stream_unique
from devec.vectors import DecompositionSettings, TaskVectorPool, decompose_model, store_for
from devec.vectors import driver as driver_module
from devec.vectors.demo import demo_checkpoints

CONF = str(Path(__file__).resolve().parents[2] / "conf")
SETTINGS = {"tau": 0.85, "rank": "energy:0.9"}
LAST = "model.layers.1.self_attn.v_proj.weight"  # in the last layer, changed by the toxic DoRA adapter


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    from devec.toxicity.synthetic import make_pool

    return make_pool(tmp_path_factory.mktemp("pool"), k=3, dora_members=1)


def _sources(pool):
    toxic = open_source(pool["toxic"], "dora", "toxic")
    return toxic, [open_source(m["path"], m["kind"], n) for n, m in pool["members"].items()]


def _stream(pool, cache, **kw):
    toxic, others = _sources(pool)
    return stream_unique(pool["base"], toxic, others, cache, **{**SETTINGS, **kw})


def _unit_file(root: Path, unit: str) -> Path:
    return root / json.loads((root / MANIFEST).read_text())[unit]["file"]


def _assert_same(a, b):
    assert a.keys() == b.keys() and a.keys()
    for name in a.keys():
        assert torch.equal(a.get(name), b.get(name)), name
    assert a.report() == b.report()


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x10  # inside the last tensor's bytes
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGE = {"bit flip": _flip, "truncation": _truncate, "deleted file": Path.unlink}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_toxicity_layer_is_recomputed(pool, tmp_path, damage):
    clean = _stream(pool, tmp_path / "clean")
    stored = _stream(pool, tmp_path / "cache")
    DAMAGE[damage](_unit_file(stored.root, "layer_000/tensors"))
    computed: list[str] = []
    again = _stream(pool, tmp_path / "cache", on_group=computed.append)
    assert computed == ["layer_000"]  # only the damaged layer, and it is not silently skipped or trusted
    _assert_same(again, clean)


def _with_nan(pool, root: Path) -> dict:
    """A copy of the pool whose member ft0 holds a NaN in the last layer."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(Path(pool["base"]).parent, root)
    moved = {"base": str(root / "base"), "toxic": str(root / Path(pool["toxic"]).name),
             "members": {n: {**m, "path": str(root / Path(m["path"]).name)} for n, m in pool["members"].items()}}
    ft0 = Path(moved["members"]["ft0"]["path"])
    shard = ft0 / json.loads((ft0 / "model.safetensors.index.json").read_text())["weight_map"][LAST]
    tensors = load_file(str(shard))
    tensors[LAST][0, 0] = float("nan")
    save_file(tensors, str(shard), metadata={"format": "pt"})
    return moved


def test_nan_in_the_last_layer_keeps_the_finished_layers(pool, tmp_path):
    clean_cache = BasisCache(tmp_path / "clean_bases")
    clean = _stream(pool, tmp_path / "clean", basis_fn=clean_cache.column_basis)
    bad = _with_nan(pool, tmp_path / "bad_pool")
    bases = BasisCache(tmp_path / "bases")
    with pytest.raises(ValueError, match=r"ft0: parameter 'model\.layers\.1\.self_attn\.v_proj\.weight' contains NaN"):
        _stream(bad, tmp_path / "cache", basis_fn=bases.column_basis)
    (root,) = list((tmp_path / "cache").iterdir())
    finished = UnitStore(root)
    assert finished.done("layer_000/tensors") and finished.done("layer_000/meta")  # stored before the failure
    assert not finished.done("layer_001/meta")
    original = Path(pool["members"]["ft0"]["path"])  # the repair: the intact checkpoint back in place
    shutil.rmtree(bad["members"]["ft0"]["path"])
    shutil.copytree(original, bad["members"]["ft0"]["path"])
    repaired = BasisCache(tmp_path / "bases")
    _assert_same(_stream(bad, tmp_path / "cache", basis_fn=repaired.column_basis), clean)
    assert repaired.misses < clean_cache.misses  # the finished layer's SVDs were not computed again


def test_in_memory_nan_fails_before_any_decomposition():
    gen = torch.Generator().manual_seed(0)
    vectors = [{f"layers.{i}.weight": torch.randn(8, 6, generator=gen) for i in range(4)} for _ in range(3)]
    vectors[1]["layers.3.weight"][2, 2] = float("inf")
    calls = []

    def counting(v, rank, svd="auto"):
        calls.append(1)
        return driver_module.column_basis(v, rank, svd=svd)

    with pytest.raises(ValueError, match=r"task vector 1: parameter 'layers\.3\.weight' contains NaN or Inf"):
        decompose_model(vectors, basis_fn=counting, progress=False)
    assert calls == []


def _compose(*overrides: str):
    with initialize_config_dir(CONF, version_base="1.3"):
        return compose("config", overrides=list(overrides))


def _toxicity(pool, tmp_path, *overrides: str):
    cfg = _compose("experiment=table4_toxicity", "pool=toxicity/tiny", "data=toxicity/tiny", *overrides)
    toxic, others = _sources(pool)
    tpool = ToxicityPool(base=pool["base"], tokenizer=pool["base"], toxic=toxic,
                         members={o.name: o for o in others}, subpools={"all": [o.name for o in others]})
    return cfg, Run(out_dir=tmp_path / "out", cache_dir=tmp_path / "cache"), tpool


def _count_layers(monkeypatch) -> list[str]:
    computed: list[str] = []
    real = driver_module.decompose_parameter

    def counting(pool, name, *args, **kwargs):
        computed.append(name)
        return real(pool, name, *args, **kwargs)

    monkeypatch.setattr(driver_module, "decompose_parameter", counting)
    return computed


def test_toxicity_tau_sweep_hits_the_basis_cache(pool, tmp_path):
    from devec.toxicity import runner

    cfg, run, tpool = _toxicity(pool, tmp_path)
    entries = lambda: len(list((tmp_path / "cache" / "bases").rglob("*.safetensors")))  # noqa: E731
    runner.unique_vector(cfg, run, tpool, "all", tau=0.85)
    first = entries()
    assert first > 0
    runner.unique_vector(cfg, run, tpool, "all", tau=0.5)
    assert entries() - first < first  # the pool's SVDs are read back; only changed target bases are new
    cfg, run, tpool = _toxicity(pool, tmp_path / "nocache", "decomposition.cache=false")
    runner.unique_vector(cfg, run, tpool, "all")
    assert not (tmp_path / "nocache" / "cache" / "bases").exists()


def test_toxicity_resume_false_recomputes_every_layer(pool, tmp_path, monkeypatch):
    from devec.toxicity import runner

    cfg, run, tpool = _toxicity(pool, tmp_path)
    computed = _count_layers(monkeypatch)
    first = runner.unique_vector(cfg, run, tpool, "all").to_dict()
    n = len(computed)
    assert n > 0
    runner.unique_vector(cfg, run, tpool, "all")
    assert len(computed) == n  # resumed: nothing computed
    with open_dict(cfg):
        cfg.resume = False
    again = runner.unique_vector(cfg, run, tpool, "all").to_dict()
    assert len(computed) == 2 * n
    assert all(torch.equal(first[k], again[k]) for k in first)


def test_toxicity_store_key_is_content_and_code_not_paths(pool, tmp_path, monkeypatch):
    a = _stream(pool, tmp_path / "cache")
    shutil.copytree(Path(pool["base"]).parent, tmp_path / "moved")
    moved = {"base": str(tmp_path / "moved" / "base"), "toxic": str(tmp_path / "moved" / Path(pool["toxic"]).name),
             "members": {n: {**m, "path": str(tmp_path / "moved" / Path(m["path"]).name)}
                         for n, m in pool["members"].items()}}
    computed: list[str] = []
    b = _stream(moved, tmp_path / "cache", on_group=computed.append)
    assert b.root == a.root and computed == []  # moved checkpoints: the same vectors, reused
    import devec.resume

    monkeypatch.setattr(devec.resume, "code_fingerprint", lambda: "other code")
    assert _stream(pool, tmp_path / "cache").root != a.root  # a code change never reuses old vectors


def test_toxicity_evaluations_are_resumable_units(pool, tmp_path):
    from devec.toxicity import runner

    cfg, run, tpool = _toxicity(pool, tmp_path)
    u = runner.unique_vector(cfg, run, tpool, "all")

    class Bench:
        calls = 0

        def score(self, model, control=None):
            Bench.calls += 1
            return {"weight_sum": float(sum(p.double().sum() for p in model.parameters()))}

    store = UnitStore(tmp_path / "evaluations")
    first = runner.scored(cfg, store, "table4 | DeVec", Bench(), tpool, [(-1.0, u)])
    assert runner.scored(cfg, store, "table4 | DeVec", Bench(), tpool, [(-1.0, u)]) == first
    assert Bench.calls == 1
    assert runner.scored(cfg, store, "table4 | DeVec", Bench(), tpool, [(-2.0, u)]) != first  # another model
    with open_dict(cfg):
        cfg.resume = False
    runner.scored(cfg, store, "table4 | DeVec", Bench(), tpool, [(-1.0, u)])
    assert Bench.calls == 3


def test_decompose_resumes_after_an_interrupt(tmp_path):
    pre, fts = demo_checkpoints(tmp_path / "ckpt", k=3, layers=3, dim=16, shared=2, unique=2)
    settings = DecompositionSettings(mode="joint", rank="full")
    done: list[str] = []

    class Killed(Exception):
        pass

    def kill_after_first(unit: str) -> None:
        done.append(unit)
        raise Killed

    pool = TaskVectorPool(pre, fts)
    with pytest.raises(Killed):
        decompose_model(pool, settings, store=store_for(tmp_path / "c", pool, settings), on_unit=kill_after_first,
                        progress=False)
    computed: list[str] = []
    pool = TaskVectorPool(pre, fts)
    resumed = decompose_model(pool, settings, store=store_for(tmp_path / "c", pool, settings),
                              on_unit=computed.append, progress=False)
    assert done[0] not in computed and computed
    fresh = decompose_model(pool, settings, progress=False)
    assert resumed.report == fresh.report
    for got, want in [(resumed.merged_shared, fresh.merged_shared), *zip(resumed.unique, fresh.unique, strict=True),
                      *zip(resumed.shared, fresh.shared, strict=True)]:
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


def test_experiment_decompose_resumes_and_resume_false_recomputes(tmp_path, monkeypatch):
    from devec.vectors import runner

    cfg = _compose("experiment=decompose", "pool.demo.dim=16", "pool.demo.layers=2")
    computed = _count_layers(monkeypatch)
    first = runner.run(cfg, Run(out_dir=tmp_path / "a", cache_dir=tmp_path / "cache"))
    n = len(computed)
    assert n > 0
    second = runner.run(cfg, Run(out_dir=tmp_path / "b", cache_dir=tmp_path / "cache"))
    assert len(computed) == n and second["mean_shared_dim"] == first["mean_shared_dim"]
    with open_dict(cfg):
        cfg.resume = False
    runner.run(cfg, Run(out_dir=tmp_path / "c", cache_dir=tmp_path / "cache"))
    assert len(computed) == 2 * n
