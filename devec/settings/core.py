"""The helpers every domain's checks share: the error, OmegaConf messages in one line, schema and ``_target_``
checks, and the checks every run gets (runner, seed, device, the ``decomposition`` block)."""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.util
import inspect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError


class ConfigError(ValueError):
    """A mistake in the run's settings; the message names the key and what to change."""


EXPECTED = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false",
            "ListConfig": "a list in brackets, e.g. [a,b]"}
"""OmegaConf's names of the types a value could not be converted to, in the user's words."""


def describe(err: OmegaConfBaseException, prefix: str = "") -> str:
    """One line for an OmegaConf error: the full key, its value and what is wrong."""
    key = ".".join(k for k in (prefix, str(getattr(err, "full_key", "") or "")) if k)
    msg = (getattr(err, "msg", None) or str(err)).splitlines()[0]
    if isinstance(err, ConfigKeyError):
        return f"{key}: unknown key"
    if isinstance(err, ValidationError):
        for omega, words in EXPECTED.items():
            if omega in msg:
                return f"{key}={getattr(err, 'value', None)!r}: expected {words}"
    return f"{key}: {msg}" if key else msg


@dataclass
class RunSettings:
    seed: int = 0
    device: str = "cpu"
    resume: bool = True
    plan_only: bool = False


def typed(key: str, value: Any, schema: type) -> DictConfig:
    """``value`` (the config node at ``key``) checked against ``schema``: unknown keys, wrong types, missing ones."""
    if not isinstance(value, Mapping | DictConfig):
        raise ConfigError(f"{key}={_plain(value)!r}: expected a mapping of settings ({schema.__name__})")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), _plain(value))
    except ConfigKeyError as err:
        raise ConfigError(f"{describe(err, key)}{_suggest(schema, str(err.full_key))}") from None
    except OmegaConfBaseException as err:
        raise ConfigError(describe(err, key)) from None
    missing = sorted(OmegaConf.missing_keys(merged))
    if missing:
        raise ConfigError(f"{key}.{missing[0]} is required and not set")
    return merged


RESERVED = ("_target_", "_partial_", "_convert_", "_recursive_", "_args_")
"""The keys of a ``_target_`` config that Hydra reads, not the class."""


def instantiated(key: str, node: Any, kind: type | None = None) -> Any:
    """The object the ``_target_`` config at ``key`` names, built: its keys checked against the class's fields
    (unknown keys, wrong types), then its own checks; ``kind``: the base class it must be."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    if not isinstance(node, DictConfig) or "_target_" not in node:
        raise ConfigError(f"{key}={_plain(node)!r}: expected a config with _target_ naming the class it builds"
                          f"{f' (a {kind.__name__})' if kind else ''}")
    name = str(node._target_)
    target = locate(f"{key}._target_", name)
    if kind is not None and not (isinstance(target, type) and issubclass(target, kind)):
        raise ConfigError(f"{key}._target_={name!r} is not a {kind.__module__}.{kind.__name__}")
    if dataclasses.is_dataclass(target):
        typed(key, {k: v for k, v in _plain(node).items() if k not in RESERVED}, target)
    try:
        return instantiate(node, _convert_="all")
    except InstantiationException as err:
        msg = " ".join(str(err.__cause__ or err).split())
        fields = [f.name for f in dataclasses.fields(target)] if dataclasses.is_dataclass(target) else []
        own = any(msg.startswith((f"{f}=", f"{f}:", f"{f}.")) for f in fields)  # the class's check names its field
        raise ConfigError(f"{key}.{msg}" if own else f"{key}: {msg}") from None


def signature_checked(key: str, node: Any) -> Any:
    """The class or function the ``_target_`` config at ``key`` names, its keys bound to its parameters without
    calling it (for targets whose construction loads a model or needs a runtime argument)."""
    if not isinstance(node, Mapping | DictConfig) or "_target_" not in node:
        raise ConfigError(f"{key}={_plain(node)!r}: expected a config with _target_ naming the class it builds")
    target = locate(f"{key}._target_", str(node["_target_"]))
    kwargs = {k: v for k, v in _plain(node).items() if k not in RESERVED}
    try:
        parameters = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return target
    if any(p.kind == p.VAR_KEYWORD for p in parameters.values()):
        return target
    known = [n for n, p in parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for name in kwargs:
        if name not in known:
            raise ConfigError(f"{key}.{name}: unknown key; {node['_target_']} takes {', '.join(known) or 'none'}"
                              f"{_near(name, known)}")
    if not node.get("_partial_", False):
        lacking = [n for n, p in parameters.items() if p.default is p.empty and n in known and n not in kwargs]
        if lacking:
            raise ConfigError(f"{key}.{lacking[0]} is required and not set")
    return target


def locate(key: str, name: str) -> Any:
    """The class or function ``name`` (a dotted path, the ``_target_`` at ``key``), imported."""
    module, _, attr = name.rpartition(".")
    try:
        found = bool(module) and importlib.util.find_spec(module) is not None
    except ImportError:
        found = False
    if not found:
        raise ConfigError(f"{key}={name!r}: no module {module!r}; give module.function or module.Class")
    target = getattr(importlib.import_module(module), attr, None)  # an ImportError inside it is the module's own
    if target is None:
        raise ConfigError(f"{key}={name!r}: module {module!r} has no {attr!r}")
    return target


# ---------------------------------------------------------------- checks every run gets

def _runner(cfg: DictConfig) -> str:
    """The dotted path of the experiment's runner function (``runner: {_target_: ..., _partial_: true}``)."""
    if "runner" not in cfg or OmegaConf.is_missing(cfg, "runner"):
        raise ConfigError("runner is not set: choose an experiment, e.g. experiment=table1_multitask "
                          "(one file per table or figure in conf/experiment/)")
    node = cfg.runner
    if not isinstance(node, DictConfig) or "_target_" not in node or not node.get("_partial_", False):
        raise ConfigError(f"runner={_plain(node)!r}: expected {{_target_: module.function, _partial_: true}} "
                          "(set by conf/experiment/)")
    name = str(node._target_)
    if not callable(locate("runner._target_", name)):
        raise ConfigError(f"runner._target_={name!r} is not a function (set by conf/experiment/)")
    extra = [k for k in node if k not in RESERVED]
    if extra:
        raise ConfigError(f"runner.{extra[0]}: unknown key; a runner takes (cfg, run), its settings live in their "
                          "own sections")
    return name


def _check_run(cfg: DictConfig) -> None:
    settings = typed("", {k: cfg[k] for k in ("seed", "device", "resume", "plan_only") if k in cfg}, RunSettings)
    check_device("device", settings.device)


def check_device(key: str, value: Any) -> None:
    """``value`` names a torch device that exists here (``cuda`` needs a visible GPU)."""
    import torch

    try:
        device = torch.device(str(value))
    except (RuntimeError, ValueError):
        raise ConfigError(f"{key}={value!r}: not a device; use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"{key}={value!r}: no CUDA GPU is visible here; set {key}=cpu (or run on a GPU machine)")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"{key}={value!r}: only {count} CUDA device(s) are visible (cuda:0 .. cuda:{count - 1})")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"{key}={value!r}: MPS is not available here; set {key}=cpu")
    elif device.type != "cpu":
        raise ConfigError(f"{key}={value!r}: use cpu, cuda, cuda:N or mps")


DECOMPOSITION_KEYS = ("mode", "tau", "rank", "method", "svd", "cache", "policy", "device", "chance_draws")
"""The keys of a ``decomposition`` block: the fields of the driver's DecompositionSettings it reads."""


def check_decomposition(cfg: DictConfig, mode: str | None = None, why: str = "", tau_swept: str = "") -> Any:
    """The ``decomposition`` block, built into the driver's :class:`~devec.vectors.driver.DecompositionSettings`
    (its one schema): keys, mode (``mode``: the only one this runner uses), tau, rank, method, svd, policy."""
    from devec.engine import MODES
    from devec.engine.basis import SVD_BACKENDS
    from devec.engine.rank import parse_rank
    from devec.engine.subspace import METHODS
    from devec.vectors.driver import DecompositionSettings

    block = _plain(cfg.get("decomposition"))
    if not isinstance(block, Mapping):
        raise ConfigError(f"decomposition={block!r}: expected a mapping of settings (conf/decomposition/)")
    for key in block:
        if key not in DECOMPOSITION_KEYS:
            raise ConfigError(f"decomposition.{key}: unknown key; known keys: {', '.join(DECOMPOSITION_KEYS)}"
                              f"{_near(str(key), DECOMPOSITION_KEYS)}")
    d = {"mode": "joint", "tau": 0.85, "rank": "energy:0.9", "method": "lowrank", "svd": "auto", **block}
    one_of("decomposition.mode", d["mode"], MODES)
    if d.get("device") is not None:
        check_device("decomposition.device", d["device"])
    if mode and d["mode"] != mode:
        raise ConfigError(f"decomposition.mode={d['mode']!r}: {why} uses mode {mode!r}; "
                          f"use decomposition={mode} (the experiment's default)")
    tau = d["tau"]
    if tau_swept:
        if tau is not None:
            raise ConfigError(f"decomposition.tau={tau}: this experiment sweeps {tau_swept} instead; "
                              f"set {tau_swept}=[{tau}] (or a list of taus) and leave decomposition.tau unset")
    elif isinstance(tau, bool) or not isinstance(tau, int | float) or not (0.0 < tau <= 1.0):
        raise ConfigError(f"decomposition.tau={tau!r}: tau must be in (0, 1] (the eigenvalue threshold, eq. 10)")
    try:
        rule = parse_rank(d["rank"])
    except ValueError as err:
        raise ConfigError(f"decomposition.rank={d['rank']!r}: {err}") from None
    one_of("decomposition.method", d["method"], METHODS)
    one_of("decomposition.svd", d["svd"], SVD_BACKENDS)
    draws = d.get("chance_draws", 8)
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 0:
        raise ConfigError(f"decomposition.chance_draws={draws!r}: use an integer >= 0, the draws of random subspaces "
                          "behind each layer's chance level of sharing (0 turns it off)")
    if d["svd"] == "randomized" and rule.needs_full_spectrum:
        raise ConfigError(f"decomposition.svd=randomized needs a rank rule with a target rank (fixed:R or ratio:F), "
                          f"got decomposition.rank={d['rank']!r}")
    try:
        return DecompositionSettings.from_config(d, **({"tau": 0.85} if tau_swept else {}))
    except ValueError as err:
        raise ConfigError(str(err)) from None


def one_of(key: str, value: Any, choices: Iterable[str]) -> None:
    """``value`` is one of ``choices``, else an error naming ``key`` (and the nearest choice)."""
    choices = list(choices)
    if value not in choices:
        raise ConfigError(f"{key}={_plain(value)!r}: use one of {', '.join(map(str, choices))}"
                          f"{_near(str(value), choices)}")


def names_in(key: str, names: Iterable[Any], known: Iterable[str], where: str) -> None:
    """Every name in ``names`` is in ``known`` (``where`` says where the known names come from)."""
    known = list(known)
    unknown = [str(n) for n in names if str(n) not in known]
    if unknown:
        raise ConfigError(f"{key}: unknown {', '.join(map(repr, unknown))}{_near(unknown[0], known)}; "
                          f"{where} has {', '.join(known)}")


def _check_other(cfg: DictConfig) -> None:
    """A runner devec does not know (a user's own): the shared blocks only."""
    if "decomposition" in cfg:
        check_decomposition(cfg)


# ---------------------------------------------------------------- helpers

def _at_least(key: str, value: Any, low: int) -> None:
    if value is None or value < low:
        raise ConfigError(f"{key}={value!r}: must be >= {low}")


def _plain(value: Any) -> Any:
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _near(value: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(value, [str(c) for c in choices], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _suggest(schema: type, full_key: str) -> str:
    """'; known keys: ...' of the schema node that lacks ``full_key`` (and the nearest one)."""
    parent, _, name = full_key.rpartition(".")
    node = OmegaConf.structured(schema)
    node = OmegaConf.select(node, parent, throw_on_missing=False) if parent else node
    known = [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []
    return f"; known keys: {', '.join(known)}{_near(name, known)}" if known else ""
