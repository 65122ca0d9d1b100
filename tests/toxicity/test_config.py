"""Every toxicity experiment composes at both scales; pool members and sub-pools are consistent."""

from __future__ import annotations

import pytest

from devec.paper_numbers import APP13_MEMBERS, APP13_SUBPOOLS
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
    r = cfg.pool.recipe
    assert (r.r, r.alpha, r.dropout, r.lr, r.batch_size) == (256, 512, 0.02, 2e-4, 256)
    assert (r.datasets.rtp.epochs, r.datasets.toxigen.epochs) == (7, 15)
    assert [t.name for t in cfg.data.control.tasks] == ["gsm8k_cot", "bbh_cot_fewshot", "mmlu", "tydiqa_goldp"]


def test_paper_subpools_and_ids_are_app13s():
    """Every Fig. 5 sub-pool has App. 13's exact membership, every member the id its reference prints."""
    cfg = compose_cfg("experiment=fig5_negation_coefficient", "scale=paper")
    members = cfg.pool.members
    labels = {name: m.get("label") for name, m in members.items() if not name.startswith("toxic")}
    assert sorted(labels.values()) == sorted(APP13_MEMBERS)
    for name, label in labels.items():
        assert members[name].repo == APP13_MEMBERS[label], name        # a SET-ME placeholder fails here
    subpools = {s: sorted(labels[m] for m in spec) for s, spec in cfg.pool.subpools.items()}
    assert subpools == {s: sorted(spec) for s, spec in APP13_SUBPOOLS.items()}
    assert list(cfg.method.subpools) == list(APP13_SUBPOOLS)


def test_paper_protocol_is_model_surgerys():
    """Ref. [44]'s protocol: ToxiGen hate prompts per group, greedy, 128 tokens, newline stop, ToxiGen RoBERTa;
    RTP challenging, greedy, 20 tokens, Perspective with a labelled fallback; the control tasks' shots and limits."""
    cfg = compose_cfg("experiment=table4_toxicity", "scale=paper")
    tg, rtp = cfg.data.prompts.toxigen, cfg.data.prompts.rtp
    assert tg.source == "toxigen_files" and len(tg.groups) == 14 and tg.per_group == 500
    assert (tg.generation.do_sample, tg.generation.max_new_tokens, tg.generation.stop) == (False, 128, "\n")
    assert [c._target_.rsplit(".", 1)[1] for c in tg.classifiers] == ["ToxigenRoberta"]
    assert dict(rtp.filter) == {"challenging": True} and rtp.n is None
    assert (rtp.generation.do_sample, rtp.generation.max_new_tokens) == (False, 20)
    assert rtp.classifiers[0]._target_.endswith("PerspectiveClassifier") and rtp.classifiers[0].fallback
    shots = {t.name: (t.num_fewshot, t.get("limit")) for t in cfg.data.control.tasks}
    assert shots == {"gsm8k_cot": (8, None), "bbh_cot_fewshot": (3, 40), "mmlu": (0, None), "tydiqa_goldp": (1, 100)}
    assert list(cfg.data.sweep_control) == ["mmlu"] and list(cfg.data.tau_sweep_control) == ["gsm8k_cot"]
    assert dict(cfg.pool.toxic_vectors) == {"toxigen": "toxic_toxigen", "rtp": "toxic_rtp"}


def test_scale_specific_values_live_with_their_scale():
    embedded = compose_cfg("experiment=table4_toxicity", "scale=embedded")
    paper = compose_cfg("experiment=table4_toxicity", "scale=paper")
    assert embedded.decomposition.rank == "energy:0.99" and embedded.method.coefficient == 2.0
    assert paper.decomposition.rank != "energy:0.99" and paper.method.coefficient == "select"
    for cfg in (embedded, paper):
        assert max(cfg.method.coefficients) >= 5        # Sec. 4.3.2: the axis reaches -5
    fig6 = compose_cfg("experiment=fig6_tau", "scale=paper")
    assert "coefficient" not in fig6.method or fig6.method.coefficient == "select"
    assert {0.8, 0.85} <= set(fig6.method.taus)
