"""The style-mixing experiment end to end on the tiny preset (built, cached, decomposed, generated, scored)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from devec.cli import CONFIG_DIR, execute
from devec.runtime import Run
from devec.style.loras import read_lora
from devec.style.runner import style_pool


def _cfg(*overrides: str):
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=["experiment=style_mixing", "pool=style/tiny", "data=style/tiny",
                                             "logger=none", *overrides])


def test_tiny_style_mixing_writes_grid_table_and_unique_loras_and_reuses_its_cache(tmp_path):
    cfg = _cfg("method.schedule=[1.0,2.0]", f"paths.cache_dir={tmp_path / 'cache'}", f"paths.root_dir={tmp_path}",
               "name=style_mixing")
    results = execute(cfg, tmp_path / "run1")
    run = tmp_path / "run1"
    styles = results["styles"]
    assert styles == ["mono", "pixel", "stripes"]
    rows = results["rows"]
    assert [r["setting"] for r in rows] == ["base", *[f"{s} alone" for s in styles],
                                            "vanilla x1", "unique x1", "vanilla x2", "unique x2"]
    for s in styles:
        alone = next(r for r in rows if r["setting"] == f"{s} alone")
        assert alone[f"strength/{s}"] == pytest.approx(1.0)
    assert all(0.0 <= r["shape_adherence"] <= 1.0 for r in rows)
    assert set(results["by_method"]) == {"vanilla@1", "unique@1", "vanilla@2", "unique@2"}
    grid = run / "grid_0_a_red_circle.png"
    assert grid.stat().st_size > 2000
    assert (run / "style_mixing.csv").exists() and (run / "style_decomposition.md").exists()
    unique = read_lora(run / "unique_loras" / "mono.safetensors")
    assert unique.factors and all(f.A.shape[0] == 4 for f in unique.factors.values())
    written = json.loads((run / "results.json").read_text())
    assert written["decomposition"]["decomposed_modules"] == len(unique.factors)

    cached = sorted((tmp_path / "cache" / "style").rglob("*.safetensors"))
    stamps = [p.stat().st_mtime_ns for p in cached]
    again = execute(cfg, tmp_path / "run2")
    assert [p.stat().st_mtime_ns for p in cached] == stamps  # nothing rebuilt
    assert again["rows"][0]["shape_adherence"] == pytest.approx(rows[0]["shape_adherence"])


def test_figure_experiment_mixes_the_paper_styles_by_their_embedded_analogues(tmp_path):
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["experiment=fig4_style_mixing", "pool=style/tiny", "data=style/tiny",
                                           "logger=none"])
    assert list(cfg.method.mix) == ["photo_1930s", "pixel_art"]
    assert list(cfg.data.prompts) == list(cfg.data.figures.fig4.prompts)  # the figure's, in config.yaml
    assert list(cfg.data.seeds) == list(cfg.data.figures.fig4.seeds)
    assert cfg.decomposition.rank == "full" and cfg.decomposition.mode == "joint"


def test_paper_pool_without_lora_files_says_which_key_to_set(tmp_path):
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["experiment=style_mixing", "scale=paper", "logger=none"])
    assert cfg.pool.base == "black-forest-labs/FLUX.1-schnell" and len(cfg.pool.styles) == 5
    with pytest.raises(ValueError, match="pool.styles"):
        style_pool(cfg.pool, Run(out_dir=Path(tmp_path), cache_dir=Path(tmp_path)))
