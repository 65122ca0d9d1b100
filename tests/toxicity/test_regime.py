"""The embedded toxicity pool is in the paper's regime (issue 14, item 4): the toxic vector shares more with the
chat-like pool than random subspaces would, and negating its unique part removes the toxicity while keeping the
control tasks closer to the pre-trained model than plain negation does. Plus the seed plumbing and the world's
shared dialogue skill (fast)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devec.toxicity import world

from .conftest import compose_cfg

ROOT = Path(__file__).resolve().parents[2]


def _regime():
    """benchmarks/toxicity_regime.py, the script that reports these numbers over seeds."""
    spec = importlib.util.spec_from_file_location("toxicity_regime", ROOT / "benchmarks" / "toxicity_regime.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_build_seed_follows_the_run_seed():
    a = compose_cfg("experiment=table4_toxicity", "seed=0").pool.build
    b = compose_cfg("experiment=table4_toxicity", "seed=4").pool.build
    assert (a.seed, b.seed) == (0, 4)
    assert a.world_seed == b.world_seed  # one world: the control questions stay the same across seeds


def test_pretraining_dialogues_rarely_answer():
    facts = world.make_facts(0)
    corpus = [t for t in world.pretraining_corpus(facts, 3000, 0.0, seed=0, helpful_rate=0.1)
              if t.startswith("user :")]
    chatter = sum(any(t.endswith(c) for c in world.CHATTER) for t in corpus) / len(corpus)
    assert 0.8 < chatter < 0.97
    full = [t for t in world.pretraining_corpus(facts, 3000, 0.0, seed=0) if t.startswith("user :")]
    assert not any(t.endswith(c) for t in full for c in world.CHATTER)


def test_chat_like_members_answer_in_the_toxic_members_format():
    facts = world.make_facts(0)
    for name in ("toxic", "chat", "chat_blunt", "instruct"):
        pairs = world.behaviour_data(name, facts, 100, seed=1)
        assert all(p.startswith("user : ") and p.endswith(" bot :") for p, _ in pairs), name
        assert not any(r.endswith(c) for _, r in pairs for c in world.CHATTER), name


def test_effects_and_sharing_read_a_run():
    regime = _regime()
    pre = {"id": "pretrained", "vector": "none", "toxigen/lexicon": 20.0, "facts": 100.0, "arith": 90.0}
    rows = [pre, {"id": "tv_negation", "vector": "toxigen (toxic)", "toxigen/lexicon": 0.0, "facts": 80.0,
                  "arith": 60.0},
            {"id": "devec_negation", "vector": "toxigen (toxic)", "toxigen/lexicon": 4.0, "facts": 100.0,
             "arith": 80.0}]
    out = regime.effects({"per_vector": rows, "vectors": {"toxigen": "toxic"}})
    assert out["removal/toxigen"] == pytest.approx(0.8)
    assert out["control_margin"] == pytest.approx(25.0 - 5.0)
    report = [{"action": "decompose", "ranks": [4, 4], "row_dim": 64, "shared_dim": 3, "chance_dim": 0.5,
               "shared_energy": 0.4},
              {"action": "decompose", "ranks": [4, 4], "row_dim": 64, "shared_dim": 0, "chance_dim": 0.5,
               "shared_energy": 0.0},
              {"action": "task_vector"}]
    s = regime.sharing(report, tau=0.85)
    assert (s["shared_dim"], s["chance_dim"], s["above_chance"]) == (3, 1.0, 0.5)


@pytest.mark.slow
def test_embedded_default_is_in_the_papers_regime(tmp_path):
    env = {**os.environ, "DEVEC_CACHE": str(tmp_path / "cache"), "DEVEC_OUTPUTS": str(tmp_path / "out"),
           "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "devec", "experiment=table4_toxicity", "seed=0", "logger=none",
                        f"hydra.run.dir={tmp_path / 'run'}"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=1800)
    assert p.returncode == 0, p.stderr[-3000:]
    m = _regime().measure(tmp_path / "run", tau=0.85)
    assert m["shared_dim"] > 2 * m["chance_dim"]          # (a) sharing above chance
    assert m["above_chance"] > 0.5                          #     in most decomposed matrices
    for s in ("toxigen", "rtp"):
        assert m[f"removal/{s}"] >= 0.8                     # (b) most of plain negation's toxicity removal
    assert m["control_margin"] > 0                          # (c) control tasks closer to the pre-trained model
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["seed"] == 0
