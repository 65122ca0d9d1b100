"""LoRA files in kohya, diffusers and peft naming load to the same factors and the same effect on the pipeline."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from devec.style.loras import load_adapter, read_lora, save_lora, to_diffusers_state_dict
from devec.style.pipeline import load_pipeline

from .conftest import ATTN, random_factors


def _dense(lora):
    return {m: f.dense() for m, f in lora.factors.items()}


def write_kohya(path, factors, alpha: float):
    """sd-scripts naming of the original Flux model: fused img_attn_qkv, img_attn_proj, single linear2."""
    rank = factors[ATTN + "to_q"].A.shape[0]
    fold = factors[ATTN + "to_q"].scale * rank / alpha  # kohya applies alpha / rank at load time
    sd = {
        "lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": factors[ATTN + "to_q"].A,
        "lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight":
            torch.cat([factors[ATTN + p].B for p in ("to_q", "to_k", "to_v")]) * fold,
        "lora_unet_double_blocks_0_img_attn_qkv.alpha": torch.tensor(alpha),
        "lora_unet_double_blocks_0_img_attn_proj.lora_down.weight": factors[ATTN + "to_out.0"].A,
        "lora_unet_double_blocks_0_img_attn_proj.lora_up.weight": factors[ATTN + "to_out.0"].B * fold,
        "lora_unet_double_blocks_0_img_attn_proj.alpha": torch.tensor(alpha),
        "lora_unet_single_blocks_0_linear2.lora_down.weight":
            factors["transformer.single_transformer_blocks.0.proj_out"].A,
        "lora_unet_single_blocks_0_linear2.lora_up.weight":
            factors["transformer.single_transformer_blocks.0.proj_out"].B * fold,
        "lora_unet_single_blocks_0_linear2.alpha": torch.tensor(alpha),
    }
    save_file({k: v.clone().contiguous() for k, v in sd.items()}, str(path))


def write_diffusers_with_alpha(path, factors, alpha: float):
    """Diffusers naming with per-module ``.alpha`` keys (alpha / rank applied at load)."""
    sd = {}
    for m, f in factors.items():
        rank = f.A.shape[0]
        sd[f"{m}.lora_A.weight"] = f.A
        sd[f"{m}.lora_B.weight"] = f.B * (f.scale * rank / alpha)
        sd[f"{m}.alpha"] = torch.tensor(alpha)
    save_file({k: v.clone().contiguous() for k, v in sd.items()}, str(path))


def write_peft(folder, factors, alpha: float):
    """A peft adapter directory: base_model.model.<module> keys and adapter_config.json with r and lora_alpha."""
    folder.mkdir()
    rank = next(iter(factors.values())).A.shape[0]
    sd = {}
    for m, f in factors.items():
        inner = m.removeprefix("transformer.")
        sd[f"base_model.model.{inner}.lora_A.weight"] = f.A
        sd[f"base_model.model.{inner}.lora_B.weight"] = f.B * (f.scale * rank / alpha)
    save_file({k: v.clone().contiguous() for k, v in sd.items()}, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps({"r": rank, "lora_alpha": alpha, "peft_type": "LORA"}))


@pytest.fixture
def truth():
    return random_factors(seed=3, rank=4, scale=1.0)


def test_kohya_diffusers_and_peft_files_give_the_same_dense_updates(tmp_path, truth):
    write_kohya(tmp_path / "kohya.safetensors", truth, alpha=2.0)
    write_diffusers_with_alpha(tmp_path / "diffusers.safetensors", truth, alpha=8.0)
    write_peft(tmp_path / "peft", truth, alpha=16.0)
    expected = {m: f.dense() for m, f in truth.items()}
    for source in (tmp_path / "kohya.safetensors", tmp_path / "diffusers.safetensors", tmp_path / "peft"):
        lora = read_lora(source, name=source.stem)
        assert set(lora.factors) == set(expected), source
        for m, w in _dense(lora).items():
            torch.testing.assert_close(w, expected[m], atol=1e-5, rtol=1e-5, msg=f"{source.name}: {m}")
            assert lora.factors[m].A.shape[0] == 4  # the LoRA's rank is kept: nothing is densified


def test_kohya_fused_qkv_is_split_into_q_k_v_sharing_the_down_projection(tmp_path, truth):
    write_kohya(tmp_path / "kohya.safetensors", truth, alpha=4.0)
    lora = read_lora(tmp_path / "kohya.safetensors")
    a_q, a_k = lora.factors[ATTN + "to_q"].A, lora.factors[ATTN + "to_k"].A
    torch.testing.assert_close(a_q, a_k)
    assert lora.factors[ATTN + "to_v"].B.shape == truth[ATTN + "to_v"].B.shape


def test_written_factors_act_on_the_pipeline_like_the_original_file(tmp_path, tiny_pipe_dir, truth):
    """Reading a kohya file into factors and loading them back gives the same transformer as diffusers' own load."""
    write_kohya(tmp_path / "kohya.safetensors", truth, alpha=2.0)
    g = torch.Generator().manual_seed(0)
    inputs = {"hidden_states": torch.randn(1, 16, 16, generator=g), "timestep": torch.tensor([0.5]),
              "pooled_projections": torch.randn(1, 32, generator=g),
              "encoder_hidden_states": torch.randn(1, 8, 32, generator=g),
              "txt_ids": torch.zeros(8, 3), "img_ids": torch.zeros(16, 3), "return_dict": False}
    pipe = load_pipeline(tiny_pipe_dir)
    with torch.no_grad():
        base = pipe.transformer(**inputs)[0]
    pipe.load_lora_weights(str(tmp_path / "kohya.safetensors"), adapter_name="file")
    with torch.no_grad():
        via_file = pipe.transformer(**inputs)[0]
    pipe.delete_adapters("file")
    load_adapter(pipe, "factors", read_lora(tmp_path / "kohya.safetensors").factors)
    with torch.no_grad():
        via_factors = pipe.transformer(**inputs)[0]
    assert (via_file - base).abs().max() > 1e-3  # the LoRA does something
    torch.testing.assert_close(via_factors, via_file, atol=1e-5, rtol=1e-5)


def test_save_lora_round_trips_and_folds_the_scale(tmp_path, truth):
    scaled = {m: type(f)(f.B, f.A, 0.25) for m, f in truth.items()}
    save_lora(tmp_path / "out.safetensors", scaled)
    back = read_lora(tmp_path / "out.safetensors")
    for m, f in scaled.items():
        torch.testing.assert_close(back.factors[m].dense(), f.dense(), atol=1e-6, rtol=1e-6)


def test_dense_deltas_are_written_as_exact_low_rank_factors(truth):
    m = ATTN + "to_q"
    dense = truth[m].dense()
    sd = to_diffusers_state_dict({m: dense})
    a, b = sd[f"{m}.lora_A.weight"], sd[f"{m}.lora_B.weight"]
    assert a.shape[0] == 4
    torch.testing.assert_close(b @ a, dense, atol=1e-5, rtol=1e-5)


def test_a_file_without_lora_factors_is_refused_with_the_reason(tmp_path):
    save_file({"transformer.x.weight": torch.zeros(2, 2)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match="lora"):
        read_lora(tmp_path / "bad.safetensors")


def test_text_encoder_factors_in_older_down_up_naming_are_read_as_factors(tmp_path, truth):
    m = "text_encoder.text_model.encoder.layers.0.self_attn.q_proj"
    f = truth[ATTN + "to_q"]
    save_file({f"{m}.lora_linear_layer.down.weight": f.A.clone().contiguous(),
               f"{m}.lora_linear_layer.up.weight": f.B.clone().contiguous(),
               ATTN + "to_k.lora_A.weight": truth[ATTN + "to_k"].A.clone().contiguous(),
               ATTN + "to_k.lora_B.weight": truth[ATTN + "to_k"].B.clone().contiguous()},
              str(tmp_path / "te.safetensors"))
    lora = read_lora(tmp_path / "te.safetensors")
    assert set(lora.factors) == {m, ATTN + "to_k"} and not lora.extras
    torch.testing.assert_close(lora.factors[m].dense(), f.dense())
