"""Table 3 and Figs. 2/3/9 as the paper: pairwise shared and unique parts, the paper's groups, checks before builds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from devec.cli import CONFIG_DIR
from devec.settings import validate
from devec.vision.runner import _ablation_parts, pairwise_unique

from .conftest import tiny_cfg

DATA = Path(CONFIG_DIR) / "data" / "vision"
DECOMPOSITION = {"mode": "pairwise", "tau": 0.85, "rank": "full", "method": "lowrank", "svd": "auto", "cache": False}
NAME = "blocks.0.mlp.weight"


def _pool(k: int = 3, n: int = 12, m: int = 8) -> tuple[list[dict[str, torch.Tensor]], torch.Tensor]:
    """``k`` task vectors W_i = a b_i^T + (a rank-2 part of their own): one column direction ``a`` is shared."""
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(n, 1 + 2 * k, generator=g, dtype=torch.float64))[0]
    a = basis[:, :1]
    vectors = []
    for i in range(k):
        own = basis[:, 1 + 2 * i: 3 + 2 * i]
        w = 3.0 * a @ torch.randn(1, m, generator=g, dtype=torch.float64)
        w += own @ torch.randn(2, m, generator=g, dtype=torch.float64)
        vectors.append({NAME: w, "blocks.0.mlp.bias": torch.randn(n, generator=g, dtype=torch.float64)})
    return vectors, a


@pytest.mark.parametrize("how", ["iterative", "projection"])
def test_pairwise_unique_removes_every_shared_direction_and_keeps_the_rest(how):
    vectors, a = _pool()
    unique = pairwise_unique(vectors, DECOMPOSITION, how)
    assert len(unique) == len(vectors)
    for w, u in zip(vectors, unique, strict=True):
        own = w[NAME] - a @ (a.T @ w[NAME])
        assert torch.allclose(a.T @ u[NAME], torch.zeros(1, u[NAME].shape[1], dtype=u[NAME].dtype), atol=1e-8)
        assert torch.allclose(u[NAME], own, atol=1e-8)  # only the shared direction went


def test_pairwise_unique_projection_is_orthogonal_to_each_pairwise_shared_component():
    from devec.vectors import DecompositionSettings, decompose_model

    vectors, _ = _pool(k=4)
    unique = pairwise_unique(vectors, DECOMPOSITION, "projection")
    joint = DecompositionSettings.from_config(DECOMPOSITION, mode="joint")
    for i in range(4):
        for j in range(4):
            if i != j:
                shared = decompose_model([vectors[i], vectors[j]], joint, progress=False).shared[0][NAME]
                assert float((shared.T @ unique[i][NAME]).abs().max()) < 1e-8


def test_pairwise_unique_refuses_an_unknown_definition_naming_the_key():
    with pytest.raises(ValueError, match=r"vision\.ablation\.unique='mean'"):
        pairwise_unique(_pool()[0], DECOMPOSITION, "mean")


def test_table3_rows_add_the_remaining_vectors_their_pairwise_shared_and_unique_parts():
    vectors, _ = _pool(k=4)
    parts, dim = _ablation_parts(vectors, DECOMPOSITION, {"mode": "pairwise", "unique": "projection"}, None)
    assert {r: len(v) for r, v in parts.items()} == {"task_arithmetic": 4, "tv_shared": 4 + 6, "unique_shared": 4 + 6,
                                                     "unique_only": 4, "shared_only": 6}
    assert parts["task_arithmetic"] is vectors and dim >= 1.0  # the planted direction is shared by every pair
    joint, _ = _ablation_parts(vectors, DECOMPOSITION, {"mode": "joint"}, None)
    assert len(joint["shared_only"]) == 1 and len(joint["unique_only"]) == 4


def test_paper_scale_names_the_papers_targets_and_groups():
    paper = yaml.safe_load((DATA / "paper.yaml").read_text())
    assert paper["ablation_tasks"] == ["stanford_cars", "eurosat", "gtsrb", "mnist", "resisc45", "svhn", "cifar100",
                                       "fgvc_aircraft", "oxford_pets", "country211"]
    groups = [(g["figure"], g["sources"], g["target"]) for g in paper["arithmetic_groups"]]
    assert groups == [("Fig. 2", ["sun397", "cifar100", "caltech256"], "imagenet"),
                      ("Fig. 3", ["mnist", "svhn"], "gtsrb"),
                      ("Fig. 9a", ["gtsrb", "svhn"], "mnist"),
                      ("Fig. 9b", ["gtsrb", "svhn"], "mnist_c_glass_blur")]
    embedded = yaml.safe_load((DATA / "embedded.yaml").read_text())
    assert [len(g["sources"]) for g in embedded["arithmetic_groups"]] == [3, 2, 2]  # Fig. 2: k = 3, Figs. 3, 9: 2


BAD = [
    ("fig2_fig3_arithmetic", ["vision.arithmetic.groups=[{sources:[shapes,bogus],target:handwritten}]"],
     "vision.arithmetic.groups[0].sources"),
    ("fig2_fig3_arithmetic", ["vision.arithmetic.groups=[{sources:[shapes,textures],target:nowhere}]"],
     "vision.arithmetic.groups[0].target"),
    ("fig2_fig3_arithmetic", ["vision.arithmetic.groups=[{sources:[shapes,textures],target:shapes}]"],
     "vision.arithmetic.groups[0].target='shapes' is also one of its sources"),
    ("table3_ablation", ["vision.ablation.extra=[shapes]"], "vision.ablation.extra"),
    ("table3_ablation", ["vision.ablation.extra=[bogus]"], "vision.ablation.extra"),
    ("table3_ablation", ["vision.ablation.unique=mean"], "vision.ablation.unique"),
    ("table3_ablation", ["vision.ablation.mode=joint"], "decomposition.mode='pairwise'"),
    ("table3_ablation", ["vision.tasks=[handwritten,street_digits]"], "needs at least two"),
    ("fig2_fig3_arithmetic", ["pool=vision/paper", "data=vision/paper", "~pool.finetuned.svhn",
                              "vision.arithmetic.groups=[{sources:[mnist,svhn],target:gtsrb}]"], "pool.finetuned.svhn"),
]


@pytest.mark.parametrize(("experiment", "overrides", "names"), BAD, ids=[o[-1] for _, o, _ in BAD])
def test_a_bad_protocol_setting_is_refused_before_any_build_naming_the_key(tmp_path, experiment, overrides, names):
    cfg = tiny_cfg(experiment, tmp_path, *overrides)
    with pytest.raises(ValueError) as err:
        validate(cfg)
    assert names in str(err.value)


def test_table3_joint_variant_passes_with_the_joint_decomposition(tmp_path):
    validate(tiny_cfg("table3_ablation", tmp_path, "vision.ablation.mode=joint", "decomposition=joint"))
