"""Joint DeVec of style LoRAs in factor form, and the mixed model = base + sum of unique components."""

from __future__ import annotations

import copy

import pytest
import torch

from devec.engine import LoRAFactors
from devec.style.loras import StyleLoRA
from devec.style.mixing import components, decompose_styles, load_components, set_mix
from devec.style.pipeline import load_pipeline

from .conftest import DIM

DECOMPOSITION = {"mode": "joint", "tau": 0.85, "rank": "full", "method": "lowrank", "svd": "auto",
                 "policy": {"vectors": "pass_through", "embeddings": "pass_through", "include": [], "exclude": [],
                            "embedding_patterns": []}}
MODULE = "transformer.transformer_blocks.0.attn.to_q"
OTHER = "transformer.transformer_blocks.0.attn.to_out.0"


def planted_styles(k: int = 3, shared: int = 2, own: int = 2, seed: int = 0) -> tuple[list[StyleLoRA], torch.Tensor]:
    """k LoRAs whose B columns span ``shared`` common directions plus ``own`` directions of their own."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(DIM, shared + k * own, generator=g))
    loras = []
    for i in range(k):
        cols = torch.cat([q[:, :shared], q[:, shared + i * own: shared + (i + 1) * own]], 1)
        b = cols @ torch.randn(shared + own, shared + own, generator=g)
        a = torch.randn(shared + own, DIM, generator=g)
        factors = {MODULE: LoRAFactors(b, a, 0.5),
                   OTHER: LoRAFactors(torch.randn(DIM, 2, generator=g), torch.randn(2, DIM, generator=g), 1.0)}
        loras.append(StyleLoRA(f"s{i}", factors, weight=1.0))
    return loras, q[:, :shared]


def test_unique_components_keep_factor_form_and_lose_exactly_the_shared_directions():
    loras, truth = planted_styles()
    dec = decompose_styles(loras, DECOMPOSITION, progress=False)
    row = next(r for r in dec.report if r["name"] == MODULE)
    assert row["shared_dim"] == 2
    for lora, unique, shared in zip(loras, dec.unique, dec.shared, strict=True):
        u = unique[MODULE]
        assert isinstance(u, LoRAFactors) and u.A is lora.factors[MODULE].A  # same A, same rank
        torch.testing.assert_close(u.dense() + shared[MODULE].dense(), lora.factors[MODULE].dense(),
                                   atol=1e-5, rtol=1e-5)
        assert float((truth.T @ u.dense()).abs().max()) < 1e-4  # nothing along the shared directions is left
        assert shared[MODULE].norm() > 0.1


def test_a_module_only_some_styles_adapt_stays_whole_in_their_unique_part():
    loras, _ = planted_styles()
    extra = "transformer.single_transformer_blocks.0.attn.to_q"
    loras[0].factors[extra] = LoRAFactors(torch.randn(DIM, 2), torch.randn(2, DIM), 1.0)
    dec = decompose_styles(loras, DECOMPOSITION, progress=False)
    assert dec.unique[0][extra] is loras[0].factors[extra]
    assert extra not in dec.unique[1]
    assert any(r["name"] == extra and r["action"] == "only_in_some" for r in dec.report)


def test_style_mixing_needs_joint_mode_and_two_styles():
    loras, _ = planted_styles()
    with pytest.raises(ValueError, match="decomposition=joint"):
        decompose_styles(loras, {**DECOMPOSITION, "mode": "pairwise"}, progress=False)
    with pytest.raises(ValueError, match="at least two"):
        decompose_styles(loras[:1], DECOMPOSITION, progress=False)
    with pytest.raises(ValueError, match="components"):
        components("both", loras, decompose_styles(loras, DECOMPOSITION, progress=False))


def test_the_unique_mix_is_the_base_plus_the_weighted_sum_of_unique_components(tiny_pipe_dir):
    """Adapters loaded through diffusers with set_adapters weights == the base with the dense sum added by hand."""
    loras, _ = planted_styles()
    dec = decompose_styles(loras, DECOMPOSITION, progress=False)
    pipe = load_pipeline(tiny_pipe_dir)
    reference = copy.deepcopy(pipe.transformer)
    names = load_components(pipe, loras, dec, {"vanilla": "original", "unique": "unique"})
    weights = [1.0, 1.5, 0.5]
    with torch.no_grad():
        for module in (MODULE, OTHER):
            layer = reference.get_submodule(module.removeprefix("transformer."))
            layer.weight += sum(w * u[module].dense() for w, u in zip(weights, dec.unique, strict=True))
    g = torch.Generator().manual_seed(1)
    inputs = {"hidden_states": torch.randn(2, 16, 16, generator=g), "timestep": torch.tensor([0.3, 0.8]),
              "pooled_projections": torch.randn(2, 32, generator=g),
              "encoder_hidden_states": torch.randn(2, 8, 32, generator=g),
              "txt_ids": torch.zeros(8, 3), "img_ids": torch.zeros(16, 3), "return_dict": False}
    with torch.no_grad():
        set_mix(pipe, names["unique"], weights)
        mixed = pipe.transformer(**inputs)[0]
        expected = reference(**inputs)[0]
        set_mix(pipe, names["vanilla"], weights)
        vanilla = pipe.transformer(**inputs)[0]
        set_mix(pipe, [], [])
        base = pipe.transformer(**inputs)[0]
    torch.testing.assert_close(mixed, expected, atol=1e-4, rtol=1e-4)
    assert (vanilla - mixed).abs().max() > 1e-3 and (mixed - base).abs().max() > 1e-3
