"""Zero-shot heads as the checkpoints were trained, the paper's dataset ids, and the paper-scale default pool."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from devec.cli import CONFIG_DIR
from devec.vision.data import ImageSet, Task
from devec.vision.head_text import EUROSAT, SETS, TEMPLATES, head_text
from devec.vision.pool import HubPool, OpenClipPool, head_inputs


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=["experiment=table1_multitask", "scale=paper", "logger=none", *overrides])


def _task(classnames, templates=("a photo of a {c}.",)):
    empty = ImageSet(torch.zeros(0, 3, 4, 4, dtype=torch.uint8), torch.zeros(0))
    return Task("x", list(classnames), list(templates), empty, empty, empty)


def test_template_lists_are_the_reference_codes_not_shortened():
    counts = {"stanford_cars": 8, "resisc45": 18, "eurosat": 3, "gtsrb": 3, "dtd": 8, "cifar100": 18, "sun397": 2,
              "mnist": 1, "svhn": 1}
    assert {t: len(TEMPLATES[t]) for t in counts} == counts
    assert "a photo of the {c}, a type of car." not in TEMPLATES["stanford_cars"]   # not in either reference
    assert TEMPLATES["resisc45"][:2] == ["satellite imagery of {c}.", "aerial imagery of {c}."]
    assert TEMPLATES["cifar100"][7:10] == ["a photo of a small {c}.", "a photo of a big {c}.", "a photo of the {c}."]
    assert all("{c}" in t for ts in TEMPLATES.values() for t in ts)


def test_the_heads_take_the_sets_descriptive_class_names_over_the_datasets_labels():
    folder_names = ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture",
                    "PermanentCrop", "Residential", "River", "SeaLake"]
    classnames, templates = head_inputs("task_vectors", "eurosat", _task(folder_names))
    assert classnames == EUROSAT and classnames[2] == "brushland or shrubland"
    assert templates == TEMPLATES["eurosat"]
    names, _ = head_inputs("task_vectors", "stanford_cars", _task(["Audi TT 2012", "BMW M3 2012"]))
    assert names == ["Audi TT 2012", "BMW M3 2012"]        # the reference code takes them from its dataset
    assert head_inputs(None, "eurosat", _task(folder_names)) == (folder_names, ["a photo of a {c}."])


def test_a_set_whose_class_count_differs_from_the_dataset_names_the_keys():
    with pytest.raises(ValueError, match=r"pool.head_text='fusionbench'.*data.tasks_hf.gtsrb"):
        head_inputs("fusionbench", "gtsrb", _task(["a", "b"]))


def test_an_unknown_head_set_fails_when_the_pool_config_is_built():
    with pytest.raises(ValueError, match="pool.head_text='ilharco'"):
        OpenClipPool(arch="ViT-B-32", pretrained="x", head_text="ilharco")
    with pytest.raises(ValueError, match="unknown set"):
        head_text("nope", "mnist")


def test_imagenet_uses_clips_1000_names_and_80_templates():
    text = head_text("task_vectors", "imagenet")
    assert len(text["classnames"]) == 1000 and len(text["templates"]) == 80
    assert SETS["task_vectors"]["mnist_c_glass_blur"] == SETS["task_vectors"]["mnist"]


def test_paper_scale_defaults_to_the_task_vectors_checkpoints_with_fusionbench_one_override_away():
    cfg = _compose()
    pool = instantiate(cfg.pool)
    assert isinstance(pool, OpenClipPool) and pool.head_text == "task_vectors"
    assert pool.finetuned["stanford_cars"].endswith("ViT-B-32/Cars/finetuned.safetensors")
    assert {"cifar100", "oxford_pets", "fgvc_aircraft", "country211", "caltech256"} <= set(pool.finetuned)
    fb = instantiate(_compose("pool=vision/paper_fusionbench").pool)
    assert isinstance(fb, HubPool) and fb.head_text == "fusionbench"
    assert fb.finetuned["cifar100"] == "tanganke/clip-vit-base-patch32_cifar100"
    assert fb.finetuned["oxford_pets"] == "tanganke/clip-vit-base-patch32_oxford-iiit-pet"


def test_paper_data_has_the_audits_ids_and_marks_the_unverified_ones():
    hf = OmegaConf.to_container(_compose().data.tasks_hf)
    assert hf["svhn"]["path"] == "ufldl-stanford/svhn" and hf["svhn"]["name"] == "cropped_digits"
    assert hf["imagenet"]["path"] == "ILSVRC/imagenet-1k" and hf["imagenet"]["test_split"] == "validation"
    assert hf["caltech256"]["path"] == "ilee0022/Caltech-256"
    assert hf["mnist_c_glass_blur"]["status"] == "unverified"
    for name in ("country211", "fgvc_aircraft"):
        assert hf[name]["status"] == "unverified" and hf[name]["label_key"] == "cls"
    assert all(spec.get("status") in ("verified", "unverified") for spec in hf.values())
    assert not any("templates" in spec for spec in hf.values())   # the heads' templates come from the pool's set


def test_class_names_come_from_the_datasets_classnames_file_and_a_bad_status_is_refused(tmp_path):
    from devec.vision.data import HubTasks, _classnames_file

    (tmp_path / "classnames.txt").write_text("Albania\nAlgeria\n\nAndorra\n")
    assert _classnames_file(str(tmp_path), "classnames.txt", "country211", None) == ["Albania", "Algeria", "Andorra"]
    with pytest.raises(ValueError, match=r"data.tasks_hf.x.status='maybe'"):
        HubTasks(tasks_hf={"x": {"path": "p", "status": "maybe"}})
