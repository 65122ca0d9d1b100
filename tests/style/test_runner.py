"""The style-mixing experiment end to end on the tiny preset (built, cached, decomposed, generated, scored)."""

from __future__ import annotations

import json

import pytest
import torch
from hydra import compose, initialize_config_dir

from devec.cli import CONFIG_DIR, execute
from devec.style.loras import read_lora
from devec.style.mixing import decompose_styles
from devec.style.pipeline import load_pipeline


def _cfg(*overrides: str, experiment: str = "style_mixing"):
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=[f"experiment={experiment}", "pool=style/tiny", "data=style/tiny",
                                             "logger=none", *overrides])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One tiny run of experiment=style_mixing with App. 11's raised coefficients at gamma 1 and 2."""
    root = tmp_path_factory.mktemp("style_run")
    cfg = _cfg("method.coefficients=raised", "method.schedule=[1.0,2.0]", f"paths.cache_dir={root / 'cache'}",
               f"paths.root_dir={root}", "name=style_mixing")
    return cfg, root, execute(cfg, root / "run1")


def test_tiny_style_mixing_writes_grid_table_and_unique_loras_and_reuses_its_cache(tiny_run):
    cfg, root, results = tiny_run
    run = root / "run1"
    styles = results["styles"]
    assert styles == ["stripes", "pastel", "warm", "pixel"]  # Fig. 4's set: anime, flat_anime, ghibli, pixel_art
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
    assert sorted(p.stem for p in (run / "unique_loras").glob("*.safetensors")) == sorted(styles)
    written = json.loads((run / "results.json").read_text())
    unique = read_lora(run / "unique_loras" / "pixel.safetensors")
    assert written["decomposition"]["decomposed_modules"] == len(unique.factors)
    checks = {c["id"]: c for c in written["regime"]}  # Sec. 4.2's premise: the mixed styles share a subspace
    assert checks["shared_modules"]["value"] == written["decomposition"]["modules_with_shared"]
    sharing = written["decomposition"]["sharing"]
    assert checks["sharing_above_chance"]["value"] == pytest.approx(
        100 * sharing["layers_above_chance"] / sharing["layers"])

    cached = sorted((root / "cache" / "style").rglob("*.safetensors"))
    stamps = [p.stat().st_mtime_ns for p in cached]
    again = execute(cfg, root / "run2")
    assert [p.stat().st_mtime_ns for p in cached] == stamps  # nothing rebuilt
    assert again["rows"][0]["shape_adherence"] == pytest.approx(rows[0]["shape_adherence"])


def test_a_unique_lora_file_loads_with_diffusers_and_adds_exactly_the_unique_component(tiny_run):
    """Issue 13 item 9: the run's unique_loras/<style>.safetensors through FluxPipeline.load_lora_weights alone."""
    cfg, root, results = tiny_run
    base_dir = next((root / "cache" / "style").glob("tiny_flux_*/base"))
    originals = {p.stem: p for p in (root / "cache" / "style").rglob("loras_*/*.safetensors")}
    # the chain P_1 ... P_k depends on the order: decompose in the run's order (the pool's), as the runner does
    styles = [s["name"] for s in cfg.pool.styles if s["name"] in results["styles"]]
    loras = [read_lora(originals[s], name=s) for s in styles]
    from omegaconf import OmegaConf

    expected = decompose_styles(loras, OmegaConf.to_container(cfg.decomposition, resolve=True), progress=False)
    pipe = load_pipeline(base_dir)
    before = {n: p.detach().clone() for n, p in pipe.transformer.named_parameters()}
    pipe.load_lora_weights(str(root / "run1" / "unique_loras" / "pastel.safetensors"), adapter_name="pastel_unique")
    pipe.fuse_lora(components=["transformer"], lora_scale=1.0)
    after = dict(pipe.transformer.named_parameters())
    unique = expected.unique[styles.index("pastel")]
    assert unique
    for module, factors in unique.items():
        name = module.removeprefix("transformer.") + ".base_layer.weight"
        name = name if name in after else module.removeprefix("transformer.") + ".weight"
        delta = after[name].detach() - before[module.removeprefix("transformer.") + ".weight"]
        torch.testing.assert_close(delta, factors.dense(), atol=1e-5, rtol=1e-4, msg=module)


def test_a_single_style_figure_generates_that_style_alone_without_decomposing(tiny_run, tmp_path):
    _, root, _ = tiny_run
    cfg = _cfg(f"paths.cache_dir={root / 'cache'}", f"paths.root_dir={tmp_path}", "name=fig13",
               experiment="fig13_style")
    results = execute(cfg, tmp_path / "run")
    assert results["styles"] == ["warm"]  # Fig. 13: Studio Ghibli alone, its embedded analogue
    assert [r["setting"] for r in results["rows"]] == ["base", "warm alone"]
    assert not (tmp_path / "run" / "unique_loras").exists() and results["by_method"] == {}


def test_figure_experiment_mixes_the_paper_styles_by_their_embedded_analogues():
    cfg = _cfg(experiment="fig4_style_mixing")
    assert list(cfg.method.mix) == ["anime", "flat_anime", "ghibli", "pixel_art"]
    assert list(cfg.data.prompts) == list(cfg.data.figures.fig4.prompts)  # the figure's, in config.yaml
    assert list(cfg.data.seeds) == list(cfg.data.figures.fig4.seeds)
    assert cfg.decomposition.rank == "full" and cfg.decomposition.mode == "joint"
    assert cfg.method.decompose_over == "mix" and cfg.method.coefficients == "one"


def test_every_style_number_of_the_table_is_an_effect_with_the_paper_direction():
    """Issue 14 item 5: unique minus plain for each number of the row, paired by the run; the shared change counted
    fewer times (common_strength) is the improvement, everything else higher."""
    from devec.style.runner import mix_effects

    numbers = {"strength/a": 0.4, "specific/a": 0.1, "similarity/a": 0.5, "min_strength": 0.4, "mean_strength": 0.4,
               "min_specific": 0.1, "common_strength": 3.0, "shape_adherence": 0.6}
    rows = [{"setting": "base", "method": "base", "gamma": 0.0, **numbers},
            {"setting": "vanilla x1", "method": "vanilla", "gamma": 1.0, **numbers},
            {"setting": "unique x1", "method": "unique", "gamma": 1.0,
             **{k: v + 0.5 for k, v in numbers.items()}}]
    records = mix_effects(rows, {"vanilla": "original", "unique": "unique"}, "shape_adherence")
    assert [r["metric"] for r in records] == list(numbers)  # every number, adherence last
    assert all(r["id"] == "unique@1" and r["delta"] == pytest.approx(0.5) for r in records)
    direction = {r["metric"]: r["higher_is_better"] for r in records}
    assert direction.pop("common_strength") is False and all(direction.values())


@pytest.mark.parametrize(("override", "message"), [
    ("pool.lora_train.common={change:frame,styles:[stripes,nope]}", "pool.lora_train.common.styles: unknown 'nope'"),
    ("pool.lora_train.common={change:halo,styles:[stripes]}", "pool.lora_train.common.change: unknown 'halo'"),
    ("pool.lora_train.common=halo", "pool.lora_train.common.change: unknown 'halo'"),
    ("pool.lora_train.common={change:frame,styles:stripes}", "pool.lora_train.common="),
])
def test_a_bad_common_change_fails_before_any_training(override, message):
    from devec.settings import ConfigError, validate

    with pytest.raises(ConfigError, match=message):
        validate(_cfg(override))
