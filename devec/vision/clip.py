"""CLIP models through open_clip: build from a named or inline architecture, tokenize, and map HF CLIP weights in.

Every pool ends up as an open_clip ``CLIP``; task vectors live on the image encoder's parameters
(``model.visual``, open_clip names such as ``transformer.resblocks.0.attn.in_proj_weight``), as in the paper.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def build_clip(arch: str | Mapping[str, Any]) -> nn.Module:
    """An open_clip CLIP: a registered model name (``ViT-B-32``) or an inline config (embed_dim, vision, text)."""
    import open_clip

    if isinstance(arch, str):
        return open_clip.create_model(arch, pretrained=None)
    arch = dict(arch)
    missing = {"embed_dim", "vision", "text"} - set(arch)
    if missing:
        raise ValueError(f"pool.arch needs keys embed_dim, vision, text (missing {sorted(missing)})")
    extra = {"init_logit_scale": float(arch["init_logit_scale"])} if arch.get("init_logit_scale") else {}
    return open_clip.CLIP(int(arch["embed_dim"]), vision_cfg=dict(arch["vision"]), text_cfg=dict(arch["text"]),
                          quick_gelu=bool(arch.get("quick_gelu", False)), **extra)


def tokenizer(arch: str | Mapping[str, Any]):
    """open_clip's tokenizer for ``arch`` (the CLIP BPE; inline archs use their text context length)."""
    import open_clip

    if isinstance(arch, str):
        return open_clip.get_tokenizer(arch)
    return open_clip.tokenizer.SimpleTokenizer(context_length=int(arch["text"]["context_length"]))


def visual_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The image encoder's parameters by open_clip name (what task vectors are made of)."""
    return {k: v.detach().clone() for k, v in model.visual.named_parameters()}


def normalize_images(x: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) or float in [0, 1] -> CLIP-normalized float."""
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    mean = torch.tensor(CLIP_MEAN, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


# ---------------------------------------------------------------- HF transformers CLIP -> open_clip

_LAYER = {
    "layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}


def _map_tower(sd: Mapping[str, torch.Tensor], prefix: str, text: bool) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    p = prefix
    if text:
        out["token_embedding.weight"] = sd[f"{p}embeddings.token_embedding.weight"]
        out["positional_embedding"] = sd[f"{p}embeddings.position_embedding.weight"]
        out["ln_final.weight"] = sd[f"{p}final_layer_norm.weight"]
        out["ln_final.bias"] = sd[f"{p}final_layer_norm.bias"]
    else:
        out["class_embedding"] = sd[f"{p}embeddings.class_embedding"]
        out["conv1.weight"] = sd[f"{p}embeddings.patch_embedding.weight"]
        out["positional_embedding"] = sd[f"{p}embeddings.position_embedding.weight"]
        for hf, oc in (("pre_layrnorm", "ln_pre"), ("post_layernorm", "ln_post")):
            out[f"{oc}.weight"], out[f"{oc}.bias"] = sd[f"{p}{hf}.weight"], sd[f"{p}{hf}.bias"]
    layers = sorted({int(k[len(p) + 15:].split(".")[0]) for k in sd if k.startswith(f"{p}encoder.layers.")})
    for i in layers:
        hf, oc = f"{p}encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[f"{oc}attn.in_proj_{kind}"] = torch.cat([sd[f"{hf}self_attn.{q}_proj.{kind}"] for q in "qkv"])
            for src, dst in _LAYER.items():
                out[f"{oc}{dst}.{kind}"] = sd[f"{hf}{src}.{kind}"]
    return out


def hf_clip_to_open_clip(sd: Mapping[str, torch.Tensor], visual_only: bool = False) -> dict[str, torch.Tensor]:
    """Map an HF ``CLIPModel`` / ``CLIPVisionModel`` state dict to open_clip ``CLIP`` names.

    A ``CLIPVisionModel`` (the FusionBench fine-tunes) has no ``visual_projection``: ``visual.proj`` is then
    absent and comes from the pre-trained model, which was frozen during fine-tuning.
    """
    sd = {k.removeprefix("model."): v for k, v in sd.items()}
    if "embeddings.patch_embedding.weight" in sd:  # CLIPVisionModel saved by transformers >= 5: no prefix
        sd = {f"vision_model.{k}": v for k, v in sd.items()}
    if not any(k.startswith("vision_model.") for k in sd):
        raise ValueError("not an HF CLIP checkpoint: no 'vision_model.*' parameters (is this an open_clip "
                         "checkpoint? use pool=vision/task_vectors, devec.vision.pool.OpenClipPool)")
    out = {f"visual.{k}": v for k, v in _map_tower(sd, "vision_model.", text=False).items()}
    if "visual_projection.weight" in sd:
        out["visual.proj"] = sd["visual_projection.weight"].t().contiguous()
    if not visual_only and any(k.startswith("text_model.") for k in sd):
        out.update(_map_tower(sd, "text_model.", text=True))
        out["text_projection"] = sd["text_projection.weight"].t().contiguous()
        out["logit_scale"] = sd["logit_scale"].reshape(())
    return out


def arch_from_hf_config(config: Mapping[str, Any] | str | Path) -> dict[str, Any]:
    """The inline open_clip architecture equal to an HF ``CLIPConfig`` (``config.json``)."""
    if not isinstance(config, Mapping):
        config = json.loads(Path(config).read_text())
    v, t = config["vision_config"], config["text_config"]
    act = {v.get("hidden_act", "quick_gelu"), t.get("hidden_act", "quick_gelu")}
    if act - {"quick_gelu", "gelu"} or len(act) != 1:
        raise ValueError(f"HF CLIP hidden_act {sorted(act)} has no open_clip equivalent (quick_gelu or gelu)")
    return {
        "embed_dim": config.get("projection_dim", 512),
        "quick_gelu": act == {"quick_gelu"},
        "vision": {"image_size": v["image_size"], "patch_size": v["patch_size"], "width": v["hidden_size"],
                   "layers": v["num_hidden_layers"], "head_width": v["hidden_size"] // v["num_attention_heads"],
                   "mlp_ratio": v["intermediate_size"] / v["hidden_size"]},
        "text": {"context_length": t.get("max_position_embeddings", 77), "vocab_size": t.get("vocab_size", 49408),
                 "width": t["hidden_size"], "heads": t["num_attention_heads"], "layers": t["num_hidden_layers"],
                 "mlp_ratio": t["intermediate_size"] / t["hidden_size"]},
    }


def strip_prefix(sd: Mapping[str, torch.Tensor], prefixes: tuple[str, ...] = ("model.", "module.")
                 ) -> dict[str, torch.Tensor]:
    """open_clip checkpoints saved inside a wrapper (task_vectors' ``ImageEncoder.model``) -> CLIP names."""
    out = dict(sd)
    for p in prefixes:
        if out and all(k.startswith(p) for k in out):
            out = {k[len(p):]: v for k, v in out.items()}
    return out
