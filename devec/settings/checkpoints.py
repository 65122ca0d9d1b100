"""The checks of a run on your own checkpoints (experiment=decompose): the files and the decomposition."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from devec.settings.core import ConfigError, check_decomposition, instantiated


def _check_checkpoints(cfg: DictConfig) -> None:
    d = check_decomposition(cfg)
    pool = cfg.pool
    for key in ("pretrained", "finetuned"):
        if OmegaConf.is_missing(pool, key):
            raise ConfigError(f"pool.{key} is required here: pool.pretrained=base.safetensors "
                              f"'pool.finetuned=[a.safetensors,b.safetensors]'")
    pretrained, finetuned = pool.get("pretrained"), pool.get("finetuned")
    if isinstance(finetuned, str):
        raise ConfigError(f"pool.finetuned={finetuned!r} is one path, not a list: give at least two fine-tuned "
                          f"checkpoints in brackets, 'pool.finetuned=[a.safetensors,b.safetensors]'")
    from devec.vectors.runner import CheckpointPool

    instantiated("pool", pool, CheckpointPool)  # unknown keys and wrong types, by the class's fields
    finetuned = [str(f) for f in finetuned or []]
    if pretrained is None:
        if finetuned:
            raise ConfigError("pool.finetuned is set but pool.pretrained is not: set pool.pretrained=PATH too")
        if not pool.get("demo"):
            raise ConfigError("set pool.pretrained=PATH and pool.finetuned=[PATH,PATH,...] (safetensors files, "
                              "HF directories or weights-only .pt state dicts)")
        k = int(pool.demo.k)
    else:
        if len(finetuned) < 2:
            raise ConfigError(f"pool.finetuned has {len(finetuned)} checkpoint(s): DeVec needs at least two, "
                              f"'pool.finetuned=[a.safetensors,b.safetensors]'")
        for key, path in [("pool.pretrained", str(pretrained))] + [(f"pool.finetuned[{i}]", p)
                                                                    for i, p in enumerate(finetuned)]:
            if not Path(path).expanduser().exists():
                raise ConfigError(f"{key}={path!r}: no such file or directory")
        k = len(finetuned)
    target = pool.get("target", 0)
    if d.mode == "iterative" and (not isinstance(target, int) or not 0 <= target < k):
        raise ConfigError(f"pool.target={target!r}: the index of the vector whose unique part is wanted, "
                          f"0 .. {k - 1} for this pool of {k}")


CHECKS: dict[str, Callable[[DictConfig], None]] = {
    "devec.vectors.runner.run": _check_checkpoints,
}
"""The check of the checkpoints runner, by ``cfg.runner._target_``."""
