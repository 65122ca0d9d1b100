"""The style configs are the paper's (issue 13, PAPER_AUDIT.md S1-S6): styles, prompts, seeds, LoRA sources and
coefficients per figure, each paper style with its own embedded analogue, and settings checked before any build."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from devec.cli import CONFIG_DIR, execute
from devec.settings import ConfigError, validate
from devec.style.mixing import Mixing
from devec.style.runner import select_styles

PAPER_TEXT = Path(CONFIG_DIR).parents[1] / "shared" / "paper" / "paper.txt"
# What the paper prints per figure: the styles mixed (Sec. 4.2, App. 10 and 11 captions) and the number of seeds
# it says it shows ("across 3 different seeds": Figs. 15, 17).
PAPER_MIX = {"fig4": ["anime", "flat_anime", "ghibli", "pixel_art"], "fig10": ["photo_1930s"],
             "fig11": ["pixel_art"], "fig12": ["anime"], "fig13": ["ghibli"], "fig14": ["flat_anime"],
             "fig15": ["anime", "flat_anime", "ghibli"], "fig16": ["anime", "ghibli"],
             "fig17": ["photo_1930s", "pixel_art"]}
THREE_SEEDS = ("fig15", "fig17")
# The Civitai (model, version) ids the paper's references [1, 2, 5, 6] print; [7] (pixel art) prints none.
CIVITAI = {"anime": ("640126", "716032"), "flat_anime": ("180891", "839144"), "ghibli": ("692955", "775496"),
           "photo_1930s": ("801429", "896133")}


def _compose(*overrides: str):
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=["logger=none", *overrides])


@pytest.mark.parametrize("scale", ["embedded", "paper"])
def test_every_figure_mixes_the_paper_styles(scale):
    figures = _compose("experiment=style_figure", f"scale={scale}").data.figures
    assert {k: list(v.mix) for k, v in figures.items()} == PAPER_MIX
    for figure in THREE_SEEDS:
        assert len(figures[figure].seeds) == 3


def test_the_paper_prompts_are_verbatim():
    figures = _compose("experiment=style_figure", "scale=paper").data.figures
    prompts = {k: list(v.prompts) for k, v in figures.items()}
    assert all(len(p) == 1 for p in prompts.values()), prompts
    assert prompts["fig4"][0].startswith("pixelart of athletic adult woman")
    assert prompts["fig13"] == prompts["fig16"]  # the paper uses the same prompt for Ghibli alone and the mix
    if not PAPER_TEXT.is_file():
        pytest.skip(f"{PAPER_TEXT} not present")
    text = " ".join(PAPER_TEXT.read_text().split())
    for figure, (prompt,) in prompts.items():
        assert f'"{prompt}"' in text, f"{figure}: {prompt!r} is not printed in the paper"


@pytest.mark.parametrize("pool", ["style/embedded", "style/tiny"])
def test_each_paper_style_has_its_own_embedded_analogue(pool):
    cfg = _compose("experiment=style_figure", f"pool={pool}")
    styles = list(cfg.pool.styles)
    for figure, mix in PAPER_MIX.items():
        assert len(set(select_styles(mix, styles))) == len(mix), figure  # fig16 no longer collapses
    aliases = [a for s in styles for a in s.stands_for]
    assert sorted(aliases) == sorted(set(aliases)) == sorted({m for mix in PAPER_MIX.values() for m in mix})


def test_style_mixing_defaults_to_the_sec_4_2_set_decomposed_over_the_mix_at_coefficient_one():
    for scale in ("embedded", "paper"):
        cfg = _compose("experiment=style_mixing", f"scale={scale}")
        assert list(cfg.method.mix) == PAPER_MIX["fig4"] and cfg.method.decompose_over == "mix"
        assert cfg.method.coefficients == "one"
    paper = _compose("experiment=style_mixing", "scale=paper").data
    assert list(paper.prompts) == list(paper.figures.fig4.prompts)


def test_coefficients_are_one_per_style_or_raised_together_from_the_suggested_weights():
    one = Mixing(coefficients="one", schedule=[1.0, 2.0])
    assert one.gammas() == [1.0] and one.coefficients_at(1.0, [0.8, 1.3]) == [1.0, 1.0]
    raised = Mixing(coefficients="raised", schedule=[1.0, 2.0])
    assert raised.gammas() == [1.0, 2.0]
    assert raised.coefficients_at(2.0, [0.8, 1.3]) == pytest.approx([1.6, 2.6])
    with pytest.raises(ValueError, match="coefficients='both'"):
        Mixing(coefficients="both")
    with pytest.raises(ValueError, match="schedule"):
        Mixing(coefficients="raised", schedule=[])


def test_each_paper_lora_names_its_published_source_and_the_file_it_expects():
    pool = _compose("experiment=style_mixing", "scale=paper").pool
    assert pool.base == "black-forest-labs/FLUX.1-schnell"
    by_name = {s.name: s for s in pool.styles}
    assert sorted(by_name) == sorted(["anime", "flat_anime", "ghibli", "photo_1930s", "pixel_art"])
    for name, (model, version) in CIVITAI.items():
        s = by_name[name]
        assert f"civitai.com/models/{model}" in s.source and f"modelVersionId={version}" in s.source
        assert s.download.endswith(f"/models/{version}") and s.file == f"{name}.safetensors"
    assert "id not given in the paper" in by_name["pixel_art"].source and by_name["pixel_art"].download is None
    assert all(s._get_node("path")._value() == "???" for s in pool.styles)  # explicit placeholders


@pytest.fixture
def nothing_built(monkeypatch):
    def tripped(*args, **kwargs):
        raise AssertionError("a pipeline or LoRA was loaded before the settings were checked")

    for name in ("style_pool", "read_lora", "load_pipeline"):
        monkeypatch.setattr(f"devec.style.runner.{name}", tripped)


def test_a_figure_needs_only_the_files_of_the_styles_it_mixes(tmp_path, nothing_built):
    for name in ("photo_1930s", "pixel_art"):
        (tmp_path / f"{name}.safetensors").write_bytes(b"")
    validate(_compose("experiment=fig17_style_mixing", "scale=paper", f"pool.lora_dir={tmp_path}"))
    cfg = _compose("experiment=fig16_style_mixing", "scale=paper", f"pool.lora_dir={tmp_path}",
                   f"paths.root_dir={tmp_path}")
    with pytest.raises(ConfigError, match=r"pool.lora_dir: no LoRA file .*anime.safetensors") as err:
        execute(cfg, tmp_path / "out")
    assert "api/download/models/716032" in str(err.value) and not (tmp_path / "out").exists()


def test_an_unset_lora_names_its_key_and_what_to_download(tmp_path, nothing_built):
    cfg = _compose("experiment=fig13_style", "scale=paper", f"paths.root_dir={tmp_path}")
    with pytest.raises(ConfigError) as err:
        execute(cfg, tmp_path / "out")
    message = str(err.value)
    assert message.startswith("pool.styles.2.path (ghibli) is not set") and "\n" not in message
    assert "https://civitai.com/api/download/models/775496" in message and "pool.lora_dir=" in message
