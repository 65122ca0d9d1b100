"""scale=paper end to end on full-size fixtures (``devec-fixtures``): only the download differs from a real run.

Slow (minutes each, several GB of fixtures in the session's temporary folder): ``pytest -m slow
tests/test_paper_dry_runs.py``. Every run reads the hub ids of the paper's configs from the generated mirror
(``paths.hub_mirror``); the overrides shorten the stages (few test images, AdaMerging steps=2, a handful of
lm-eval examples, one denoising step), never the model sizes. ``DEVEC_FIXTURES_MIRROR=DIR`` reuses fixtures written
before by ``devec-fixtures all --out DIR``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

VISION_TASKS = "[eurosat,mnist,svhn]"   # few classes: the zero-shot heads of true-size CLIP stay cheap on a CPU


@pytest.fixture(scope="session")
def mirror(tmp_path_factory) -> Path:
    """One hub mirror for the session, the fixture kinds written into it on first use; DEVEC_FIXTURES_MIRROR reuses
    a mirror ``devec-fixtures`` wrote before (about 19 GB for all three kinds)."""
    given = os.environ.get("DEVEC_FIXTURES_MIRROR")
    return Path(given) if given else tmp_path_factory.mktemp("mirror")


def _fixtures(mirror: Path, kind: str, *extra: str) -> Path:
    if not (mirror / f"fixtures-{kind}.json").exists():
        subprocess.run([sys.executable, "-m", "devec.fixtures.cli", kind, "--out", str(mirror), *extra], check=True)
    return mirror


def _devec(tmp_path: Path, mirror: Path, *overrides: str) -> dict:
    """Run ``devec scale=paper`` on the mirror; the results.json it wrote."""
    out = tmp_path / "outputs"
    env = {**os.environ, "DEVEC_OUTPUTS": str(out), "DEVEC_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "2",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "devec", "scale=paper", f"paths.hub_mirror={mirror}", "logger=none", *overrides]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-4000:]
    found = sorted(out.rglob("results.json"))
    assert found, f"no results.json under {out}"
    return json.loads(found[-1].read_text())


def _numbers(tree) -> list[float]:
    if isinstance(tree, dict):
        return [x for v in tree.values() for x in _numbers(v)]
    if isinstance(tree, list):
        return [x for v in tree for x in _numbers(v)]
    return [float(tree)] if isinstance(tree, int | float) and not isinstance(tree, bool) else []


def test_fixture_task_vectors_are_structured():
    """The fixtures' task vectors share a low-rank part: two members are far more aligned than noise would be."""
    from devec.fixtures.common import structured_delta

    a = structured_delta((256, 128), "w", 0)
    b = structured_delta((256, 128), "w", 1)
    cos = float((a * b).sum() / (a.norm() * b.norm()))
    assert cos > 0.2, cos          # pure noise of this size gives |cos| ~ 0.01
    assert torch_rank(a) < 40      # low-rank parts plus small noise: energy sits in a few directions


def torch_rank(m, energy: float = 0.9) -> int:
    import torch

    s = torch.linalg.svdvals(m.double())
    return int((torch.cumsum(s**2, 0) / (s**2).sum() < energy).sum()) + 1


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["fusionbench", "task_vectors"])
def test_table1_paper_scale_on_fixtures(mirror, tmp_path, layout):
    """Table 1 (true-size ViT-B/32) runs every row end to end from the mirror: FusionBench's pool, and the paper's
    default pool (task_vectors' checkpoints, converted by devec-convert) under ``<mirror>/task_vectors``."""
    _fixtures(mirror, "vision")
    if layout == "fusionbench":
        pool = ["pool=vision/paper_fusionbench"]
    else:
        if not (mirror / "task_vectors").exists():  # a mirror written before the vision kind wrote this layout
            subprocess.run([sys.executable, "-m", "devec.fixtures.cli", "task_vectors", "--source", str(mirror),
                            "--out", str(mirror / "task_vectors")], check=True)
        pool = ["pool=vision/paper", f"pool.root={mirror}/task_vectors"]
    res = _devec(tmp_path, mirror, "experiment=table1_multitask", *pool,
                 f"data.tasks={VISION_TASKS}", "vision.test_limit=4", "vision.val_limit=2",
                 "++pool.budget={adamerging:{steps:2,batch_size:2,batches:1},supervised:{steps:2,batch_size:2},"
                 "fisher:{examples:4},"
                 "regmean:{examples:4}}")
    values = _numbers(res)
    assert values and all(math.isfinite(v) for v in values)
    text = json.dumps(res)
    for row in ("task_arithmetic_devec", "adamerging_layer", "regmean", "fisher"):
        assert row in text, f"Table 1 row {row} missing from results.json"


@pytest.mark.slow
def test_table4_paper_scale_on_fixtures(mirror, tmp_path):
    """Table 4 (LLaMA-2-7B width, r = 256 DoRA vectors) from the mirror; lm-eval on the local control tasks."""
    _fixtures(mirror, "toxicity", "--members", "2")
    clf = "{_target_:devec.toxicity.evaluate.ToxigenRoberta,model:tomh/toxigen_roberta,device:cpu}"
    res = _devec(tmp_path, mirror, "experiment=table4_toxicity", f"paths.toxic_adapters={mirror}/toxic_adapters",
                 "~pool.subpools", "+pool.subpools={LLAMA-Chat:[llama2_chat]}", "method.subpool=LLAMA-Chat",
                 "method.subpools=[LLAMA-Chat]", "method.coefficients=[0.0,1.0]",
                 r"decomposition.policy.include=[model\.layers\.0\.self_attn\.q_proj]",
                 f"data.prompts.toxigen.root={mirror}/microsoft/TOXIGEN/prompts", "data.prompts.toxigen.per_group=1",
                 "data.prompts.toxigen.generation.max_new_tokens=4", "data.prompts.toxigen.generation.batch_size=4",
                 f"data.prompts.toxigen.classifiers=[{clf}]", f"data.prompts.rtp.classifiers=[{clf}]",
                 "data.prompts.rtp.n=2", "data.prompts.rtp.generation.max_new_tokens=4", f"data.classifiers=[{clf}]",
                 "data.control.embedded_tasks={world_seed:0,n:4,seed:13}", "data.control.lm_eval.batch_size=4",
                 "data.control.tasks=[{name:devec_facts,metric:acc,label:MMLU,num_fewshot:0}]",
                 "data.sweep_control=[devec_facts]", "data.tau_sweep_control=[devec_facts]")
    values = _numbers(res)
    assert values and all(math.isfinite(v) for v in values)


@pytest.mark.slow
def test_fig4_style_mix_paper_scale_on_fixtures(mirror, tmp_path):
    """Fig. 4's mix (FLUX.1-schnell width, kohya LoRAs) from the mirror: one denoising step at 64 x 64."""
    _fixtures(mirror, "style")
    res = _devec(tmp_path, mirror, "experiment=fig4_style_mixing", f"pool.lora_dir={mirror}/style_loras",
                 "data.height=64", "data.width=64", "data.steps=1", "data.figures.fig4.seeds=[0]", "data.batch_size=1",
                 "data.max_sequence_length=32")
    values = _numbers(res)
    assert values and all(math.isfinite(v) for v in values)
