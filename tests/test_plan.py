"""A first call at paper scale says what it will do (issue 15 item 6), and the hub mirror (item 2): offline, no hang."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from hydra import compose, initialize_config_dir

from devec import hub, plan
from devec.cli import CONFIG_DIR, execute


def composed(*overrides: str, tmp: Path):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=["logger=none", f"paths.root_dir={tmp}",
                                            f"paths.cache_dir={tmp / 'cache'}", *overrides])


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
    """An empty hub cache and no mirror, whatever this machine holds; the mirror is reset after each test."""
    monkeypatch.setattr(plan, "_CACHE", {})
    hub.set_mirror(None)
    yield
    hub.set_mirror(None)


@pytest.fixture
def hub_online(monkeypatch):
    """huggingface_hub not in offline mode (the hub calls themselves are replaced by each test)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")


def refs(p: plan.Plan) -> set[tuple[str, str]]:
    return {(i.fetch.kind, i.fetch.ref) for i in p.items}


def test_table1_at_paper_scale_lists_its_checkpoints_and_datasets_with_the_hub_unreachable(tmp_path):
    cfg = composed("experiment=table1_multitask", "scale=paper", "pool=vision/paper_fusionbench",
                   "name=table1_multitask", tmp=tmp_path)
    assert plan.wanted(cfg)
    start = time.perf_counter()
    p = plan.make(cfg)
    assert time.perf_counter() - start < 30  # HF_HUB_OFFLINE: no hub call is even tried
    tasks = list(cfg.vision.tasks)
    expected = {("model", cfg.pool.pretrained)} | {("model", cfg.pool.finetuned[t]) for t in tasks}
    expected |= {("dataset", cfg.data.tasks_hf[t].path) for t in tasks}
    assert refs(p) == expected
    assert {i.status for i in p.items} == {"to download"} and all(i.size is None for i in p.items)
    assert p.hub_reachable is False
    text = plan.render(p)
    assert "size unknown (hub unreachable)" in text and "openai/clip-vit-base-patch32" in text
    assert p.stages[0] == "load" and "decomposition (cpu)" in p.stages


def test_local_checkpoints_that_are_missing_name_the_key_to_set(tmp_path):
    cfg = composed("experiment=table1_multitask", "scale=paper", "name=table1_multitask", tmp=tmp_path)
    p = plan.make(cfg)
    pre = next(i for i in p.items if i.fetch.key == "pool.pretrained")
    assert pre.fetch.ref == cfg.pool.pretrained and pre.status == "MISSING: no such local path (set pool.pretrained)"
    (tmp_path / "zeroshot.safetensors").write_bytes(b"")
    cfg = composed("experiment=table1_multitask", "scale=paper", "name=table1_multitask",
                   f"pool.pretrained={tmp_path / 'zeroshot.safetensors'}", tmp=tmp_path)
    pre = next(i for i in plan.make(cfg).items if i.fetch.key == "pool.pretrained")
    assert pre.status == "local"


def test_table4_at_paper_scale_lists_the_base_every_member_its_subpools_use_and_the_benchmarks(tmp_path):
    cfg = composed("experiment=table4_toxicity", "scale=paper", "name=table4_toxicity", tmp=tmp_path)
    p = plan.make(cfg)
    models = {ref for kind, ref in refs(p) if kind == "model"}
    members = cfg.pool.members
    assert cfg.pool.base in models
    assert {str(members[m].repo) for m in cfg.pool.subpools[cfg.method.subpool]} <= models
    assert {str(members[m].repo) for m in cfg.pool.toxic_vectors.values()} <= models
    assert str(cfg.data.prompts.toxigen.classifiers[0].model) in models
    assert ("dataset", str(cfg.data.prompts.rtp.path)) in refs(p)
    keys = [i.fetch.key for i in p.items]
    assert len(keys) == len(set(refs(p)))  # each repository once
    adapters = [i for i in p.items if i.fetch.key == "pool.members.toxic_rtp.repo"]
    assert adapters[0].status.startswith("MISSING")  # the DoRA adapters are trained first (paths.toxic_adapters)


def test_a_hub_that_does_not_answer_costs_the_timeout_only(tmp_path, monkeypatch, hub_online):
    def hang(self, repo_id, **kw):
        time.sleep(3)
        raise TimeoutError

    monkeypatch.setattr("huggingface_hub.HfApi.model_info", hang)
    monkeypatch.setattr("huggingface_hub.HfApi.dataset_info", hang)
    cfg = composed("experiment=table1_multitask", "scale=paper", "pool=vision/paper_fusionbench",
                   "name=table1_multitask", tmp=tmp_path)
    start = time.perf_counter()
    p = plan.make(cfg, timeout=0.3)
    assert time.perf_counter() - start < 2.5
    assert p.hub_reachable is False and all(i.size is None for i in p.items)


def test_sizes_come_from_the_hub_metadata_of_the_files_a_run_downloads(tmp_path, monkeypatch, hub_online):
    files = {"model.safetensors": 1000, "config.json": 10, "pytorch_model.bin": 5000, "README.md": 7}

    def info(self, repo_id, files_metadata=False, timeout=None):
        assert files_metadata and timeout is not None
        return SimpleNamespace(siblings=[SimpleNamespace(rfilename=n, size=b) for n, b in files.items()])

    monkeypatch.setattr("huggingface_hub.HfApi.model_info", info)
    monkeypatch.setattr("huggingface_hub.HfApi.dataset_info", info)
    safetensors = plan.Fetch("owner/safe", "pool.base", "model", ("*.safetensors", "*.json"))
    with_bin = plan.Fetch("owner/bin", "pool.members.x.repo", "model", ("*.safetensors", "*.json", "*.bin"))
    data = plan.Fetch("owner/data", "data.prompts.rtp.path", "dataset")
    items = [plan.Item(f, status="to download") for f in (safetensors, with_bin, data)]
    assert plan._sizes(items, timeout=5) is True
    assert [i.size for i in items] == [1010, 6010, sum(files.values())]
    p = plan.Plan("x", items, ["load"], "cache", None, True)
    assert p.total() == (1010 + 6010 + sum(files.values()), 0)
    assert "to download: 13.0 KB" in plan.render(p)


def test_a_cached_repository_is_reported_as_cached(tmp_path, monkeypatch):
    cfg = composed("experiment=table1_multitask", "scale=paper", "pool=vision/paper_fusionbench",
                   "name=table1_multitask", tmp=tmp_path)
    monkeypatch.setattr(plan, "_CACHE", {("model", str(cfg.pool.pretrained)): ("/hf/models--openai", 600_000_000)})
    pre = next(i for i in plan.make(cfg).items if i.fetch.key == "pool.pretrained")
    assert (pre.status, pre.size, pre.where) == ("cached", 600_000_000, "/hf/models--openai")


def test_plan_only_prints_the_plan_and_builds_nothing(tmp_path, monkeypatch, capsys):
    def tripped(*args, **kwargs):
        raise AssertionError("plan_only built a pool")

    monkeypatch.setattr("devec.vision.runner.load_pool", tripped)
    monkeypatch.setattr("devec.vision.runner.load_tasks", tripped)
    cfg = composed("experiment=table1_multitask", "scale=paper", "pool=vision/paper_fusionbench",
                   "name=table1_multitask", "plan_only=true", "decomposition.device=cuda:99", tmp=tmp_path)
    out = tmp_path / "run"
    result = execute(cfg, out)
    printed = capsys.readouterr().out
    assert "Plan of table1_multitask" in printed and "tanganke/clip-vit-base-patch32_sun397" in printed
    assert not (out / "results.json").exists()
    written = json.loads((out / "plan.json").read_text())
    assert written == result["plan"]
    assert any("decomposition.device='cuda:99'" in n for n in written["notes"])  # a note, not an error


def test_the_mirror_maps_hub_ids_to_its_folders(tmp_path):
    mirror = tmp_path / "mirror"
    (mirror / "openai" / "clip-vit-base-patch32").mkdir(parents=True)
    (mirror / "tanganke" / "sun397").mkdir(parents=True)
    hub.set_mirror(mirror)
    assert hub.resolve("openai/clip-vit-base-patch32", ["*.json"]) == mirror / "openai" / "clip-vit-base-patch32"
    assert hub.dataset("tanganke/sun397", "data.tasks_hf.sun397.path") == str(mirror / "tanganke" / "sun397")
    local = tmp_path / "own"
    local.mkdir()
    assert hub.dataset(str(local), "data.x.path") == str(local)  # a local path stays as it is
    with pytest.raises(FileNotFoundError) as err:
        hub.resolve("tanganke/clip-vit-base-patch32_svhn", ["*.json"], key="pool.finetuned.svhn")
    message = str(err.value)
    assert "pool.finetuned.svhn='tanganke/clip-vit-base-patch32_svhn' is not in the hub mirror" in message
    assert str(mirror / "tanganke" / "clip-vit-base-patch32_svhn") in message


def test_without_a_mirror_ids_are_left_to_the_hub(tmp_path):
    assert hub.mirror() is None
    assert hub.dataset("tanganke/sun397", "data.tasks_hf.sun397.path") == "tanganke/sun397"


def test_a_mirror_that_is_not_a_folder_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="paths.hub_mirror=.*is not a directory"):
        hub.set_mirror(tmp_path / "nowhere")


def test_the_plan_reads_from_the_mirror_the_run_sets(tmp_path):
    mirror = tmp_path / "mirror"
    (mirror / "openai" / "clip-vit-base-patch32").mkdir(parents=True)
    cfg = composed("experiment=table1_multitask", "scale=paper", "pool=vision/paper_fusionbench",
                   "name=table1_multitask", "plan_only=true", f"paths.hub_mirror={mirror}", tmp=tmp_path)
    written = execute(cfg, tmp_path / "run")["plan"]
    status = {i["ref"]: i["status"] for i in written["items"]}
    assert written["mirror"] == str(mirror)
    assert status["openai/clip-vit-base-patch32"] == "in the mirror"
    assert status[str(cfg.pool.finetuned.sun397)] == "MISSING from the mirror"
