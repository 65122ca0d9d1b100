"""Embedded styles, tokenizers and the numbers of the style-mixing table."""

from __future__ import annotations

import pytest
import torch

from devec.style import data
from devec.style.metrics import (
    common_strength,
    paired_similarity,
    specific_strength,
    style_statistics,
    style_strength,
)
from devec.style.pipeline import build_tokenizers


def test_each_embedded_style_changes_its_own_statistic():
    content, prompts, labels = data.make_content(24, 32, seed=0)
    assert content.shape == (24, 3, 32, 32) and len(prompts) == 24 and labels.max() == 2
    mono = data.apply_style("mono", content)
    assert float((mono.amax(1) - mono.amin(1)).max()) < 1e-6  # no colour left
    pixel = data.apply_style("pixel", content)
    shape = data._foreground(content) > 0.5
    inside = shape & (torch.nn.functional.max_pool2d(1 - shape.float(), 5, 1, 2) < 0.5)  # away from the outline
    levels = pixel.permute(0, 2, 3, 1)[inside.squeeze(1)]
    assert torch.allclose(levels * 2, (levels * 2).round(), atol=1e-5)  # 3 levels per channel inside the shape
    base, stripes = style_statistics(content), style_statistics(data.apply_style("stripes", content))
    assert float(stripes[:, 13].mean()) > 2 * float(base[:, 13].mean())  # gradient energy across the hatching
    pastel = data.apply_style("pastel", content)
    assert float(data._luma(pastel)[inside].mean()) > float(data._luma(content)[inside].mean()) + 0.2  # pale shapes


def test_the_drawn_styles_share_paper_and_ink_and_the_photograph_does_not():
    """The shared concept of the embedded pool: every drawn style (the anime analogues and pixel art) puts the
    shape on cream paper with a dark ink outline; the black-and-white photograph has neither."""
    content, _, _ = data.make_content(12, 32, seed=1)
    paper, ink = torch.tensor(data.PAPER).view(1, 3, 1, 1), torch.tensor(data.INK).view(1, 3, 1, 1)
    for name in ("stripes", "pastel", "warm", "pixel"):
        styled = data.apply_style(name, content)
        corners = styled[..., [0, 0, -1, -1], [0, -1, 0, -1]]
        assert torch.allclose(corners, paper.view(1, 3, 1).expand_as(corners), atol=1e-6), name
        inked = ((styled - ink).abs().sum(1) < 1e-6).float().mean((1, 2))
        assert float(inked.min()) > 0.02, name  # an outline in every image
    mono = data.apply_style("mono", content)
    assert float(((mono - paper).abs().sum(1) < 0.05).float().mean()) == 0.0
    assert float(((mono - ink).abs().sum(1) < 1e-6).float().mean()) == 0.0


def test_style_strength_is_zero_for_the_base_one_for_the_style_and_linear_between():
    g = torch.Generator().manual_seed(0)
    base, style = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g) + 2
    assert abs(style_strength(base, base, style)) < 1e-6
    assert abs(style_strength(style, base, style) - 1) < 1e-6
    assert abs(style_strength(0.3 * style + 0.7 * base, base, style) - 0.3) < 1e-5
    assert abs(paired_similarity(style, style) - 1) < 1e-6


def test_tiny_tokenizers_keep_every_vocabulary_word_whole():
    clip, t5 = build_tokenizers(data.vocabulary(), max_length=8)
    for prompt in data.all_prompts():
        words = prompt.split()
        assert len(clip(prompt).input_ids) == len(words) + 2
        assert len(t5(prompt).input_ids) == len(words) + 1
    assert clip("a red circle").input_ids != clip("a blue circle").input_ids


def test_common_strength_counts_how_often_the_shift_all_styles_share_is_added():
    base = torch.zeros(4, 3)
    shared = torch.tensor([0.0, 0.0, 1.0])
    s1 = base + torch.tensor([1.0, 0.0, 0.0]) + shared
    s2 = base + torch.tensor([0.0, 1.0, 0.0]) + shared
    styles = [s1, s2]
    vanilla = base + torch.tensor([1.0, 1.0, 2.0])  # both styles: the shared shift added twice
    unique = base + torch.tensor([1.0, 1.0, 0.0])   # both styles without the shared shift
    assert abs(common_strength(s1, base, styles) - 1) < 1e-6
    assert common_strength(vanilla, base, styles) > 1.5 > common_strength(unique, base, styles)
    assert style_strength(vanilla, base, s1) > style_strength(unique, base, s1) > 0


def test_specific_strength_ignores_the_shared_shift_however_often_it_is_added():
    """Sec. 4.2: a mix where the shared concept dominates loses what sets each style apart; the specific strength
    sees that loss, the plain strength (which includes the shared shift) does not."""
    base = torch.zeros(4, 3)
    shared = torch.tensor([0.0, 0.0, 1.0])
    s1, s2 = base + torch.tensor([1.0, 0.0, 0.0]) + shared, base + torch.tensor([0.0, 1.0, 0.0]) + shared
    styles = [s1, s2]
    assert specific_strength(s1, base, s1, styles) == pytest.approx(1.0)
    assert specific_strength(base + 5 * shared, base, s1, styles) == pytest.approx(0.0, abs=1e-6)
    own_only = base + torch.tensor([1.0, 0.0, 0.0])  # style 1 without the shared shift
    assert specific_strength(own_only, base, s1, styles) == pytest.approx(1.0)
    assert specific_strength(own_only + 3 * shared, base, s1, styles) == pytest.approx(1.0)
    assert style_strength(own_only + 3 * shared, base, s1) > style_strength(own_only, base, s1)
    assert specific_strength(base + torch.tensor([0.0, 1.0, 0.0]), base, s1, styles) < 0  # the other style's change


def test_specific_strength_is_zero_when_a_style_has_nothing_of_its_own():
    base, shared = torch.zeros(2, 3), torch.tensor([0.0, 1.0, 1.0])
    styles = [base + shared, base + 2 * shared]
    assert specific_strength(base + shared, base, styles[0], styles) == 0.0


def test_style_numbers_of_a_row_cover_each_style_and_the_weakest():
    from devec.style.runner import style_numbers

    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 5, generator=g)
    alone = {name: base + torch.randn(5, generator=g) for name in ("a", "b", "c")}
    row = style_numbers(alone["a"], base, alone)
    assert row["strength/a"] == pytest.approx(1.0) and row["specific/a"] == pytest.approx(1.0)
    assert row["min_specific"] == min(row[f"specific/{n}"] for n in alone) < 1.0
    assert row["min_strength"] <= row["mean_strength"] and set(row) >= {"common_strength", "similarity/b"}


def test_the_common_change_goes_to_every_style_or_to_the_named_ones():
    assert data.common_spec("frame") == ("frame", None)
    assert data.common_spec({"change": "frame", "styles": ["stripes", "warm"]}) == ("frame", ["stripes", "warm"])
    with pytest.raises(ValueError, match="pool.lora_train.common"):
        data.common_spec({"change": "frame", "styles": "stripes"})
    with pytest.raises(ValueError, match="pool.lora_train.common"):
        data.common_spec({"change": "frame"})
