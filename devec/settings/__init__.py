"""Every setting of a run, checked before any model is built or downloaded (``devec.cli.execute`` calls
:func:`validate` first); each mistake is a :class:`ConfigError` whose one line names the key and what to change."""

from __future__ import annotations

from collections.abc import Callable

from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from devec.settings import checkpoints, style, toxicity, toy, vision
from devec.settings.core import ConfigError, _check_other, _check_run, _runner, describe

__all__ = ["CHECKS", "ConfigError", "describe", "validate"]


CHECKS: dict[str, Callable[[DictConfig], None]] = {
    **toy.CHECKS, **checkpoints.CHECKS, **vision.CHECKS, **toxicity.CHECKS, **style.CHECKS,
}
"""The checks of each runner devec ships, by ``cfg.runner._target_``; any other runner gets the shared checks only."""


def validate(cfg: DictConfig) -> None:
    """Check ``cfg`` before its runner builds or downloads anything; raises :class:`ConfigError` naming the key."""
    try:
        runner = _runner(cfg)
        _check_run(cfg)
        CHECKS.get(runner, _check_other)(cfg)
    except OmegaConfBaseException as err:  # an interpolation or a required value met while checking
        raise ConfigError(describe(err)) from None
