"""Embedded styles, tokenizers and the numbers of the style-mixing table."""

from __future__ import annotations

import torch

from devec.style import data
from devec.style.metrics import common_strength, paired_similarity, style_statistics, style_strength
from devec.style.pipeline import build_tokenizers


def test_each_embedded_style_changes_its_own_statistic():
    content, prompts, labels = data.make_content(24, 32, seed=0)
    assert content.shape == (24, 3, 32, 32) and len(prompts) == 24 and labels.max() == 2
    mono = data.apply_style("mono", content)
    assert float((mono.amax(1) - mono.amin(1)).max()) < 1e-6  # no colour left
    pixel = data.apply_style("pixel", content)
    assert torch.equal(pixel[..., 0::4, 0::4], pixel[..., 3::4, 3::4])  # constant 4 x 4 blocks
    base, stripes = style_statistics(content), style_statistics(data.apply_style("stripes", content))
    assert float(stripes[:, 13].mean()) > 2 * float(base[:, 13].mean())  # gradient energy across the stripes
    pastel = style_statistics(data.apply_style("pastel", content))
    assert float(pastel[:, 7].mean()) > float(base[:, 7].mean()) + 0.3  # dark background: darkest luma bin


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
