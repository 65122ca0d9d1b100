"""Sharing against chance in every decomposition report: the driver's ``chance_dim``, the table and the summary."""

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from devec.runtime import Run
from devec.settings import ConfigError
from devec.settings.core import check_decomposition
from devec.vectors import DecompositionSettings, decompose_model
from devec.vectors.sharing import save_sharing, sharing_line, sharing_rows, sharing_summary
from tests.conftest import planted

CONF = str(Path(__file__).resolve().parents[2] / "conf")


def _pool(n: int, m: int, shared: int, unique: int, k: int) -> list[dict[str, torch.Tensor]]:
    """k task vectors of two planted matrices (a: n x m, b: m x n) and a bias."""
    a, _ = planted(n, m, shared, unique, k, seed=1)
    b, _ = planted(m, n, shared, unique, k, seed=2)
    return [{"a.weight": va.float(), "b.weight": vb.float(), "c.bias": torch.ones(3)}
            for va, vb in zip(a, b, strict=True)]


@pytest.mark.parametrize("mode", ["joint", "pairwise", "iterative"])
def test_a_planted_shared_subspace_is_above_chance(mode):
    md = decompose_model(_pool(48, 40, 4, 3, 3), mode=mode, rank="full", progress=False)
    rows = sharing_rows(md.report)
    assert [r["name"] for r in rows] == ["a.weight", "b.weight"]  # the bias is not decomposed
    for r in rows:
        assert r["chance_dim"] is not None and r["chance_dim"] < 1 and r["shared_dim"] >= 4
        assert r["above_chance"]
    summary = sharing_summary(md.report)
    assert summary["layers"] == 2 and summary["layers_above_chance"] == 2
    assert "8 draws" in summary["chance"] and summary["mean_chance_dim"] < summary["mean_shared_dim"]


def test_independent_vectors_are_not_above_chance_and_ranks_near_n_raise_the_chance():
    """Each vector alone in a 12-row space with rank 8: they meet by force (8 + 8 - 12 = 4), as chance predicts."""
    gen = torch.Generator().manual_seed(0)
    vectors = [torch.randn(12, 8, generator=gen) @ torch.randn(8, 30, generator=gen) for _ in range(3)]
    md = decompose_model([{"w": v} for v in vectors], mode="pairwise", rank="full", progress=False)
    (row,) = md.report
    assert row["chance_dim"] >= 4 and row["shared_dim"] >= 4
    assert abs(row["shared_dim"] - row["chance_dim"]) <= 1.5
    planted_free = decompose_model([{"w": torch.randn(200, 6, generator=gen) @ torch.randn(6, 20, generator=gen)}
                                    for _ in range(3)], mode="joint", rank="full", progress=False)
    summary = sharing_summary(planted_free.report)
    assert summary["layers"] == 1 and summary["layers_above_chance"] == 0 and summary["mean_chance_dim"] == 0


def test_chance_draws_zero_leaves_it_out_and_is_part_of_the_key():
    vectors, _ = planted(n=20, m=16, shared=2, unique=2, k=2)
    md = decompose_model([{"w": v} for v in vectors], mode="joint", rank="full", chance_draws=0, progress=False)
    assert "chance_dim" not in md.report[0]
    summary = sharing_summary(md.report)
    assert summary["layers_above_chance"] is None and "not computed" in summary["chance"]
    assert "not computed" in sharing_line(summary)
    assert DecompositionSettings(chance_draws=0).key() != DecompositionSettings(chance_draws=8).key()
    with pytest.raises(ValueError, match="decomposition.chance_draws"):
        DecompositionSettings(chance_draws=-1)


@pytest.mark.parametrize("bad", [-1, 2.5, True, "8"])
def test_settings_refuse_a_bad_chance_draws(bad):
    cfg = OmegaConf.create({"decomposition": {"mode": "joint", "tau": 0.85, "rank": "full", "chance_draws": bad}})
    with pytest.raises(ConfigError, match="decomposition.chance_draws"):
        check_decomposition(cfg)


def test_save_sharing_writes_table_plot_and_one_line(tmp_path, capsys):
    md = decompose_model(_pool(24, 20, 3, 2, 3), mode="pairwise", rank="full", progress=False)
    run = Run(out_dir=tmp_path / "out", cache_dir=tmp_path / "cache")
    summary = save_sharing(run, md.report, "test pool", name="sharing_test", label="test")
    assert summary == sharing_summary(md.report)
    table = (tmp_path / "out" / "sharing_test.md").read_text()
    assert "chance_dim" in table and "above_chance" in table and "a.weight" in table
    assert (tmp_path / "out" / "sharing_test.png").stat().st_size > 1000
    line = capsys.readouterr().out.strip()
    assert line.startswith("test: shared dim") and "of 2 layers above chance" in line


def test_every_decomposed_layer_of_a_decompose_run_has_chance_dim(tmp_path, capsys):
    from devec.vectors import runner

    with initialize_config_dir(CONF, version_base="1.3"):
        cfg = compose("config", overrides=["experiment=decompose", "pool.demo.dim=16", "pool.demo.layers=2",
                                           "decomposition=pairwise", "logger=none"])
    results = runner.run(cfg, Run(out_dir=tmp_path / "out", cache_dir=tmp_path / "cache"))
    layers = (tmp_path / "out" / "layers.csv").read_text().splitlines()
    header = layers[0].split(",")
    decomposed = [dict(zip(header, line.split(","), strict=False)) for line in layers[1:]
                  if ",decompose," in line]
    assert decomposed and all(row["chance_dim"] != "" for row in decomposed)
    sharing = results["sharing"]
    assert sharing["layers"] == len(decomposed) == results["decomposed_layers"]
    assert 0 <= sharing["layers_above_chance"] <= sharing["layers"]
    assert "layers above chance" in capsys.readouterr().out
