"""Vision fixtures: tiny tasks and the smallest real CLIP checkpoints in the real formats."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from safetensors.torch import save_file

from devec.cli import CONFIG_DIR

torch.set_num_threads(1)


def tiny_cfg(experiment: str, tmp: Path, *overrides: str):
    """The composed config of ``experiment`` at the tiny preset, as the ``devec`` command would build it."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=[f"experiment={experiment}", "pool=vision/tiny", "data=vision/tiny",
                                            "logger=none", f"paths.root_dir={tmp}", f"name={experiment}",
                                            *overrides])


@pytest.fixture(scope="session")
def hf_clip_config():
    from transformers import CLIPConfig

    return CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=16, hidden_act="quick_gelu"),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=16, patch_size=8, hidden_act="quick_gelu"),
        projection_dim=16)


@pytest.fixture(scope="session")
def hf_checkpoints(tmp_path_factory, hf_clip_config):
    """A tiny HF ``CLIPModel`` directory and two ``CLIPVisionModel`` fine-tunes (FusionBench's layout)."""
    from transformers import CLIPModel, CLIPVisionModel

    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    pre = CLIPModel(hf_clip_config).eval()
    pre.save_pretrained(root / "pretrained", safe_serialization=True)
    tuned = []
    for i in range(2):
        vis = CLIPVisionModel(hf_clip_config.vision_config)
        tower = getattr(vis, "vision_model", vis)  # transformers >= 5 flattens CLIPVisionModel
        tower.load_state_dict(pre.vision_model.state_dict())
        with torch.no_grad():
            for p in vis.parameters():
                p.add_(0.01 * (i + 1) * torch.randn_like(p))
        vis.save_pretrained(root / f"ft{i}", safe_serialization=True)
        if i == 1:  # the hub's FusionBench files (transformers 4): keys under "vision_model."
            sd = {f"vision_model.{k}" if not k.startswith("vision_model.") else k: v.contiguous()
                  for k, v in tower.state_dict().items()}
            save_file(sd, str(root / "ft1" / "model.safetensors"))
        tuned.append(vis.eval())
    return root, pre, tuned
