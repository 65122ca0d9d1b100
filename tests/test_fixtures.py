"""devec-fixtures at a tiny size: the task_vectors layout made by our converters loads through the paper pool."""

from __future__ import annotations

import pytest
import torch

from devec.vision.clip import arch_from_hf_config
from tests.conftest import tiny_clip_config

torch.set_num_threads(1)
TASKS = 2


@pytest.fixture(scope="module")
def tiny_mirror(tmp_path_factory):
    """A vision mirror of a tiny CLIP: the first two Table 1 tasks, FusionBench and task_vectors layouts."""
    from devec.fixtures import vision

    config = tiny_clip_config()
    out = tmp_path_factory.mktemp("mirror")
    vision.build(out, members=TASKS, n_train=2, n_test=2, config=config)
    return out


def _paper_pool_cfg(root, arch):
    """conf/pool/vision/paper.yaml as Hydra composes it, with pool.root pointing at ``root``."""
    from hydra import compose, initialize_config_dir

    from devec.cli import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["experiment=table1_multitask", "pool=vision/paper", f"pool.root={root}",
                                           "logger=none"])
    pool = dict(cfg.pool)
    pool.update(arch=arch, finetuned={k: str(v) for k, v in cfg.pool.finetuned.items()})
    return pool


def test_task_vectors_layout_loads_through_the_paper_pool(tiny_mirror, tmp_path):
    """The converted checkpoints load through OpenClipPool (pool=vision/paper's loader) with the same image-encoder
    weights as the FusionBench checkpoints through HubPool, task by task."""
    from devec.fixtures.vision import PRETRAINED, TASK_VECTORS, pool_ids, table1_tasks
    from devec.vision.pool import HubPool, OpenClipPool

    tasks = table1_tasks()[:TASKS]
    arch = arch_from_hf_config(tiny_mirror / PRETRAINED / "config.json")
    cfg = _paper_pool_cfg(tiny_mirror / TASK_VECTORS, arch)
    assert cfg["_target_"].endswith("OpenClipPool")
    paper = OpenClipPool(**{k: v for k, v in cfg.items() if k != "_target_"}).load(None, {}, tasks, tmp_path)
    ids = pool_ids(tasks)
    hub = HubPool(pretrained=str(tiny_mirror / PRETRAINED),
                  finetuned={t: str(tiny_mirror / ids[t]) for t in tasks}).load(None, {}, tasks, tmp_path)
    assert set(paper.pretrained) == set(hub.pretrained)
    for k, v in hub.pretrained.items():
        torch.testing.assert_close(paper.pretrained[k], v, rtol=0, atol=0)
    for t in tasks:
        for k, v in hub.finetuned[t].items():
            torch.testing.assert_close(paper.finetuned[t][k], v, rtol=0, atol=0, msg=f"{t}: {k}")
        delta = sum(float((hub.finetuned[t][k] - hub.pretrained[k]).abs().sum()) for k in hub.pretrained)
        assert delta > 0, f"{t}: the fine-tune equals the pre-trained encoder"
    text = {k: v for k, v in paper.model.state_dict().items() if not k.startswith("visual.")}
    for k, v in hub.model.state_dict().items():
        if k in text:
            torch.testing.assert_close(text[k], v, rtol=0, atol=0, msg=f"text tower: {k}")


def test_task_vectors_files_came_through_devec_convert(tiny_mirror):
    """Each file is devec-convert's output of a pickled whole module (its metadata names the pickle); no pickle is
    left beside it; the fine-tunes carry no text transformer, as the released ones."""
    import json

    from safetensors import safe_open

    from devec.fixtures.vision import TASK_VECTORS, table1_tasks, task_vectors_paths

    zeroshot, finetuned = task_vectors_paths(tiny_mirror / TASK_VECTORS, table1_tasks()[:TASKS])
    for path in (zeroshot, *finetuned.values()):
        assert path.exists() and not path.with_suffix(".pt").exists()
        with safe_open(str(path), framework="pt") as f:
            assert f.metadata()["converted_from"] == path.with_suffix(".pt").name
            keys = list(f.keys())
        assert all(k.startswith("model.") for k in keys)
        has_text = any(k.startswith("model.transformer.") for k in keys)
        assert has_text == (path == zeroshot), path
    info = json.loads((tiny_mirror / "fixtures-vision.json").read_text())
    assert info["task_vectors_root"] == str(tiny_mirror / TASK_VECTORS)


def test_convert_mirror_cli_refuses_a_folder_without_fixtures(tmp_path):
    """``devec-fixtures task_vectors`` names what --source must be."""
    from devec.fixtures.cli import main

    with pytest.raises(SystemExit, match="devec-fixtures vision"):
        main(["task_vectors", "--source", str(tmp_path), "--out", str(tmp_path / "tv")])
