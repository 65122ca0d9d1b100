"""DoRA adapters merge exactly into task vectors (Sec. 4.3: the toxic vector is a DoRA fine-tune)."""

from __future__ import annotations

import copy

import pytest
import torch

from devec.toxicity.recipe import dora_config
from devec.toxicity.sources import DoRASource, open_source
from devec.toxicity.tiny import tiny_llama


@pytest.mark.parametrize("use_dora", [True, False])
def test_adapter_delta_matches_peft_merge(tmp_path, use_dora):
    from peft import get_peft_model

    base = tiny_llama(40, 16, 2, 2, 24, seed=0)
    cfg = dora_config(4, 8, 0.0)
    cfg.use_dora = use_dora
    model = get_peft_model(copy.deepcopy(base), cfg)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
    model.save_pretrained(tmp_path / "adapter")
    merged = dict(copy.deepcopy(model).merge_and_unload().named_parameters())
    source = open_source(tmp_path / "adapter")
    assert isinstance(source, DoRASource) and source.use_dora == use_dora
    pre = dict(base.named_parameters())
    touched = 0
    for name, w_pre in pre.items():
        delta = source.delta(name, w_pre.detach())
        reference = merged[name].detach() - w_pre.detach()
        if delta is None:
            assert torch.equal(reference, torch.zeros_like(reference)), name
            continue
        touched += 1
        torch.testing.assert_close(delta, reference, rtol=1e-5, atol=1e-6)
    assert touched == len(source.params()) == 2 * 7   # all linear layers of 2 blocks


def test_dora_magnitude_changes_are_not_low_rank(tmp_path):
    """A DoRA delta includes the magnitude rescaling of W_pre: it is a dense matrix, not B A."""
    from peft import get_peft_model

    base = tiny_llama(40, 16, 1, 2, 24, seed=0)
    model = get_peft_model(copy.deepcopy(base), dora_config(2, 4, 0.0))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "magnitude" in name:
                p.mul_(1.1)
    model.save_pretrained(tmp_path / "a")
    w = dict(base.named_parameters())["model.layers.0.self_attn.q_proj.weight"].detach()
    delta = open_source(tmp_path / "a").delta("model.layers.0.self_attn.q_proj.weight", w)
    torch.testing.assert_close(delta, 0.1 * w, rtol=1e-4, atol=1e-6)   # B = 0 at init: pure rescaling
    assert torch.linalg.matrix_rank(delta) > 2


def test_rank_pattern_adapters_are_refused(tmp_path):
    import json

    from peft import get_peft_model

    base = tiny_llama(40, 16, 1, 2, 24, seed=0)
    get_peft_model(base, dora_config(2, 4, 0.0)).save_pretrained(tmp_path / "a")
    cfg_path = tmp_path / "a" / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["rank_pattern"] = {"q_proj": 8}
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="rank_pattern"):
        DoRASource(tmp_path / "a")
