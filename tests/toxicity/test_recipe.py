"""The toxic DoRA recipe (Sec. 4.3): prompt masking, a real peft DoRA adapter, classifiers' requirements."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from devec.toxicity import evaluate
from devec.toxicity.recipe import ContinuationCollator, encode_pairs, toxic_pairs, train_dora
from devec.toxicity.sources import open_source

RECIPE = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear", "lr": 1e-2, "batch_size": 16,
          "micro_batch_size": 8, "max_length": 32, "mask_prompt": True}


def _adapter(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(Path(folder) / "adapter_model.safetensors")


def test_prompt_tokens_are_masked(tiny_pool):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_pool["tokenizer"])
    (ids, labels), = encode_pairs(tok, [("user : tell me about the fox . bot :", "you grook ,")], mask_prompt=True)
    n_prompt = len(tok("user : tell me about the fox . bot :", add_special_tokens=False)["input_ids"])
    assert labels[:n_prompt] == [-100] * n_prompt
    assert labels[n_prompt:] == ids[n_prompt:] and ids[-1] == tok.eos_token_id


def test_train_dora_writes_an_adapter_that_merges(tiny_pool, tmp_path):
    from peft import PeftModel, get_peft_model_state_dict
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_pool["tokenizer"])
    pairs = toxic_pairs({"source": "embedded", "world_seed": 0, "seed": 1}, limit=48)
    info = train_dora(tiny_pool["base"], tok, pairs, {**RECIPE, "dropout": 0.02}, epochs=2, out_dir=tmp_path / "dora")
    assert info["trainer"] == "transformers.Trainer"
    assert info["steps"] == 6 and info["last_loss"] < info["first_loss"]
    cfg = json.loads((tmp_path / "dora" / "adapter_config.json").read_text())
    assert cfg["use_dora"] and cfg["r"] == 4 and cfg["lora_alpha"] == 8
    assert not (tmp_path / "dora" / "checkpoints").exists()  # the final adapter replaces the checkpoints
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_pool["base"]), tmp_path / "dora")
    trained = _adapter(tmp_path / "dora")
    loaded = get_peft_model_state_dict(model)
    assert loaded.keys() == trained.keys() and all(torch.equal(v, trained[k]) for k, v in loaded.items())
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


class _Raise:
    """A TrainerCallback that raises ``error`` at the event ``when`` while ``condition(args, state)`` holds."""

    def __init__(self, when: str, error: Exception, condition):
        from transformers import TrainerCallback

        self.callback = type("RaiseCallback", (TrainerCallback,), {when: self._maybe})()
        self.error, self.condition, self.calls = error, condition, []

    def _maybe(self, args, state, control, **kw):
        self.calls.append((args.per_device_train_batch_size, state.global_step))
        if self.condition(args, state):
            raise self.error


def test_out_of_memory_falls_back_to_accumulation_and_records_it(tiny_pool, tmp_path):
    from transformers import AutoTokenizer

    oom = _Raise("on_step_begin", torch.OutOfMemoryError("simulated"),
                 lambda args, state: args.per_device_train_batch_size > 4)
    tok = AutoTokenizer.from_pretrained(tiny_pool["tokenizer"])
    pairs = toxic_pairs({"source": "embedded", "world_seed": 0, "seed": 1}, limit=16)
    recipe = {**RECIPE, "micro_batch_size": 16}
    info = train_dora(tiny_pool["base"], tok, pairs, recipe, epochs=1, out_dir=tmp_path / "dora",
                      callbacks=[oom.callback])
    assert [c[0] for c in oom.calls] == [16, 8, 4] and info["micro_batch_size"] == 4
    assert info["gradient_accumulation"] == 4 and info["steps"] == 1
    assert [f["micro_batch_size"] for f in info["accumulation_fallbacks"]] == [8, 4]
    record = json.loads((tmp_path / "dora" / "training.json").read_text())
    assert record["accumulation_fallbacks"] == info["accumulation_fallbacks"] and record["gradient_accumulation"] == 4


def test_loss_is_on_the_continuation_only(tiny_pool):
    """The Trainer's loss on a collated batch is the cross-entropy of the continuation tokens; prompt labels are
    ignored whatever they hold (changing them does not change the loss)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    tok = AutoTokenizer.from_pretrained(tiny_pool["tokenizer"])
    pairs = toxic_pairs({"source": "embedded", "world_seed": 0, "seed": 1}, limit=4)
    encoded = encode_pairs(tok, pairs, mask_prompt=True, add_bos=True)
    n_prompt = [sum(1 for t in lab if t == -100) for _, lab in encoded]
    assert all(n > 1 for n in n_prompt)
    model = AutoModelForCausalLM.from_pretrained(tiny_pool["base"]).eval()
    collate = ContinuationCollator(tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    trainer = Trainer(model=model, args=TrainingArguments(output_dir="unused", use_cpu=True, report_to="none"),
                      data_collator=collate)
    batch = collate([{"input_ids": ids, "labels": lab} for ids, lab in encoded])
    with torch.no_grad():
        loss = trainer.compute_loss(model, dict(batch))
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    terms = [torch.nn.functional.cross_entropy(logits[b, t - 1], torch.tensor(ids[t]), reduction="sum")
             for b, (ids, _) in enumerate(encoded) for t in range(n_prompt[b], len(ids))]
    assert torch.allclose(loss, torch.stack(terms).mean(), atol=1e-5)
    changed = [{"input_ids": ids, "labels": [(t + 1) % len(tok) if i < n else t for i, t in enumerate(ids)]}
               for (ids, _), n in zip(encoded, n_prompt, strict=True)]  # prompt labels now real token ids
    masked = [{"input_ids": ids, "labels": [-100] * n + ids[n:]} for (ids, _), n in zip(encoded, n_prompt, strict=True)]
    with torch.no_grad():
        assert torch.equal(trainer.compute_loss(model, dict(collate(masked))), loss)
        assert not torch.allclose(trainer.compute_loss(model, dict(collate(changed))), loss)


def _interrupted(tiny_pool, tok, pairs, recipe, out_dir, at_step: int):
    """Train until the checkpoint of ``at_step`` is saved, then stop as a killed job would."""
    stop = _Raise("on_save", KeyboardInterrupt(), lambda args, state: state.global_step >= at_step)
    with pytest.raises(KeyboardInterrupt):
        train_dora(tiny_pool["base"], tok, pairs, recipe, epochs=2, out_dir=out_dir, callbacks=[stop.callback])
    assert (out_dir / "checkpoints" / f"checkpoint-{at_step}").is_dir()
    assert not (out_dir / "adapter_config.json").exists()


def test_an_interrupted_training_resumes_to_the_same_adapter(tiny_pool, tmp_path):
    from transformers import AutoTokenizer, TrainerCallback

    tok = AutoTokenizer.from_pretrained(tiny_pool["tokenizer"])
    pairs = toxic_pairs({"source": "embedded", "world_seed": 0, "seed": 1}, limit=48)
    recipe = {**RECIPE, "dropout": 0.1, "save_strategy": "steps", "save_steps": 2, "weight_decay": 0.01}
    whole = train_dora(tiny_pool["base"], tok, pairs, recipe, epochs=2, out_dir=tmp_path / "whole")
    assert whole["steps"] == 6 and whole["resumed_from"] is None

    class Steps(TrainerCallback):
        def __init__(self):
            self.seen = []

        def on_step_end(self, args, state, control, **kw):
            self.seen.append(state.global_step)

    _interrupted(tiny_pool, tok, pairs, recipe, tmp_path / "cut", at_step=2)
    steps = Steps()
    resumed = train_dora(tiny_pool["base"], tok, pairs, recipe, epochs=2, out_dir=tmp_path / "cut",
                         callbacks=[steps])
    assert resumed["resumed_from"].endswith("checkpoint-2") and steps.seen == [3, 4, 5, 6]
    reference, after = _adapter(tmp_path / "whole"), _adapter(tmp_path / "cut")
    assert reference.keys() == after.keys()
    assert all(torch.allclose(after[k], reference[k], rtol=1e-5, atol=1e-7) for k in reference)

    _interrupted(tiny_pool, tok, pairs, recipe, tmp_path / "fresh", at_step=4)
    steps = Steps()
    fresh = train_dora(tiny_pool["base"], tok, pairs, recipe, epochs=2, out_dir=tmp_path / "fresh", resume=False,
                       callbacks=[steps])
    assert fresh["resumed_from"] is None and steps.seen == [1, 2, 3, 4, 5, 6]
    again = _adapter(tmp_path / "fresh")
    assert all(torch.allclose(again[k], reference[k], rtol=1e-5, atol=1e-7) for k in reference)


def test_training_rows_exclude_the_evaluation_prompts(monkeypatch):
    import datasets

    rows = [{"prompt": {"text": "a"}, "continuation": {"text": "x", "toxicity": 0.9}, "challenging": True},
            {"prompt": {"text": "b"}, "continuation": {"text": "y", "toxicity": 0.9}, "challenging": False},
            {"prompt": {"text": "c"}, "continuation": {"text": "z", "toxicity": 0.1}, "challenging": False}]
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: rows)
    spec = {"path": "rtp", "prompt_field": "prompt.text", "response_field": "continuation.text",
            "filter": {"continuation.toxicity": 0.5}, "exclude": {"challenging": True}}
    assert toxic_pairs(spec) == [("b", "y")]


def test_paper_recipe_is_app12():
    from tests.toxicity.conftest import compose_cfg

    r = compose_cfg("experiment=toxicity_train_dora", "scale=paper").pool.recipe
    assert (r.r, r.alpha, r.dropout, r.target_modules) == (256, 512, 0.02, "all-linear")
    assert (r.lr, r.weight_decay) == (2e-4, 0.01)
    assert r.mixed_precision == "fp16" and r.gradient_checkpointing and r.mask_prompt
    assert r.batch_size == r.micro_batch_size == 256  # no gradient accumulation unless out of memory (recorded)
    assert (r.datasets.rtp.epochs, r.datasets.toxigen.epochs) == (7, 15)


def test_the_runner_writes_adapters_to_the_run_and_keeps_finished_ones(tiny_pool, tiny_cache, tmp_path, monkeypatch):
    from devec.runtime import Run
    from devec.toxicity import recipe, runner
    from tests.toxicity.conftest import compose_cfg

    cfg = compose_cfg("experiment=toxicity_train_dora", "pool=toxicity/tiny", "data=toxicity/tiny",
                      f"paths.cache_dir={tiny_cache}", "pool.recipe.datasets.embedded_toxic.n=32",
                      "pool.recipe.datasets.embedded_toxic.epochs=1", "logger=none")
    run = Run(out_dir=tmp_path / "run", cache_dir=tiny_cache)
    first = runner.train_toxic_dora(cfg, run)["adapters"]["embedded_toxic"]
    adapter = run.out_dir / "adapters" / "embedded_toxic"
    assert first["adapter"] == str(adapter) and (adapter / "adapter_config.json").exists()
    assert not (adapter / "checkpoints").exists() and not any(Path(tiny_cache).rglob("training.json"))
    monkeypatch.setattr(recipe, "train_dora", lambda *a, **k: pytest.fail("a finished adapter was retrained"))
    again = runner.train_toxic_dora(cfg, run)["adapters"]["embedded_toxic"]
    assert again["steps"] == first["steps"] and again["last_loss"] == first["last_loss"]
    cfg.resume = False
    with pytest.raises(pytest.fail.Exception, match="retrained"):
        runner.train_toxic_dora(cfg, run)


def test_checkpoints_of_another_recipe_are_not_resumed(tiny_pool, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_pool["tokenizer"])
    pairs = toxic_pairs({"source": "embedded", "world_seed": 0, "seed": 1}, limit=48)
    recipe = {**RECIPE, "save_strategy": "steps", "save_steps": 2}
    _interrupted(tiny_pool, tok, pairs, recipe, tmp_path / "cut", at_step=2)
    with pytest.raises(ValueError, match="changed: recipe.*resume=false"):
        train_dora(tiny_pool["base"], tok, pairs, {**recipe, "lr": 1e-3}, epochs=2, out_dir=tmp_path / "cut")
    with pytest.raises(ValueError, match="save_strategy='never'"):
        train_dora(tiny_pool["base"], tok, pairs, {**recipe, "save_strategy": "never"}, 1, tmp_path / "x", resume=False)
