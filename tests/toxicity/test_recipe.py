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


def test_app12_recipe_settings_are_used_and_recorded(tiny_pool, tmp_path):
    """Weight decay, gradient checkpointing, batch = micro batch (no accumulation): used, and in training.json."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_pool["tokenizer"])
    pairs = toxic_pairs({"source": "embedded", "world_seed": 0, "seed": 1}, limit=32)
    recipe = {"r": 4, "alpha": 8, "dropout": 0.0, "lr": 1e-2, "batch_size": 16, "micro_batch_size": 16,
              "max_length": 32, "weight_decay": 0.01, "gradient_checkpointing": True, "mixed_precision": "none",
              "add_bos": True}
    info = train_dora(tiny_pool["base"], tok, pairs, recipe, epochs=1, out_dir=tmp_path / "dora")
    record = json.loads((tmp_path / "dora" / "training.json").read_text())
    assert info["gradient_accumulation"] == 1 and info["accumulation_fallbacks"] == []
    assert record["weight_decay"] == 0.01 and record["gradient_checkpointing"] and record["recipe"]["add_bos"]
    with pytest.raises(ValueError, match="mixed_precision=fp16 needs device=cuda"):
        train_dora(tiny_pool["base"], tok, pairs, {**recipe, "mixed_precision": "fp16"}, 1, tmp_path / "x")


def test_out_of_memory_falls_back_to_accumulation_and_records_it(tiny_pool, tmp_path, monkeypatch):
    import torch
    from transformers import AutoTokenizer

    from devec.toxicity import recipe as recipe_mod

    real, calls = recipe_mod._step, []

    def step(model, opt, scaler, params, chunk, micro, *a):
        calls.append(micro)
        if micro > 4:
            raise torch.OutOfMemoryError("simulated")
        return real(model, opt, scaler, params, chunk, micro, *a)

    monkeypatch.setattr(recipe_mod, "_step", step)
    tok = AutoTokenizer.from_pretrained(tiny_pool["tokenizer"])
    pairs = toxic_pairs({"source": "embedded", "world_seed": 0, "seed": 1}, limit=16)
    recipe = {"r": 4, "alpha": 8, "dropout": 0.0, "lr": 1e-2, "batch_size": 16, "micro_batch_size": 16,
              "max_length": 32}
    info = train_dora(tiny_pool["base"], tok, pairs, recipe, epochs=1, out_dir=tmp_path / "dora")
    assert calls == [16, 8, 4] and info["micro_batch_size"] == 4 and info["gradient_accumulation"] == 4
    assert [f["micro_batch_size"] for f in info["accumulation_fallbacks"]] == [8, 4]


def test_training_rows_exclude_the_evaluation_prompts(monkeypatch):
    import datasets

    rows = [{"prompt": {"text": "a"}, "continuation": {"text": "x", "toxicity": 0.9}, "challenging": True},
            {"prompt": {"text": "b"}, "continuation": {"text": "y", "toxicity": 0.9}, "challenging": False},
            {"prompt": {"text": "c"}, "continuation": {"text": "z", "toxicity": 0.1}, "challenging": False}]
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: rows)
    spec = {"path": "rtp", "prompt_field": "prompt.text", "response_field": "continuation.text",
            "filter": {"continuation.toxicity": 0.5}, "exclude": {"challenging": True}}
    assert toxic_pairs(spec) == [("b", "y")]
