"""stream_unique reads only what it decomposes or edits: never a parameter the policy excludes, and with ``names``
only those parameters, which come out as in a whole run."""

from __future__ import annotations

import pytest
import torch

from devec.toxicity.sources import open_source
from devec.toxicity.streaming import stream_unique
from devec.vectors import ParamPolicy, open_checkpoint

SETTINGS = {"tau": 0.85, "rank": "energy:0.9"}


def _counted(pool, read: list[str]):
    """The toxic source and the members, each recording in ``read`` the parameters asked of it."""
    sources = [open_source(pool["toxic"], "dora", "toxic")]
    sources += [open_source(m["path"], m["kind"], n) for n, m in pool["members"].items()]
    for s in sources:
        def delta(name, w_pre, _inner=s.delta):
            read.append(name)
            return _inner(name, w_pre)
        s.delta = delta
    return sources


def test_excluded_parameters_are_never_read(synthetic_pool, tmp_path):
    read: list[str] = []
    toxic, *others = _counted(synthetic_pool, read)
    policy = ParamPolicy(vectors="exclude", embeddings="exclude")
    stream_unique(synthetic_pool["base"], toxic, others, tmp_path, policy=policy, **SETTINGS)
    pre = open_checkpoint(synthetic_pool["base"])
    wanted = {n for n in pre.keys() if policy.action(n, pre.shape(n)) != "exclude"}
    assert wanted and set(read) == wanted, sorted(set(read) ^ wanted)


def test_names_restrict_the_run_to_those_parameters(synthetic_pool, tmp_path):
    pre = open_checkpoint(synthetic_pool["base"])
    kept = [n for n in pre.keys() if n.startswith("model.layers.0.mlp.")]
    read: list[str] = []
    toxic, *others = _counted(synthetic_pool, read)
    part = stream_unique(synthetic_pool["base"], toxic, others, tmp_path, names=kept, **SETTINGS)
    assert kept and set(read) == set(kept)
    assert part.keys() and set(part.keys()) <= set(kept)
    toxic, *others = _counted(synthetic_pool, [])
    whole = stream_unique(synthetic_pool["base"], toxic, others, tmp_path, **SETTINGS)
    assert whole.root != part.root          # a partial run has its own store
    for name in part.keys():
        torch.testing.assert_close(part.get(name), whole.get(name), rtol=0, atol=0)
    with pytest.raises(ValueError, match="not parameters"):
        stream_unique(synthetic_pool["base"], toxic, others, tmp_path, names=["model.nope.weight"], **SETTINGS)
