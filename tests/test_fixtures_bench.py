"""benchmarks/bench_paper_scale.py's streamed child on a tiny synthetic pool: its accounting adds up (no timing
asserted; the paper-size run is by hand on devec-fixtures' output)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import tiny_clip_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_paper_scale
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return bench_paper_scale


def test_llama_child_accounts_for_the_whole_call(bench, tmp_path):
    from devec.toxicity.synthetic import make_pool

    pool = make_pool(tmp_path / "pool", k=3, dora_members=0)
    info = {"base": pool["base"], "toxic": pool["toxic"], "members": [m["path"] for m in pool["members"].values()]}
    raw = bench.child(bench.LLAMA, json.dumps(info), r"^model\.layers\.0\.mlp\.", "0.85", "energy:0.9",
                      str(tmp_path / "cache"), threads=1)
    t = bench.summarize_llama(raw)
    assert sorted(t["matrices"]) == [f"model.layers.0.mlp.{m}_proj.weight" for m in ("down", "gate", "up")]
    parts = t["breakdown_s"]
    assert {"read", "member_delta", "toxic_merge", "basis", "write", "decompose", "setup"} <= set(parts)
    assert sum(parts.values()) == pytest.approx(t["whole_s"], rel=0.05)   # exclusive parts of the one call
    assert parts["basis"] == pytest.approx(t["svd_floor_s"] + t["extra_bases_s"], rel=1e-6)
    assert 0 < t["svd_floor_s"] < t["whole_s"] and t["ratio"] > 1
    assert 0 < t["layer_share"] < 1 and t["pool_size"] == 4
    assert t["bound_mib"] == pytest.approx(6 * t["layer_tv_mib"] + 1024)
    assert t["projected_full_s"] == pytest.approx(t["whole_s"] / t["layer_share"] * 32 * 11 / 4)
    assert 0 < t["cpu_s"] and t["projected_full_cpu_s"] == pytest.approx(t["cpu_s"] / t["layer_share"] * 32 * 11 / 4)


def test_vision_child_accounts_for_the_whole_call_and_times_the_dense_pairs_apart(bench, tmp_path):
    from devec.fixtures.vision import pool_ids, table1_tasks, write_finetuned, write_pretrained

    config = tiny_clip_config()
    pre = write_pretrained(tmp_path, seed=0, config=config)
    for member, repo in enumerate(pool_ids(table1_tasks()).values()):
        write_finetuned(tmp_path, repo, pre, member, seed=0, config=config)
    v = bench.summarize_vision(bench.child(bench.VISION, str(tmp_path), "1", "0.85", "energy:0.9", threads=1))
    assert v["tasks"] == 8 and v["pairs"] == 28 and v["blocks"] == 1
    assert sum(v["breakdown_s"].values()) == pytest.approx(v["whole_s"], rel=0.05)
    assert v["breakdown_s"]["basis"] == pytest.approx(v["svd_floor_s"] + v["extra_bases_s"], rel=1e-6)
    assert 0 < v["svd_floor_s"] < v["whole_s"] and v["pairwise_dense_s"] > 0 and v["added_mib"] >= 0
    assert v["projected_full_s"] == pytest.approx(v["whole_s"] * 12)
