"""Configs instantiate what they name, and rows carry ids apart from their labels (issue 10).

Runners, methods, pools, data / task pools and toxicity classifiers are ``_target_`` configs built with Hydra's
``instantiate`` (the class is the schema: no ``source:`` / ``kind:`` strings looked up in hand-written registries);
every experiment composes at both scales without placeholder files; relabelling a row keeps every table that keys
on it.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.utils import get_object, instantiate
from omegaconf import OmegaConf, open_dict

from devec.cli import CONFIG_DIR
from devec.runtime import Run
from devec.settings import ConfigError, validate
from devec.vision.data import SyntheticTasks, load_tasks

EXPERIMENTS = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))


def _compose(*overrides: str, hydra: bool = False):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=["logger=none", *overrides], return_hydra_config=hydra)


def _method_nodes(cfg) -> dict:
    nodes = {f"methods.{k}": v for k, v in (cfg.get("methods") or {}).items()}
    return nodes | ({"method": cfg.method} if cfg.get("method") is not None else {})


@pytest.mark.parametrize("scale", ["embedded", "paper"])
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_at_both_scales_and_builds_its_runner_and_methods(experiment, scale):
    cfg = _compose(f"experiment={experiment}", f"scale={scale}", hydra=True)
    pool = cfg.hydra.runtime.choices.get("pool")
    assert pool is None or pool.endswith(f"/{scale}")  # the scale switch picks the pool, where there is one
    assert callable(instantiate(cfg.runner))
    for key, node in _method_nodes(cfg).items():
        cls = get_object(node._target_)
        fields = {f.name for f in dataclasses.fields(cls)}
        assert set(node) - {"_target_"} <= fields, key  # every key is a parameter of the class it names
        assert isinstance(instantiate(node, _convert_="all"), cls)


POOLED = [e for e in EXPERIMENTS if e not in ("toy_recovery", "toy_alternative", "decompose")]
"""Experiments with a model pool and a data / task pool (decompose's pool is the user's checkpoint files)."""


@pytest.mark.parametrize("scale", ["embedded", "paper"])
@pytest.mark.parametrize("experiment", POOLED)
def test_every_pool_and_data_config_names_its_class_and_every_key_is_a_parameter(experiment, scale):
    cfg = _compose(f"experiment={experiment}", f"scale={scale}")
    for section in ("pool", "data"):
        node = cfg[section]
        assert "_target_" in node, section
        assert not {"source", "kind"} & set(node), section  # no string picks a loader any more
        cls = get_object(node._target_)
        assert set(node) - {"_target_", "_recursive_"} <= {f.name for f in dataclasses.fields(cls)}, section
        if scale == "embedded":  # paper pools hold required ??? paths; built here, nothing is downloaded
            assert isinstance(instantiate(node, _convert_="all"), cls)
    for clf in cfg.data.get("classifiers") or []:
        assert set(clf) - {"_target_"} <= set(inspect.signature(get_object(clf._target_)).parameters)


@pytest.mark.parametrize(("preset", "override", "names"), [
    ("vision", "+pool.seeed=1", "pool.seeed: unknown key"),
    ("vision", "+data.n_trian=10", "data.n_trian: unknown key"),
    ("vision", "pool._target_=devec.vision.pool.Nope", "pool._target_='devec.vision.pool.Nope'"),
    ("vision", "pool._target_=devec.vision.data.SyntheticTasks", "not a devec.vision.pool.PoolSpec"),
    ("toxicity", "+pool.stor_dtype=float16", "pool.stor_dtype: unknown key"),
    ("toxicity", "+data.classifiers.0.devise=cpu", "data.classifiers[0].devise: unknown key"),
    ("toxicity", "+data.sweep_contrl=[devec_facts]", "data.sweep_contrl: unknown key"),
    ("style", "+pool.lora_trian={steps: 1}", "pool.lora_trian: unknown key"),
    ("style", "+data.hieght=8", "data.hieght: unknown key"),
])
def test_a_misspelt_pool_or_data_key_is_refused_at_validation_naming_it(preset, override, names):
    experiment = {"vision": "table1_multitask", "toxicity": "table4_toxicity", "style": "style_mixing"}[preset]
    cfg = _compose(f"experiment={experiment}", f"pool={preset}/tiny", f"data={preset}/tiny", override)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert names in str(err.value) and "\n" not in str(err.value)


@dataclasses.dataclass(kw_only=True)
class CountingTasks(SyntheticTasks):
    """A user's own task pool: named by ``data._target_``, with no registry to add it to."""

    loaded: list[str] = dataclasses.field(default_factory=list)

    def task(self, name, cache_dir):
        self.loaded.append(name)
        return super().task(name, cache_dir)


def test_a_task_pool_of_ones_own_is_named_by_target_and_used(tmp_path):
    cfg = _compose("experiment=table1_multitask", "pool=vision/tiny", "data=vision/tiny",
                   f"data._target_={__name__}.CountingTasks", "data.n_train=10", "data.n_test=4")
    validate(cfg)
    data = instantiate(cfg.data, _convert_="all")
    tasks = load_tasks(data, ["shapes"], tmp_path)
    assert data.loaded == ["shapes"] and len(tasks["shapes"].test) == 4


def test_no_placeholder_config_files_or_selector_groups():
    conf = Path(CONFIG_DIR)
    empty = [str(p.relative_to(conf)) for p in conf.rglob("*.yaml") if yaml.safe_load(p.read_text()) in ({}, None)]
    assert not empty, f"placeholder config files: {empty}"
    assert not (conf / "domain").exists()


def test_toy_experiments_have_no_pool():
    for experiment in ("toy_recovery", "toy_alternative"):
        assert "pool" not in _compose(f"experiment={experiment}") and "data" not in _compose(f"experiment={experiment}")


@pytest.mark.parametrize("figure", ["fig4", "fig15", "fig16", "fig17"])
def test_a_figure_experiment_is_the_style_figure_config_with_that_figure(figure):
    thin = _compose(f"experiment={figure}_style_mixing")
    one = _compose("experiment=style_figure", f"figure={figure}")
    for section in ("method", "data", "pool", "decomposition", "runner"):
        assert OmegaConf.to_container(thin[section], resolve=True) == OmegaConf.to_container(one[section], resolve=True)
    assert list(thin.method.mix) == list(thin.data.figures[figure].mix)
    assert list(thin.data.prompts) == list(thin.data.figures[figure].prompts)  # in config.yaml, not merged later


@pytest.mark.parametrize(("override", "names"), [
    ("methods.ties._target_=devec.vision.methods.Tie", "methods.ties._target_='devec.vision.methods.Tie'"),
    ("methods.ties._target_=devec.toxicity.runner.Negation", "methods.ties._target_"),
    ("+methods.ties.devec_gird=[0.1]", "methods.ties.devec_gird"),
    ("methods.ties_paper.grid=[]", "methods.ties_paper.grid"),
    ("methods.ties_devec.baseline=tie", "methods.ties_devec.baseline"),
    ("methods.adamerging_layer.granularity=pixel", "methods.adamerging_layer.granularity='pixel'"),
])
def test_a_bad_method_config_is_refused_at_validation_naming_its_key(tmp_path, override, names):
    cfg = _compose("experiment=table1_multitask", "pool=vision/tiny", "data=vision/tiny", override)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert names in str(err.value) and "\n" not in str(err.value)


def test_a_style_mixing_method_naming_unknown_components_is_refused():
    cfg = _compose("experiment=style_mixing", "pool=style/tiny", "data=style/tiny", "method.methods.unique=uniq")
    with pytest.raises(ConfigError, match=r"method\.methods\.unique='uniq'"):
        validate(cfg)


# ---------------------------------------------------------------- ids, not labels

class _Pool:
    """A stand-in model pool: one parameter, two tasks; accuracy is read off the merged parameter."""

    def __init__(self):
        self.pretrained = {"w": torch.zeros(2)}
        self.finetuned = {"a": {"w": torch.tensor([90.0, 0.0])}, "b": {"w": torch.tensor([0.0, 80.0])}}
        self.info = {}

    def task_vectors(self, names):
        return [{"w": self.finetuned[n]["w"] - self.pretrained["w"]} for n in names]

    def to(self, device):
        return self


def _fake_evaluate(pool, params, tasks, split="test", limit=None, batch_size=256):
    out = {n: float((params(n) if callable(params) else params)["w"][i]) for i, n in enumerate(tasks)}
    return out | {"avg": sum(out.values()) / len(out)}


@pytest.fixture
def fake_vision(monkeypatch):
    import devec.vision.runner as runner

    pool = _Pool()
    monkeypatch.setattr(runner, "_setup", lambda cfg, run, evaluated, finetuned: ({"a": None, "b": None}, pool))
    monkeypatch.setattr(runner, "evaluate", _fake_evaluate)
    monkeypatch.setattr(runner, "pairwise_shared", lambda vectors, decomposition, cache_dir=None, on_report=None:
                        [{"w": torch.tensor([5.0, 5.0])}])
    return runner


RELABEL = ["methods.individual.label=Own fine-tunes", "methods.task_arithmetic_val.label=TA",
           "methods.task_arithmetic_devec_grid.label=TA with shared vectors"]


@pytest.mark.parametrize("relabel", [[], RELABEL], ids=["as shipped", "relabelled"])
def test_relabelling_rows_keeps_the_devec_effect_and_the_normalized_table(tmp_path, fake_vision, relabel):
    cfg = _compose("experiment=table1_multitask", f"paths.root_dir={tmp_path}", "name=t", "resume=false",
                   "vision.tasks=[a,b]", "methods.task_arithmetic_val.coefficient=0.5",
                   "methods.task_arithmetic_devec_grid.coefficient=0.5",
                   "methods.task_arithmetic_devec_grid.devec_grid=[1.0]", *relabel)
    with open_dict(cfg):
        for key in [k for k in cfg.methods if k not in ("individual", "task_arithmetic_val",
                                                        "task_arithmetic_devec_grid")]:
            del cfg.methods[key]
    result = fake_vision.table1(cfg, Run(tmp_path / "out", tmp_path / "cache"))
    assert [r["id"] for r in result["rows"]] == ["individual", "task_arithmetic_val", "task_arithmetic_devec_grid"]
    (effect,) = result["effects"]
    assert (effect["baseline_id"], effect["id"]) == ("task_arithmetic_val", "task_arithmetic_devec_grid")
    assert effect["delta"] == pytest.approx(5.0)  # + 1.0 x the shared vector's 5 on both tasks
    individual = next(r for r in result["normalized"] if r["id"] == "individual")
    assert individual["avg"] == pytest.approx(100.0)
    assert (tmp_path / "out" / "table1_normalized.md").exists()
    labels = [r["method"] for r in result["rows"]]
    assert labels == (["Own fine-tunes", "TA", "TA with shared vectors"] if relabel else
                      ["Fine-Tuned", "Task Arithmetic (lambda on val)", "Task Arithmetic + DeVec (grid on val)"])


def test_toxicity_control_tasks_are_picked_by_id_not_label(monkeypatch):
    from devec.toxicity import runner

    seen = []
    monkeypatch.setattr(runner.evaluate, "toxicity", lambda *a, **k: {"toxigen/lexicon": 1.0})
    monkeypatch.setattr(runner.evaluate, "control", lambda model, tok, tasks, *a, **k: seen.extend(tasks) or {})

    class Model:
        device = "cpu"

    cfg = _compose("experiment=fig5_negation_coefficient")
    tasks = [dict(t) for t in OmegaConf.to_container(cfg.data.control.tasks, resolve=True)]
    bench = runner.Bench(None, {}, [], {}, tasks, None, {}, 0)
    bench.score(Model(), control=list(cfg.data.sweep_control))
    assert [t["name"] for t in seen] == ["devec_facts"] and seen[0]["label"] == "facts (MMLU)"
    seen.clear()
    bench.score(Model(), control=["facts (MMLU)"])  # a label is not an id: nothing is picked by it
    assert seen == []


def test_runner_is_a_target_config_and_a_dotted_string_is_refused():
    cfg = _compose("experiment=toy_recovery")
    assert cfg.runner._target_ == "devec.toy.recovery.run" and cfg.runner._partial_
    with open_dict(cfg):
        cfg.runner = "devec.toy.recovery.run"
    with pytest.raises(ConfigError, match="_target_"):
        validate(cfg)
