"""Every toxicity experiment composes at both scales; pool members and sub-pools are consistent."""

from __future__ import annotations

import pytest

from tests.toxicity.conftest import compose_cfg

EXPERIMENTS = ["table4_toxicity", "fig5_negation_coefficient", "fig6_tau", "toxicity_train_dora"]


@pytest.mark.parametrize("scale", ["embedded", "paper"])
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiments_compose(experiment, scale):
    cfg = compose_cfg(f"experiment={experiment}", f"scale={scale}")
    assert cfg.runner._target_.startswith("devec.toxicity.runner.") and cfg.runner._partial_
    assert set(cfg.data.sweep_control) <= {t.name for t in cfg.data.control.tasks}  # control tasks by id
    assert cfg.decomposition.mode == "iterative"
    members = set(cfg.pool.members) if "members" in cfg.pool else set(cfg.pool.build.members)
    assert cfg.pool.toxic in members
    for name, spec in cfg.pool.subpools.items():
        if not hasattr(spec, "keys"):
            assert set(spec) <= members - {cfg.pool.toxic}, name
    if experiment != "toxicity_train_dora":
        assert set(cfg.method.subpools) <= set(cfg.pool.subpools)


def test_paper_pool_matches_the_paper():
    cfg = compose_cfg("experiment=table4_toxicity", "scale=paper")
    assert cfg.pool.base == "meta-llama/Llama-2-7b-hf"
    assert len([m for m in cfg.pool.members if not m.startswith("toxic")]) == 10
    assert set(cfg.pool.subpools) == {"LLAMA-Chat", "All-LLAMA-Chats", "Narrow", "Small Instruct", "Random",
                                      "Instruct EMMA", "All-Models"}
    r = cfg.pool.recipe
    assert (r.r, r.alpha, r.dropout, r.lr, r.batch_size) == (256, 512, 0.02, 2e-4, 256)
    assert (r.datasets.rtp.epochs, r.datasets.toxigen.epochs) == (7, 15)
    assert [t.name for t in cfg.data.control.tasks] == ["gsm8k", "bbh_cot_fewshot", "mmlu", "tydiqa_goldp"]
    assert {c._target_ for c in cfg.data.classifiers} == {"devec.toxicity.evaluate.ToxigenRoberta",
                                                          "devec.toxicity.evaluate.DetoxifyClassifier"}
