"""Our fine-tuning experiment (task_vectors recipe) at the tiny preset: a checkpoint the open_clip pool loads."""

from __future__ import annotations

import pytest
import torch
from omegaconf import open_dict
from safetensors.torch import load_file, save_file

from devec.cli import execute
from devec.settings import validate
from devec.vision.pool import load_pool

from .conftest import tiny_cfg


def test_finetune_writes_an_open_clip_checkpoint_that_the_task_vectors_pool_loads(tmp_path):
    cfg = tiny_cfg("vision_finetune", tmp_path, "finetune.tasks=[shapes]", "finetune.train_transform=false")
    assert cfg.finetune.lr == 1.0e-3 and cfg.finetune.steps == 6    # the pool's budget at this scale
    results = execute(cfg, tmp_path / "out")
    path = tmp_path / "out" / "finetuned" / "shapes.safetensors"
    assert results["checkpoints"]["shapes"] == str(path)
    tuned = load_file(str(path))
    assert tuned and all(k.startswith("visual.") for k in tuned)
    # the embedded pre-trained CLIP the run fine-tuned, saved as an open_clip checkpoint
    from devec.vision.data import load_tasks

    tasks = load_tasks(cfg.data, ["shapes"], tmp_path / "cache")
    embedded = load_pool(cfg.pool, cfg.data, tasks, [], tmp_path / "cache")
    pre_path = tmp_path / "pre.safetensors"
    save_file({k: v.contiguous() for k, v in embedded.model.state_dict().items()}, str(pre_path))
    spec = {"_target_": "devec.vision.pool.OpenClipPool", "arch": dict(cfg.pool.arch), "pretrained": str(pre_path),
            "finetuned": {"shapes": str(path)}}
    with open_dict(cfg):
        spec["arch"]["vision"]["image_size"] = int(cfg.data.image_size)
    pool = load_pool(spec, cfg.data, tasks, ["shapes"], tmp_path / "cache")
    tv = pool.task_vectors(["shapes"])[0]
    assert sum(float(v.abs().sum()) for v in tv.values()) > 0       # it moved from the pre-trained encoder
    key = next(iter(tv))
    torch.testing.assert_close(tv[key], tuned[f"visual.{key}"] - embedded.pretrained[key])


@pytest.mark.parametrize(("override", "names"), [("finetune.tasks=[bogus]", "finetune.tasks"),
                                                 ("finetune.steps=0", "finetune.steps"),
                                                 ("+finetune.epochs=3", "finetune.epochs")])
def test_a_bad_finetune_setting_fails_before_any_build_naming_the_key(tmp_path, override, names):
    with pytest.raises(ValueError, match=names.replace(".", r"\.")):
        validate(tiny_cfg("vision_finetune", tmp_path, override))
