"""Fixtures of the toxicity tests: untrained pools in the real formats, and the tiny embedded pool (built once)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

CONF = str(Path(__file__).resolve().parents[2] / "conf")


@pytest.fixture(scope="module")
def synthetic_pool(tmp_path_factory):
    from devec.toxicity.synthetic import make_pool

    return make_pool(tmp_path_factory.mktemp("pool"), k=3, dora_members=1)


def compose_cfg(*overrides: str):
    with initialize_config_dir(CONF, version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("devec_cache")


@pytest.fixture(scope="session")
def tiny_pool(tiny_cache):
    """The `pool=toxicity/tiny` preset, built (pre-train + fine-tunes) into a session cache."""
    from devec.toxicity.tiny import build_embedded_pool

    torch.set_num_threads(1)
    cfg = compose_cfg("experiment=table4_toxicity", "pool=toxicity/tiny", "data=toxicity/tiny")
    spec = OmegaConf.to_container(cfg.pool.build, resolve=True)
    return build_embedded_pool(spec, tiny_cache)
