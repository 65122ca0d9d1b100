"""The checks of style mixing (Sec. 4.2): the styles' LoRA files, the mix and the joint decomposition."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from devec.settings.core import ConfigError, check_decomposition, check_device, instantiated, names_in


def _check_style(cfg: DictConfig) -> None:
    from devec.dtypes import torch_dtype
    from devec.style.mixing import Mixing
    from devec.style.runner import HubPool, StyleData, StylePool, pool_config

    if "figure" in cfg:  # experiment=style_figure: the figure's styles, prompts and seeds come from data.figures
        names_in("figure", [cfg.figure], list(cfg.data.get("figures") or {}), "data.figures")
    check_decomposition(cfg, "joint", "style mixing decomposes all styles jointly (Sec. 4.2), so it")
    method = instantiated("method", cfg.get("method"), Mixing)
    pool = instantiated("pool", pool_config(cfg.get("pool")), StylePool)
    instantiated("data", cfg.get("data"), StyleData)
    try:
        torch_dtype(pool.dtype, "pool.dtype")
    except ValueError as err:
        raise ConfigError(str(err)) from None
    names = [str(s.get("name")) for s in pool.styles]
    if len(names) < 2 or len(set(names)) != len(names):
        raise ConfigError(f"pool.styles names {names}: give at least two styles, each with its own name")
    picked = _mixed(cfg, method.mix, pool.styles)
    _check_common(getattr(pool, "lora_train", None), names)
    if isinstance(pool, HubPool):
        needed = picked if method.decompose_over == "mix" or len(picked) == 1 else names
        _check_files(pool, needed)
    check_device("device", cfg.device)


def _check_common(train: Any, names: Sequence[str]) -> None:
    """``pool.lora_train.common`` of the embedded pool: a known change, given to styles the pool has."""
    if not train:
        return
    from devec.style.data import COMMON, common_spec

    try:
        change, styles = common_spec(train.get("common", "none"))
    except ValueError as err:
        raise ConfigError(str(err)) from None
    names_in("pool.lora_train.common.change", [change], sorted(COMMON), "the common changes")
    if styles is not None:
        names_in("pool.lora_train.common.styles", styles, list(names), "pool.styles")


def _mixed(cfg: DictConfig, mix: Any, styles: Sequence[dict[str, Any]]) -> list[str]:
    """The pool styles ``method.mix`` picks; an error names ``data.figures.<figure>.mix`` when the figure set it."""
    from devec.style.runner import select_styles

    from_figure = "figure" in cfg and OmegaConf.is_interpolation(cfg.method, "mix")
    key = f"data.figures.{cfg.figure}.mix" if from_figure else "method.mix"
    if isinstance(mix, str) and mix != "all":
        raise ConfigError(f"{key}={mix!r}: 'all' or a list of style names in brackets, e.g. "
                          f"{key}=[{styles[0]['name']},{styles[1]['name']}]")
    if mix not in (None, "all"):
        aliases = [str(a) for s in styles for a in (s.get("stands_for") or [])]
        names_in(key, mix, [str(s["name"]) for s in styles] + aliases, "pool.styles (names and stands_for)")
        if not list(mix):
            raise ConfigError(f"{key}=[]: name at least one style")
    try:
        return select_styles(mix, styles)
    except ValueError as err:
        raise ConfigError(f"{key}: {err}") from None


def _check_files(pool: Any, needed: Sequence[str]) -> None:
    """Every LoRA the run reads is set, and a local ``.safetensors`` file exists (a hub repository id is not
    checked here: it is downloaded by the run)."""
    from devec.style.runner import missing_lora

    for i, s in enumerate(pool.styles):
        if s["name"] not in needed:
            continue
        where = pool.location(i)
        if where is None:
            raise ConfigError(missing_lora(i, s))
        if where.endswith(".safetensors") and not Path(where).is_file():
            key = f"pool.styles.{i}.path" if s.get("path") not in (None, "") else "pool.lora_dir"
            what = s.get("download") or f"a LoRA for {s['name']} ({s.get('source') or 'no source recorded'})"
            raise ConfigError(f"{key}: no LoRA file {where} ({s['name']}); download {what} there or set "
                              f"pool.styles.{i}.path to where the file is")


CHECKS: dict[str, Callable[[DictConfig], None]] = {
    "devec.style.runner.run": _check_style,
}
"""The check of the style runner, by ``cfg.runner._target_``."""
