"""The checks of the toy experiments (Appendix 6, 7): the ``toy`` section and the joint decomposition."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from omegaconf import MISSING, DictConfig

from devec.settings.core import ConfigError, _at_least, check_decomposition, one_of, typed


@dataclass
class ToyRecovery:
    n: int = MISSING
    m: int = MISSING
    k: int = 2
    shared: int = MISSING
    unique: int = MISSING
    sigmas: list[float] = MISSING
    repeats: int = 1


@dataclass
class ToyAlternative:
    n: int = MISSING
    m: int = MISSING
    shared: int = MISSING
    unique: int = MISSING
    sigma: float = 0.0
    side: str = "bisector"
    runs: int = 1


def _check_toy(cfg: DictConfig, schema: type) -> None:
    check_decomposition(cfg, "joint", "the toy experiment decomposes jointly (Prop. 3.1), so it")
    toy = typed("toy", cfg.get("toy"), schema)
    k = int(toy.get("k", 2))
    for key in ("n", "m", "shared"):
        _at_least(f"toy.{key}", toy[key], 1)
    _at_least("toy.unique", toy.unique, 0)
    _at_least("toy.k", k, 2)
    _at_least("toy.repeats" if schema is ToyRecovery else "toy.runs", toy.get("repeats", toy.get("runs")), 1)
    if toy.shared + k * toy.unique > toy.n:
        raise ConfigError(f"toy.n={toy.n} is too small for toy.shared={toy.shared} shared + {k} x "
                          f"toy.unique={toy.unique} unique directions; raise toy.n or lower them")
    sigmas = list(toy.sigmas) if schema is ToyRecovery else [toy.sigma]
    if not sigmas:
        raise ConfigError("toy.sigmas=[]: give at least one noise level, e.g. toy.sigmas=[0.0,0.2]")
    bad = [s for s in sigmas if not (math.isfinite(s) and s >= 0)]
    if bad:
        raise ConfigError(f"toy.{'sigmas' if schema is ToyRecovery else 'sigma'}: noise levels must be >= 0, got {bad}")
    if schema is ToyAlternative:
        from devec.engine.angles import SIDES

        one_of("toy.side", toy.side, SIDES)


CHECKS: dict[str, Callable[[DictConfig], None]] = {
    "devec.toy.recovery.run": lambda cfg: _check_toy(cfg, ToyRecovery),
    "devec.toy.alternative.run": lambda cfg: _check_toy(cfg, ToyAlternative),
}
"""The checks of the toy runners, by ``cfg.runner._target_``."""
