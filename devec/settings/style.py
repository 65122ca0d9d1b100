"""The checks of style mixing (Sec. 4.2): the styles' LoRA files, the mix and the joint decomposition."""

from __future__ import annotations

from collections.abc import Callable

from omegaconf import DictConfig, OmegaConf

from devec.settings.core import ConfigError, check_decomposition, check_device, instantiated, locate, names_in


def _check_style(cfg: DictConfig) -> None:
    from devec.dtypes import torch_dtype
    from devec.style.mixing import Mixing

    if "figure" in cfg:  # experiment=style_figure: the figure's styles, prompts and seeds come from data.figures
        names_in("figure", [cfg.figure], list(cfg.data.get("figures") or {}), "data.figures")
    from devec.style.runner import HubPool, StyleData, StylePool

    check_decomposition(cfg, "joint", "style mixing decomposes all styles jointly (Sec. 4.2), so it")
    method = instantiated("method", cfg.get("method"), Mixing)
    styles = list(cfg.pool.get("styles") or [])
    target = cfg.pool.get("_target_")
    if target and locate("pool._target_", str(target)) is HubPool:  # before instantiating, which reads ??? paths
        for i, s in enumerate(styles):
            if OmegaConf.is_missing(s, "path") or s.get("path") in (None, ""):
                raise ConfigError(f"pool.styles.{i}.path ({s.name}) is not set: a .safetensors LoRA file or a hub "
                                  f"repository id, e.g. pool.styles.{i}.path=/loras/{s.name}.safetensors")
    pool = instantiated("pool", cfg.get("pool"), StylePool)
    instantiated("data", cfg.get("data"), StyleData)
    try:
        torch_dtype(pool.dtype, "pool.dtype")
    except ValueError as err:
        raise ConfigError(str(err)) from None
    names = [str(s.get("name")) for s in pool.styles]
    if len(names) < 2 or len(set(names)) != len(names):
        raise ConfigError(f"pool.styles names {names}: give at least two styles, each with its own name")
    mix = method.mix
    if mix not in (None, "all"):
        if isinstance(mix, str):
            raise ConfigError(f"method.mix={mix!r}: 'all' or a list of style names in brackets, e.g. "
                              f"method.mix=[{names[0]},{names[1]}]")
        aliases = {a: str(s.name) for s in styles for a in (s.get("stands_for") or [])} | {n: n for n in names}
        names_in("method.mix", mix, list(aliases), "pool.styles (names and stands_for)")
        if len({aliases[m] for m in mix}) < 2:
            raise ConfigError(f"method.mix={mix}: selects fewer than two distinct styles of this pool")
    check_device("device", cfg.device)


CHECKS: dict[str, Callable[[DictConfig], None]] = {
    "devec.style.runner.run": _check_style,
}
"""The check of the style runner, by ``cfg.runner._target_``."""
