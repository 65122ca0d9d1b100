"""The embedded style pool is in the paper's regime (issue 14, item 5): its style LoRAs share a subspace above
chance at tau 0.85, and mixing only the unique components differs from mixing the whole LoRAs.

Slow: builds the embedded default from an empty cache (base, VAE, Fig. 4's four LoRAs, shape classifier) and runs
``experiment=style_mixing`` at one seed, a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir

from devec.cli import CONFIG_DIR, execute


@pytest.fixture(scope="module")
def embedded_run(tmp_path_factory):
    """experiment=style_mixing on the embedded default (Fig. 4's set, coefficient 1), seed 0."""
    root = tmp_path_factory.mktemp("style_regime")
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["experiment=style_mixing", "logger=none", "seed=0", "name=style_mixing",
                                           f"paths.cache_dir={root / 'cache'}", f"paths.root_dir={root}"])
    torch.set_num_threads(1)
    return cfg, root, execute(cfg, root / "run")


@pytest.mark.slow
def test_the_mixed_style_loras_share_a_subspace_above_chance(embedded_run):
    _, _, results = embedded_run
    dec = results["decomposition"]
    sharing = dec["sharing"]
    assert dec["modules_with_shared"] > 0, dec
    assert sharing["mean_chance_dim"] is not None, "decomposition.chance_draws must be > 0 for this check"
    assert sharing["mean_shared_dim"] > sharing["mean_chance_dim"] + 0.1, sharing
    assert sharing["layers_above_chance"] >= dec["modules_with_shared"] // 2, sharing
    assert all(dec[f"shared_energy/{s}"] > 0 for s in results["styles"]), dec


@pytest.mark.slow
def test_the_unique_mix_differs_from_the_plain_mix_in_style_strengths(embedded_run):
    _, _, results = embedded_run
    rows = {r["setting"]: r for r in results["rows"]}
    plain, unique = rows["vanilla x1"], rows["unique x1"]
    gaps = [abs(unique[f"strength/{s}"] - plain[f"strength/{s}"]) for s in results["styles"]]
    assert max(gaps) > 0.05, (plain, unique)
    assert abs(unique["common_strength"] - plain["common_strength"]) > 0.05, (plain, unique)
