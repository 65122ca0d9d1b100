"""Every setting checked before any model is built (issue 11 items 5, 6, 8, 9): one line naming the key, in seconds.

Each bad setting runs through ``devec.cli.execute`` with every pool, task and checkpoint builder replaced by a
tripwire: a check that came after the build would trip it instead of raising the expected error.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from devec.cli import CONFIG_DIR, execute
from devec.runtime import Run

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))
TINY = {"vision": ["pool=vision/tiny", "data=vision/tiny"], "toxicity": ["pool=toxicity/tiny", "data=toxicity/tiny"],
        "style": ["pool=style/tiny", "data=style/tiny"]}


def composed(experiment: str, *overrides: str, tmp: Path | None = None, tiny: bool = True):
    """The config the ``devec`` command composes for ``experiment`` (tiny presets where its pool has them)."""
    base = [f"experiment={experiment}", "logger=none", f"name={experiment}", f"paths.root_dir={tmp or ROOT}"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        choices = compose("config", overrides=[*base, *overrides], return_hydra_config=True).hydra.runtime.choices
        preset = TINY.get(str(choices.get("pool")).split("/")[0], []) if tiny else []
        return compose("config", overrides=[*base, *preset, *overrides])


@pytest.fixture
def tripwires(monkeypatch):
    """Every builder of pools, tasks, checkpoints and planted toy pools raises: nothing may be built."""
    def tripped(*args, **kwargs):
        raise AssertionError("a model, task or pool was built before the settings were checked")

    targets = {"devec.toxicity.runner": ["load_pool"], "devec.vision.runner": ["load_tasks", "load_pool"],
               "devec.vectors.runner": ["TaskVectorPool", "demo_checkpoints"],
               "devec.toy.recovery": ["planted_pool"], "devec.toy.alternative": ["planted_pool"],
               # the pool and task pool classes the configs name: validation builds them, never their load
               "devec.vision.pool": ["EmbeddedPool.load", "HubPool.load", "OpenClipPool.load"],
               "devec.vision.data": ["SyntheticTasks.load", "HubTasks.load"],
               "devec.toxicity.pool": ["EmbeddedPool.sources", "HubPool.sources"],
               "devec.style.runner": ["style_pool", "EmbeddedPool.sources", "HubPool.sources"]}
    for module, names in targets.items():
        for name in names:
            monkeypatch.setattr(f"{module}.{name}", tripped)


BAD = [
    # (experiment, overrides separated by spaces, what the one-line error must name)
    ("toy_recovery", "seed=abc", "seed='abc'"),
    ("toy_recovery", "decomposition.mode=bogus", "decomposition.mode='bogus'"),
    ("toy_recovery", "+decomposition.tua=0.9", "decomposition.tua"),
    ("toy_recovery", "decomposition.mode=pairwise", "decomposition.mode='pairwise'"),
    ("toy_recovery", "device=cuda:99", "device='cuda:99'"),
    ("toy_alternative", "toy.side=middle", "toy.side='middle'"),
    ("toy_alternative", "+toy.sigmas=[0.1]", "toy.sigmas"),
    ("table4_toxicity", "decomposition.tau=1.7", "decomposition.tau=1.7"),
    ("table4_toxicity", "decomposition.rank=energy:2", "decomposition.rank='energy:2'"),
    ("table4_toxicity", "device=cuda:99", "device='cuda:99'"),
    ("table4_toxicity", "decomposition.device=cuda:99", "decomposition.device='cuda:99'"),
    ("table4_toxicity", "method.subpool=Nobody", "method.subpool"),
    ("table4_toxicity", "pool.toxic=nobody", "pool.toxic"),
    ("table4_toxicity", "+method.coeficient=2", "method.coeficient"),
    ("table4_toxicity", "decomposition=joint", "decomposition.mode='joint'"),
    ("fig5_negation_coefficient", "method.subpools=[LLAMA-Chat,Nobody]", "method.subpools"),
    ("fig5_negation_coefficient", "data.sweep_control=[facts]", "data.sweep_control"),
    ("fig6_tau", "decomposition.tau=0.7", "method.taus"),
    ("fig6_tau", "method.taus=[0.5,1.5]", "method.taus"),
    ("table1_multitask", "decomposition.tau=1.7", "decomposition.tau=1.7"),
    ("table1_multitask", "vision.tasks=[handwritten,bogus]", "'bogus'"),
    ("table1_multitask", "+methods.ties.kk=1", "methods.ties.kk"),
    ("table1_multitask", "methods.adamerging_layer.steps=abc", "methods.adamerging_layer.steps='abc'"),
    ("table1_multitask", "decomposition=joint", "decomposition.mode='joint'"),
    ("table3_ablation", "vision.ablation.granularity=pixel", "vision.ablation.granularity='pixel'"),
    ("table2_generalization", "+pool.finetune.stepz=3 +pool.seeed=1", "pool.seeed"),
    ("table3_ablation", "+data.n_trian=10", "data.n_trian"),
    ("toxicity_train_dora", "+pool.bild={}", "pool.bild"),
    ("fig5_negation_coefficient", "+data.classifiers.0.threshhold=0.4", "data.classifiers[0].threshhold"),
    ("fig2_fig3_arithmetic", "device=cuda:99", "device='cuda:99'"),
    ("style_mixing", "method.mix=[mono,nobody]", "method.mix"),
    ("style_mixing", "method.decompose_over=all", "method.decompose_over='all'"),
    ("style_mixing", "+pool.ofload=true", "pool.ofload"),
    ("fig15_style_mixing", "+data.guidance=1.0", "data.guidance"),
    ("fig4_style_mixing", "figure=fig99", "figure"),
    ("fig16_style_mixing", "pool.styles.4.stands_for=[]", "data.figures.fig16.mix"),
    ("fig16_style_mixing", "pool.styles.2.stands_for=[] pool.styles.4.stands_for=[anime,ghibli]",
     "data.figures.fig16.mix"),
    ("fig10_style", "data.figures.fig10.mix=[nobody]", "data.figures.fig10.mix"),
    ("style_mixing", "method.coefficients=two", "method.coefficients='two'"),
    ("decompose", "pool.pretrained=/no/base.safetensors pool.finetuned=[/no/a.safetensors,/no/b.safetensors]",
     "pool.pretrained='/no/base.safetensors'"),
    ("decompose", "runner._target_=devec.nowhere.run", "runner._target_='devec.nowhere.run'"),
    ("decompose", "+pool.tagret=1", "pool.tagret: unknown key"),
    ("decompose", "pool.demo.k=x", "pool.demo.k"),
]


@pytest.mark.parametrize(("experiment", "override", "names"), BAD, ids=[f"{e}:{o}" for e, o, _ in BAD])
def test_a_bad_setting_stops_before_anything_is_built_with_one_line_naming_the_key(
        tmp_path, tripwires, experiment, override, names):
    cfg = composed(experiment, *override.split(), tmp=tmp_path)
    with pytest.raises(ValueError) as err:
        execute(cfg, tmp_path / "out")
    message = str(err.value)
    assert names in message and "\n" not in message
    assert not (tmp_path / "out").exists()  # not even config.yaml: nothing ran


def test_one_path_for_pool_finetuned_is_refused_with_the_bracket_syntax(tmp_path, tripwires):
    base = tmp_path / "base.safetensors"
    base.write_bytes(b"")
    cfg = composed("decompose", f"pool.pretrained={base}", f"pool.finetuned={base}", tmp=tmp_path)
    with pytest.raises(ValueError, match=re.escape("pool.finetuned=[")) as err:
        execute(cfg, tmp_path / "out")
    assert "pool.finetuned=" in str(err.value) and "one path" in str(err.value)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_shipped_experiment_passes_the_checks_at_embedded_scale(experiment):
    from devec.settings import validate

    validate(composed(experiment, tiny=False))


def test_the_cli_prints_one_line_for_a_mistake_and_a_traceback_only_when_asked(tmp_path):
    env = {**os.environ, "DEVEC_OUTPUTS": str(tmp_path / "outputs"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "devec", "experiment=toy_recovery", "logger=none", "seed=abc",
           f"hydra.run.dir={tmp_path / 'run'}"]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "seed='abc'" in p.stderr and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines()[0].startswith("devec: error: ")
    p = subprocess.run(cmd, cwd=ROOT, env={**env, "DEVEC_TRACEBACK": "1"}, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode != 0 and "Traceback" in p.stderr


def test_permission_errors_key_errors_and_missing_packages_get_one_line_with_a_hint():
    from devec.cli import USER_ERRORS, error_line

    denied = PermissionError(13, "Permission denied", "/ro/cache/bases/x.safetensors")
    line = error_line(denied)
    assert isinstance(denied, USER_ERRORS) and "\n" not in line
    assert "decomposition.cache=false" in line and "DEVEC_CACHE=" in line and "/ro/cache" in line
    missing = ModuleNotFoundError("No module named 'detoxify'")
    assert isinstance(missing, USER_ERRORS) and "pip install" in error_line(missing)


# ---------------------------------------------------------------- settings that were silently ignored

def test_fig6_sweeps_method_taus_and_each_extraction_sees_its_tau(tmp_path, monkeypatch):
    import devec.toxicity.runner as tox

    class Bench:
        prompts: dict = {}

        def score(self, model, control=None, prompt_sets=None):
            return {"toxic": 1.0, "control": 2.0}

    seen = []
    monkeypatch.setattr(tox, "setup", lambda cfg, run: (None, Bench()))
    monkeypatch.setattr(tox, "unique_vector", lambda cfg, run, pool, subpool, tau=None: seen.append(
        (float(cfg.decomposition.tau), tau)) or SimpleNamespace(root=tmp_path / f"unique-{tau}"))
    monkeypatch.setattr(tox, "edited_model", lambda cfg, pool, terms: None)
    monkeypatch.setattr(tox, "_unique_energy", lambda u: 0.5)
    cfg = composed("fig6_tau", "method.taus=[0.6,0.9]", "method.coefficients=[2]", tmp=tmp_path)
    assert cfg.decomposition.tau is None  # the saved config does not claim a tau the figure does not use
    result = tox.fig6_tau(cfg, Run(tmp_path / "out", tmp_path / "cache"))
    assert [r["tau"] for r in result["rows"]] == [0.6, 0.9]
    assert [s[0] for s in seen] == [0.6, 0.9]  # the config each extraction reads says the tau it runs at


@pytest.mark.parametrize("module", ["recovery", "alternative"])
def test_toy_experiments_compute_on_the_configured_device(tmp_path, monkeypatch, module):
    import importlib

    toy = importlib.import_module(f"devec.toy.{module}")

    class Seen(Exception):
        pass

    def record(vectors, *args, **kwargs):
        raise Seen(vectors[0].device.type if isinstance(vectors, list) else vectors.device.type)

    monkeypatch.setattr(toy, "decompose" if module == "recovery" else "column_basis", record)
    cfg = composed(f"toy_{module}", "toy.n=12", "toy.m=12", "toy.shared=2", "toy.unique=2",
                   "decomposition.rank=fixed:4", "decomposition.cache=false", tmp=tmp_path)
    with open_dict(cfg):
        cfg.device = "meta"  # a device every machine has, and not the CPU default
    with pytest.raises(Seen, match="meta"):
        toy.run(cfg, Run(tmp_path / "out", tmp_path / "cache"))


def test_table1_config_yaml_holds_the_method_values_that_ran(tmp_path):
    """The pool's AdaMerging budget is in config.yaml (Hydra), not merged in Python after it was written."""
    cfg = composed("table1_multitask", "vision.threads=1", tmp=tmp_path)
    with open_dict(cfg):
        for key in [k for k in cfg.methods if k not in ("pretrained", "adamerging_layer")]:
            del cfg.methods[key]
    results = execute(cfg, tmp_path / "out")
    saved = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert set(results["details"]) == set(saved["methods"]) == {"pretrained", "adamerging_layer"}
    for mid, detail in results["details"].items():
        assert detail["config"] == saved["methods"][mid]
    ran = results["details"]["adamerging_layer"]["config"]
    assert (ran["steps"], ran["batch_size"]) == (4, 8)  # the tiny pool's budget, as config.yaml says


# ---------------------------------------------------------------- devec-report

def _job(root: Path, num: int, tau: float, acc: float) -> None:
    job = root / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"decomposition.tau={tau}", f"method=m{num % 2}"]))
    (job / "config.yaml").write_text(yaml.safe_dump({"decomposition": {"tau": tau}}))
    (job / "results.json").write_text(json.dumps({"experiment": "e", "seed": 0, "acc": acc, "loss": 1 - acc}))


@pytest.fixture
def sweep(tmp_path) -> Path:
    root = tmp_path / "sweep"
    for i, tau in enumerate((0.8, 0.9)):
        _job(root, i, tau, 0.5 + tau / 10)
    return root


def test_report_refuses_a_metric_no_run_has_and_names_the_available_ones(sweep, capsys):
    from devec.report.cli import main

    main([str(sweep), "--no-wandb"])  # a first report: its table must not be shown for the bad second one
    capsys.readouterr()
    with pytest.raises(SystemExit) as err:
        main([str(sweep), "--no-wandb", "--metric", "bogus"])
    assert err.value.code not in (0, None)
    assert "bogus" in str(err.value.code) and "acc" in str(err.value.code) and "loss" in str(err.value.code)
    assert "| decomposition.tau |" not in capsys.readouterr().out


def test_report_refuses_an_x_that_no_run_has(sweep):
    from devec.report import build_report

    with pytest.raises(ValueError, match="decomposition.tua"):
        build_report(sweep, wandb_mode=None, x="decomposition.tua")
    with pytest.raises(ValueError, match="--rows"):
        build_report(sweep, wandb_mode=None, rows="methd", cols="metric")


def test_a_new_report_removes_the_files_of_the_one_it_replaces(sweep):
    from devec.report import build_report

    out = sweep / "report"
    (out / "notes.txt").parent.mkdir(parents=True)
    (out / "notes.txt").write_text("mine")  # not written by a report: never removed
    first = build_report(sweep, wandb_mode=None, rows="method", cols="metric")
    assert any("pivot" in t for t in first["tables"])
    second = build_report(sweep, wandb_mode=None, x="decomposition.tau", metrics=["acc"])
    written = {Path(f).name for f in second["tables"] + second["figures"]} | {"report.json", "notes.txt"}
    assert {p.name for p in out.iterdir()} == written
    assert not list(out.glob("pivot.*")) and not list(out.glob("loss_vs_*"))

