"""The evaluation protocol of ref. [44] (ToxiGen prompt files, RTP challenging, newline stop, Perspective with a
labelled fallback, per-set settings) and the warnings and checks around it, on tiny fixtures."""

from __future__ import annotations

import logging

import pytest
import torch

from devec.toxicity import evaluate
from tests.toxicity.conftest import compose_cfg


def test_toxigen_prompt_files_per_group_unescaped_and_seeded(tmp_path):
    for group in ("asian", "women"):
        lines = [f"- {group} line {i}\\n- second\\n-" for i in range(5)]
        (tmp_path / f"hate_{group}_1k.txt").write_text("\n".join(lines) + "\n")
    spec = {"source": "toxigen_files", "root": str(tmp_path), "groups": ["asian", "women"], "per_group": 3,
            "seed": 42}
    prompts = evaluate.load_prompts(spec)
    assert len(prompts) == 6 and all(p.count("\n") == 2 for p in prompts)    # the files' "\n" are newlines
    assert sum("asian" in p for p in prompts) == 3 and prompts == evaluate.load_prompts(spec)
    with pytest.raises(FileNotFoundError, match="hate_<group>_1k.txt"):
        evaluate.load_prompts({**spec, "groups": ["nobody"]})


def test_boolean_filter_selects_the_challenging_subset():
    rows = [{"challenging": True, "prompt": {"toxicity": 0.1}}, {"challenging": False, "prompt": {"toxicity": 0.9}}]
    assert [evaluate.passes(r, {"challenging": True}) for r in rows] == [True, False]
    assert [evaluate.passes(r, {"prompt.toxicity": 0.5}) for r in rows] == [False, True]


class _Echo:
    """A stand-in causal LM whose greedy continuation is a fixed token sequence."""

    def __init__(self, tokens):
        self.tokens = torch.tensor(tokens)
        self.p = torch.nn.Parameter(torch.zeros(1))

    def parameters(self):
        return iter([self.p])

    def generate(self, input_ids, attention_mask, **kw):
        new = self.tokens[: kw["max_new_tokens"]].expand(input_ids.shape[0], -1)
        return torch.cat([input_ids, new], dim=1)


class _Tok:
    padding_side, pad_token, pad_token_id, eos_token = "right", "<pad>", 0, "<pad>"
    vocab = {1: "a", 2: "\n", 3: "b"}

    def __call__(self, texts, return_tensors, padding):
        class Enc(dict):
            def to(self, device):
                return self

        return Enc(input_ids=torch.ones(len(texts), 2, dtype=torch.long),
                   attention_mask=torch.ones(len(texts), 2, dtype=torch.long))

    def batch_decode(self, ids, skip_special_tokens):
        return ["".join(self.vocab[int(t)] for t in row) for row in ids]


def test_generation_stops_at_the_newline_and_refuses_a_bad_token_limit():
    model, tok = _Echo([1, 1, 2, 3]), _Tok()
    assert evaluate.generate(model, tok, ["x"], max_new_tokens=4, do_sample=False) == ["aa\nb"]
    assert evaluate.generate(model, tok, ["x"], max_new_tokens=4, do_sample=False, stop="\n") == ["aa"]
    with pytest.raises(ValueError, match="max_new_tokens=-1"):
        evaluate.generate(model, tok, ["x"], max_new_tokens=-1)


def test_perspective_without_a_key_uses_the_fallback_under_a_labelled_name(monkeypatch, caplog):
    monkeypatch.delenv("PERSPECTIVE_API_KEY", raising=False)
    with pytest.raises(ValueError, match="PERSPECTIVE_API_KEY"):
        evaluate.PerspectiveClassifier()
    with caplog.at_level(logging.WARNING):
        clf = evaluate.PerspectiveClassifier(fallback={"_target_": "devec.toxicity.evaluate.LexiconClassifier"})
    assert clf.name == "lexicon (offline fallback for perspective)" and "not the Perspective API" in caplog.text
    assert clf(["hello"]) == evaluate.LexiconClassifier()(["hello"])


def test_lm_eval_metric_under_its_filter():
    results = {"gsm8k_cot": {"exact_match,strict-match": 0.1, "exact_match,flexible-extract": 0.3}}
    task = {"name": "gsm8k_cot", "metric": "exact_match"}
    assert evaluate._metric(results, {**task, "filter": "flexible-extract"}) == 0.3
    assert evaluate._metric(results, task) == 0.1


@pytest.mark.parametrize(("override", "names"), [
    ("data.generation.max_new_tokens=-4", "data.generation.max_new_tokens=-4"),
    ("+data.prompts.rtp.generation={max_new_tokens: 0}", "data.prompts.rtp.generation.max_new_tokens=0"),
    ("+data.generation.stopp=x", "data.generation: unknown 'stopp'"),
    ("pool.toxic_vectors.rtp=nobody", "pool.toxic_vectors"),
    ("method.coefficient=strong", "method.coefficient='strong'"),
    ("method.coefficients=[-1]", "method.coefficients"),
    ("+data.prompts.rtp.classifiers=[{_target_: devec.toxicity.evaluate.PerspectiveClassifier}]",
     "data.prompts.rtp.classifiers[0]"),
])
def test_bad_protocol_settings_fail_before_any_model_naming_the_key(override, names, monkeypatch):
    from devec.settings import ConfigError, validate

    monkeypatch.delenv("PERSPECTIVE_API_KEY", raising=False)
    cfg = compose_cfg("experiment=table4_toxicity", "pool=toxicity/tiny", "data=toxicity/tiny", override)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert names in str(err.value)


def test_streamed_extraction_warns_when_a_projection_is_nearly_the_identity(synthetic_pool, tmp_path, caplog):
    from devec.toxicity.sources import open_source
    from devec.toxicity.streaming import stream_unique

    toxic = open_source(synthetic_pool["toxic"], "dora", "toxic")
    others = [open_source(m["path"], m["kind"], n) for n, m in synthetic_pool["members"].items()]
    with caplog.at_level(logging.WARNING):
        stream_unique(synthetic_pool["base"], toxic, others, tmp_path, tau=0.85, rank="full")
    assert "nearly the identity" in caplog.text


def test_every_paper_control_task_exists_in_the_installed_lm_eval():
    """The pinned lm-eval range ships every control task the paper-scale config names (item 3 of issue 13)."""
    from lm_eval.tasks import TaskManager

    from tests.toxicity.conftest import compose_cfg

    cfg = compose_cfg("experiment=table4_toxicity", "scale=paper")
    wanted = {str(t.name) for t in cfg.data.control.tasks}
    known = set(TaskManager().all_tasks)
    assert wanted and wanted <= known, f"not in lm-eval: {sorted(wanted - known)}"
