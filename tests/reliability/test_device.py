"""The GPU path setting (issue 15 item 4): ``decomposition.device`` reaches the engine from every runner, null
follows the run's ``device``, and a GPU that is not there is one line before anything is built."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from devec.cli import CONFIG_DIR, execute
from devec.settings import ConfigError, validate
from devec.vectors import driver
from devec.vectors.driver import DecompositionSettings, decompose_model

NO_CUDA = not torch.cuda.is_available()
SENTINEL = "cuda:7"  # never used for compute here: the engine is replaced by a recorder before it would run


def composed(*overrides: str, tmp: Path) -> object:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=["logger=none", f"paths.root_dir={tmp}",
                                            f"paths.cache_dir={tmp / 'cache'}", *overrides])


@pytest.fixture
def engine_devices(monkeypatch):
    """The device every matrix is moved to before the engine sees it (``driver._on``), recorded."""
    seen: list[str | None] = []
    real = driver._on

    def on(v, device):
        seen.append(device)
        return real(v, device)

    monkeypatch.setattr(driver, "_on", on)
    return seen


def pool(k: int = 3, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [{"w": torch.randn(6, 5, generator=gen), "b": torch.randn(6, generator=gen)} for _ in range(k)]


def test_the_setting_is_where_the_driver_runs_the_engine(engine_devices):
    decompose_model(pool(), DecompositionSettings(device="cpu"), progress=False)
    assert engine_devices and set(engine_devices) == {"cpu"}


def test_an_explicit_device_argument_wins_over_the_setting(engine_devices):
    decompose_model(pool(), DecompositionSettings(device=SENTINEL), progress=False, device="cpu")
    assert set(engine_devices) == {"cpu"}


def test_no_setting_leaves_the_vectors_where_they_are(engine_devices):
    md = decompose_model(pool(), DecompositionSettings(), progress=False)
    assert set(engine_devices) == {None}
    assert md.shared[0]["w"].device.type == "cpu"


def test_components_come_back_to_the_device_the_vectors_were_on():
    md = decompose_model(pool(), DecompositionSettings(device="cpu", mode="pairwise"), progress=False)
    assert all(v.device.type == "cpu" for vectors in md.pairwise_shared.values() for v in vectors.values())


def test_device_is_not_part_of_the_store_key():
    assert DecompositionSettings(device="cpu").key() == DecompositionSettings(device=None).key()


def test_null_follows_the_runs_device_through_the_cli(tmp_path, monkeypatch):
    seen = []
    real = decompose_model

    def recording(pool, settings, **kw):
        seen.append(settings.device)
        return real(pool, settings, **kw)

    monkeypatch.setattr("devec.vectors.runner.decompose_model", recording)
    cfg = composed("experiment=decompose", "name=decompose", tmp=tmp_path)
    assert cfg.decomposition.device is None
    execute(cfg, tmp_path / "run")
    assert seen == ["cpu"]  # the run's device, not None
    assert OmegaConf.load(tmp_path / "run" / "config.yaml").decomposition.device == "cpu"


def test_every_domain_passes_the_setting_on(monkeypatch):
    """Vision (pairwise shared), style (joint over LoRAs) and toxicity (streamed iterative) hand the engine
    ``decomposition.device``."""
    from devec.style import mixing
    from devec.toxicity import runner as toxicity
    from devec.vision import runner as vision

    seen: dict[str, object] = {}

    def recorder(domain):
        def decompose(pool, settings, **kw):
            seen[domain] = kw.get("device") or settings.device
            raise StopIteration

        return decompose

    block = {"mode": "joint", "tau": 0.85, "rank": "energy:0.9", "cache": False, "device": SENTINEL}
    monkeypatch.setattr(vision, "decompose_model", recorder("vision"))
    with pytest.raises(StopIteration):
        vision.pairwise_shared(pool(), block)
    monkeypatch.setattr(mixing, "decompose_model", recorder("style"))
    loras = [SimpleNamespace(name=f"s{i}", modules=["m"], factors={"m": torch.ones(2, 2)}) for i in range(2)]
    with pytest.raises(StopIteration):
        mixing.decompose_styles(loras, block, progress=False)

    def stream(*args, **kw):
        seen["toxicity"] = kw["device"]
        raise StopIteration

    monkeypatch.setattr(toxicity, "stream_unique", stream)
    cfg = OmegaConf.create({"decomposition": {**block, "mode": "iterative"}, "pool": {"store_dtype": "float32"},
                            "resume": True})
    run = SimpleNamespace(cache_dir=Path("unused"), progress=None, stage=_no_stage)
    fake_pool = SimpleNamespace(base="unused", toxic="t", subpool=lambda name: [])
    with pytest.raises(StopIteration):
        toxicity.unique_vector(cfg, run, fake_pool, "All")
    assert seen == {"vision": SENTINEL, "style": SENTINEL, "toxicity": SENTINEL}


def _no_stage(*args, **kwargs):
    import contextlib

    return contextlib.nullcontext()


@pytest.mark.skipif(not NO_CUDA, reason="a CUDA GPU is visible here")
@pytest.mark.parametrize("experiment", ["decompose", "table4_toxicity"])
def test_a_gpu_that_is_not_there_is_one_line_before_anything_is_built(tmp_path, experiment, monkeypatch):
    def tripped(*args, **kwargs):
        raise AssertionError("a pool was built before the settings were checked")

    monkeypatch.setattr("devec.vectors.runner.TaskVectorPool", tripped)
    monkeypatch.setattr("devec.toxicity.runner.load_pool", tripped)
    tiny = ["pool=toxicity/tiny", "data=toxicity/tiny"] if experiment.startswith("table4") else []
    cfg = composed(f"experiment={experiment}", f"name={experiment}", *tiny, "decomposition.device=cuda", tmp=tmp_path)
    with pytest.raises(ConfigError) as err:
        execute(cfg, tmp_path / "run")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("decomposition.device='cuda': no CUDA GPU is visible here")
    assert "decomposition.device=cpu" in message  # what to set instead


def test_a_device_that_is_not_one_is_refused(tmp_path):
    cfg = composed("experiment=decompose", "name=decompose", "decomposition.device=gpu0", tmp=tmp_path)
    with pytest.raises(ConfigError, match=r"decomposition.device='gpu0': not a device; use cpu, cuda, cuda:N"):
        validate(cfg)
