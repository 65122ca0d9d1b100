"""The toxic DoRA recipe (Sec. 4.3): prompt masking, a real peft DoRA adapter, classifiers' requirements."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devec.toxicity import evaluate
from devec.toxicity.recipe import encode_pairs, toxic_pairs, train_dora
from devec.toxicity.sources import open_source


def test_prompt_tokens_are_masked(tiny_pool):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_pool["tokenizer"])
    (ids, labels), = encode_pairs(tok, [("user : tell me about the fox . bot :", "you grook ,")], mask_prompt=True)
    n_prompt = len(tok("user : tell me about the fox . bot :", add_special_tokens=False)["input_ids"])
    assert labels[:n_prompt] == [-100] * n_prompt
    assert labels[n_prompt:] == ids[n_prompt:] and ids[-1] == tok.eos_token_id


def test_train_dora_writes_an_adapter_that_merges(tiny_pool, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_pool["tokenizer"])
    pairs = toxic_pairs({"source": "embedded", "world_seed": 0, "seed": 1}, limit=48)
    recipe = {"r": 4, "alpha": 8, "dropout": 0.02, "target_modules": "all-linear", "lr": 1e-2, "batch_size": 16,
              "micro_batch_size": 8, "max_length": 32, "mask_prompt": True}
    info = train_dora(tiny_pool["base"], tok, pairs, recipe, epochs=2, out_dir=tmp_path / "dora")
    assert info["steps"] == 6 and info["last_loss"] < info["first_loss"]
    cfg = json.loads((tmp_path / "dora" / "adapter_config.json").read_text())
    assert cfg["use_dora"] and cfg["r"] == 4 and cfg["lora_alpha"] == 8
    source = open_source(tmp_path / "dora")
    assert source.kind == "dora" and len(source.params()) == 2 * 7


def test_embedded_prompt_sets():
    a = evaluate.load_prompts({"source": "embedded", "style": "dialogue", "n": 5, "seed": 1})
    b = evaluate.load_prompts({"source": "embedded", "style": "open", "n": 5, "seed": 1})
    assert len(a) == len(b) == 5 and all(p.endswith("bot :") for p in a) and all(p.endswith(",") for p in b)


def test_classifier_errors_say_what_to_do(monkeypatch):
    monkeypatch.delenv("PERSPECTIVE_API_KEY", raising=False)
    with pytest.raises(Exception, match="PERSPECTIVE_API_KEY"):
        evaluate.make_classifier({"_target_": "devec.toxicity.evaluate.PerspectiveClassifier"})
    with pytest.raises(ValueError, match="_target_"):
        evaluate.make_classifier("lexicon")
    try:
        import detoxify  # noqa: F401
    except ImportError:
        with pytest.raises(Exception, match="pip install detoxify"):
            evaluate.make_classifier({"_target_": "devec.toxicity.evaluate.DetoxifyClassifier"})


def test_shipped_task_templates_render(tmp_path):
    out = evaluate.write_embedded_tasks(tmp_path, world_seed=0, n=5, seed=0)
    names = sorted(p.stem for p in Path(out).glob("*.yaml"))
    assert names == ["devec_arith", "devec_compare", "devec_facts", "devec_reading"]
    assert all(str(out.resolve()) in p.read_text() for p in Path(out).glob("*.yaml"))
    assert len((out / "facts.jsonl").read_text().splitlines()) == 5
