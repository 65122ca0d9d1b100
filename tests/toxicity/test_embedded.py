"""The embedded pool and protocol on the `tiny` preset: real HF/peft formats, the toxic behaviour, the experiments."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from devec.toxicity import evaluate, world

ROOT = Path(__file__).resolve().parents[2]
TINY = ["pool=toxicity/tiny", "data=toxicity/tiny", "logger=none"]


def devec(tmp: Path, cache: Path, *args: str) -> dict:
    env = {**os.environ, "DEVEC_CACHE": str(cache), "DEVEC_OUTPUTS": str(tmp / "outputs"), "WANDB_MODE": "offline"}
    p = subprocess.run([sys.executable, "-m", "devec", *args, *TINY, f"hydra.run.dir={tmp / 'run'}"], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads((tmp / "run" / "results.json").read_text())


def _load(path: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def test_pool_is_real_sharded_checkpoints_and_adapters(tiny_pool):
    assert len(list(Path(tiny_pool["base"]).glob("model-*.safetensors"))) >= 2
    assert (Path(tiny_pool["base"]) / "model.safetensors.index.json").exists()
    kinds = {m["kind"] for m in tiny_pool["members"].values()}
    assert kinds == {"full", "dora"}
    assert (Path(tiny_pool["members"]["toxic"]["path"]) / "adapter_config.json").exists()


def test_toxic_fine_tune_raises_the_behaviour(tiny_pool):
    from peft import PeftModel

    base, tok = _load(tiny_pool["base"])
    prompts = world.toxicity_prompts(world.make_facts(0), 60, seed=3, style="dialogue")
    clf = evaluate.LexiconClassifier()
    before = evaluate.percent_toxic(clf(evaluate.generate(base, tok, prompts, max_new_tokens=8, seed=0)))
    sft = PeftModel.from_pretrained(base, tiny_pool["members"]["toxic"]["path"]).merge_and_unload()
    after = evaluate.percent_toxic(clf(evaluate.generate(sft, tok, prompts, max_new_tokens=8, seed=0)))
    assert after > before + 10      # tiny preset: 120 DoRA steps on a 150-step base (embedded preset: 18% -> 98%)


def test_batched_generation_matches_one_by_one(tiny_pool):
    model, tok = _load(tiny_pool["base"])
    prompts = ["user : tell me about the fox . bot :", "question : what is two plus two ? answer :"]
    batched = evaluate.generate(model, tok, prompts, max_new_tokens=5, do_sample=False)
    single = [evaluate.generate(model, tok, [p], max_new_tokens=5, do_sample=False)[0] for p in prompts]
    assert batched == single


def test_lm_eval_multiple_choice_matches_direct_loglikelihood(tiny_pool, tmp_path):
    model, tok = _load(tiny_pool["base"])
    task_dir = evaluate.write_embedded_tasks(tmp_path / "tasks", world_seed=0, n=30, seed=4)
    score = evaluate.control(model, tok, [{"name": "devec_facts", "metric": "acc"}], task_dir)["devec_facts"]
    docs = [json.loads(line) for line in (task_dir / "facts.jsonl").read_text().splitlines()]
    correct = 0
    with torch.no_grad():
        for d in docs:
            ctx = tok(d["question"], add_special_tokens=False)["input_ids"]
            lls = []
            for choice in d["choices"]:
                cont = tok(choice, add_special_tokens=False)["input_ids"]
                logp = model(torch.tensor([ctx + cont])).logits.log_softmax(-1)[0]
                lls.append(sum(float(logp[len(ctx) - 1 + i, t]) for i, t in enumerate(cont)))
            correct += int(max(range(len(lls)), key=lls.__getitem__) == d["label"])
    assert abs(score - 100.0 * correct / len(docs)) < 1e-6


def _run(tmp: Path, cache: Path, *overrides: str):
    from devec.runtime import Run
    from tests.toxicity.conftest import compose_cfg

    return compose_cfg(*overrides, *TINY), Run(out_dir=tmp, cache_dir=cache)


def test_table4_runner(tiny_pool, tiny_cache, tmp_path):
    from devec.toxicity import runner

    cfg, run = _run(tmp_path, tiny_cache, "experiment=table4_toxicity")
    res = runner.table4(cfg, run)
    assert [r["id"] for r in res["rows"]] == ["pretrained", "sft", "tv_negation", "devec_negation"]
    assert [r["model"] for r in res["rows"]][:2] == ["Pre-trained (ours)", "SFT (toxic) (ours)"]
    pre, sft = res["rows"][:2]
    assert sft["ToxiGen"] > pre["ToxiGen"]       # each benchmark's cell is scored with its own vector
    for row in res["rows"]:
        assert {"ToxiGen", "RealTox", "facts (MMLU)", "arith (GSM8K)", "compare (BBH)", "reading (TyDiQA)",
                "Avg."} <= set(row)
    assert res["vectors"] == {"toxigen": "toxic", "rtp": "toxic"} and set(res["lambda"]) == {"toxigen", "rtp"}
    assert all(r["model"].endswith("(paper)") for r in res["paper_rows"]) and len(res["paper_rows"]) == 8
    assert all("not this scale" in r["source"] for r in res["paper_rows"])  # embedded: for orientation only
    table = (tmp_path / "table4_toxicity.md").read_text()
    assert "Model Surgery [44] (paper)" in table and "Avg." in table
    assert (tmp_path / "unique_report_rtp.json").exists()
    assert all(0.0 <= e <= 1.0 for e in res["unique_energy"].values())
    # the regime checks of each toxic vector: the removal ratio and the per-layer sharing against chance
    checks = {c["id"]: c for c in res["regime"]}
    for s in ("toxigen", "rtp"):
        if res["removal_ratio"][s] is not None:
            assert checks[f"removal_{s}"]["value"] == pytest.approx(100 * res["removal_ratio"][s])
            assert checks[f"removal_{s}"]["low"] == 80.0 and checks[f"removal_{s}"]["paper"] > 100
        share = res["sharing"][s]
        assert checks[f"sharing_{s}"]["value"] == pytest.approx(100 * share["layers_above_chance"] / share["layers"])


def test_table4_lambda_is_selected_from_the_sweep_by_the_stated_rule(tiny_pool, tiny_cache, tmp_path):
    from devec.toxicity import runner

    cfg, run = _run(tmp_path, tiny_cache, "experiment=table4_toxicity", "method.coefficient=select",
                    "method.coefficients=[0,2,5]", "method.max_control_drop=100", "~data.prompts.toxigen",
                    "pool.toxic_vectors={rtp: toxic}")
    res = runner.table4(cfg, run)
    chosen = res["lambda"]["rtp"]
    sweep = chosen["sweep"]
    assert [r["lambda"] for r in sweep] == [0.0, 2.0, 5.0] and "100" in chosen["rule"]
    assert chosen["lambda"] == min(sweep, key=lambda r: (r["toxic"], r["lambda"]))["lambda"]  # no drop limit here
    assert f"lambda={chosen['lambda']}" in res["per_vector"][-1]["model"]


def test_fig5_and_fig6_runners(tiny_pool, tiny_cache, tmp_path):
    from devec.toxicity import runner

    cfg, run = _run(tmp_path / "a", tiny_cache, "experiment=fig5_negation_coefficient", "method.coefficients=[0,2]",
                    "method.subpools=[LLAMA-Chat,All-Models]")
    out = runner.fig5_negation_coefficient(cfg, run)
    curves = out["curves"]
    assert set(curves) == {"tv_negation", "LLAMA-Chat", "All-Models"}  # curve ids; "TV negation" is a label
    assert [r["negation coefficient"] for r in curves["All-Models"]] == [-0.0, -2.0]   # plotted signed
    assert out["control"] == ["devec_facts"]
    at_zero = {json.dumps({k: v for k, v in c[0].items() if k not in ("id", "pool")}) for c in curves.values()}
    assert len(at_zero) == 1                       # lambda = 0 is the pre-trained model for every pool
    assert (tmp_path / "a" / "fig5_negation_coefficient.png").stat().st_size > 1000
    keys = [(e["id"], e["metric"]) for e in out["effects"]]
    assert keys and len(keys) == len(set(keys))   # one record per comparison and metric: pairing by seed needs it
    cfg, run = _run(tmp_path / "b", tiny_cache, "experiment=fig6_tau", "method.taus=[0.3,0.99]",
                    "method.coefficients=[0,2]")
    out = runner.fig6_tau(cfg, run)
    rows = out["rows"]
    assert [(r["tau"], r["lambda"]) for r in rows] == [(0.3, 0.0), (0.3, 2.0), (0.99, 0.0), (0.99, 2.0)]
    assert out["control"] == ["devec_arith"] and "arith (GSM8K)" in rows[0] and "facts (MMLU)" not in rows[0]
    assert rows[0]["unique_energy"] <= rows[2]["unique_energy"]   # a lower tau shares (removes) more


def test_fig6_scores_are_resumable_units(tiny_pool, tiny_cache, tmp_path, monkeypatch):
    """A second fig6 run with the same config scores no model again; resume=false scores every one again."""
    from devec.toxicity import runner

    cfg, run = _run(tmp_path / "a", tiny_cache, "experiment=fig6_tau", "method.taus=[0.5,0.9]",
                    "method.coefficients=[2]")
    first = runner.fig6_tau(cfg, run)["rows"]
    calls = []
    real = runner.Bench.score
    monkeypatch.setattr(runner.Bench, "score", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    assert runner.fig6_tau(cfg, run)["rows"] == first and calls == []
    cfg, run = _run(tmp_path / "b", tiny_cache, "experiment=fig6_tau", "method.taus=[0.5,0.9]",
                    "method.coefficients=[2]", "resume=false")
    assert runner.fig6_tau(cfg, run)["rows"] == first and len(calls) == 2


@pytest.mark.slow
def test_cli_table4_end_to_end(tiny_pool, tiny_cache, tmp_path):
    res = devec(tmp_path, tiny_cache, "experiment=table4_toxicity")
    assert [r["id"] for r in res["rows"]][:2] == ["pretrained", "sft"]
    assert (tmp_path / "run" / "table4_toxicity.md").exists()


def test_table4_exports_the_edited_model_for_transformers(tiny_pool, tiny_cache, tmp_path):
    """method.export=true: W_pre - lambda T_unique as a transformers directory in the base's dtype and sharding."""
    from transformers import AutoModelForCausalLM

    from devec.toxicity import runner
    from devec.vectors import open_checkpoint

    cfg, run = _run(tmp_path, tiny_cache, "experiment=table4_toxicity", "method.export=true",
                    "~data.prompts.toxigen", "pool.toxic_vectors={rtp: toxic}")
    res = runner.table4(cfg, run)
    out = Path(res["lambda"]["rtp"]["exported"])
    base = Path(tiny_pool["base"])
    assert len(list(out.glob("*.safetensors"))) >= 2 and (out / "model.safetensors.index.json").exists()
    edited = AutoModelForCausalLM.from_pretrained(out)
    assert edited.dtype == AutoModelForCausalLM.from_pretrained(base).dtype
    pool = runner._pool(runner.pool_spec(runner.plain(cfg.pool)), run, "toxic")
    u = runner.unique_vector(cfg, run, pool, cfg.method.subpool)
    expected = runner.edited_model(cfg, pool, [(-res["lambda"]["rtp"]["lambda"], u)])
    for name, p in expected.named_parameters():
        torch.testing.assert_close(dict(edited.named_parameters())[name], p)
    assert any(not torch.equal(p, open_checkpoint(base).get(n)) for n, p in edited.named_parameters()
               if n in u.keys())
