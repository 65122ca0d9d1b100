"""Every setting of a run, checked before any model is built or downloaded (``devec.cli.execute`` calls
:func:`validate` first): types, ranges, device availability and the names of pool members, tasks, sub-pools and
styles, so a typo costs seconds.

The runner, every method, every pool and every data / task pool are ``_target_`` configs: :func:`instantiated`
checks a config's keys against its class's fields (the class is the schema) and builds it (a pool or task pool
class only holds its settings: nothing is built or downloaded until the runner calls its ``load``), the runner's
function must import, and a classifier (whose construction loads a model) has its keys bound to its class's
parameters by :func:`signature_checked` without being built. The sections a runner reads itself
(``decomposition``: the driver's :class:`~devec.vectors.driver.DecompositionSettings`, ``toy``, ``vision``) are
checked against their schemas. A key a schema does not
know (``+decomposition.tua=0.9``) is an error, not ignored. Every mistake is a :class:`ConfigError` whose one line
names the key and says what to change.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.util
import inspect
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError


class ConfigError(ValueError):
    """A mistake in the run's settings; the message names the key and what to change."""


def validate(cfg: DictConfig) -> None:
    """Check ``cfg`` before its runner builds or downloads anything; raises :class:`ConfigError` naming the key."""
    try:
        runner = _runner(cfg)
        _check_run(cfg)
        CHECKS.get(runner, _check_other)(cfg)
    except OmegaConfBaseException as err:  # an interpolation or a required value met while checking
        raise ConfigError(describe(err)) from None


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


# ---------------------------------------------------------------- schemas of the sections runners own

@dataclass
class RunSettings:
    seed: int = 0
    device: str = "cpu"
    resume: bool = True


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


@dataclass
class ArithmeticGroup:
    sources: list[str] = MISSING
    target: str = MISSING


@dataclass
class Arithmetic:
    groups: list[ArithmeticGroup] = MISSING
    alphas: list[float] = MISSING


@dataclass
class Ablation:
    granularity: str = "task"
    init: float = 0.3
    steps: int = 100
    lr: float = 1.0e-2
    batch_size: int = 32


@dataclass
class VisionSettings:
    tasks: list[str] | None = None
    unseen: list[str] | None = None
    val_limit: int | None = None
    test_limit: int | None = None
    threads: int | None = None
    arithmetic: Arithmetic | None = None
    ablation: Ablation | None = None


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
    settings = typed("", {k: cfg[k] for k in ("seed", "device", "resume") if k in cfg}, RunSettings)
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


DECOMPOSITION_KEYS = ("mode", "tau", "rank", "method", "svd", "cache", "policy")
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


# ---------------------------------------------------------------- toy experiments (Appendix 6, 7)

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


# ---------------------------------------------------------------- your checkpoints (experiment=decompose)

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


# ---------------------------------------------------------------- vision (Sec. 4.1)

VISION_MODES = {"table1": "pairwise", "table2": "pairwise", "table3": "joint", "fig2_fig3": "joint"}
"""The decomposition mode of each vision runner (devec.vision.runner.<protocol>)."""


def _check_vision(cfg: DictConfig, protocol: str) -> None:
    from devec.vision.data import SyntheticTasks, TaskPool
    from devec.vision.pool import EmbeddedPool, PoolSpec

    vision = typed("vision", cfg.get("vision"), VisionSettings)
    check_decomposition(cfg, VISION_MODES[protocol], f"the runner devec.vision.runner.{protocol}")
    for key in ("val_limit", "test_limit", "threads"):
        if vision[key] is not None:
            _at_least(f"vision.{key}", vision[key], 1)
    pool = instantiated("pool", cfg.get("pool"), PoolSpec)
    data = instantiated("data", cfg.get("data"), TaskPool)
    available = data.available()
    where = "the synthetic data (devec/vision/synthetic.py)" if isinstance(data, SyntheticTasks) \
        else "data.tasks_hf (entries with a path)"
    merged = _vision_tasks(vision, protocol)
    evaluated = list(merged)
    if protocol == "table2":
        evaluated += list(vision.unseen or [])
    if protocol == "fig2_fig3":
        evaluated += [g.target for g in vision.arithmetic.groups]
    names_in(f"vision tasks of the {protocol} runner", evaluated, available, where)
    if not isinstance(pool, EmbeddedPool):
        lacking = [n for n in merged if n not in pool.finetuned]
        if lacking:
            raise ConfigError(f"pool.finetuned has no checkpoint for {', '.join(map(repr, lacking))}, which "
                              f"the {protocol} runner merges: add pool.finetuned.{lacking[0]}=<hub repo or path>")
    if protocol == "table3":
        one_of("vision.ablation.granularity", vision.ablation.granularity, ("task", "layer"))
        _at_least("vision.ablation.batch_size", vision.ablation.batch_size, 1)
        _at_least("vision.ablation.steps", vision.ablation.steps, 0)
    if protocol in ("table1", "table2"):
        _check_vision_methods(cfg, baselines=protocol == "table1")


def _vision_tasks(vision: DictConfig, protocol: str) -> list[str]:
    """The tasks whose fine-tuned models a protocol merges; the settings each protocol needs are set."""
    if protocol == "fig2_fig3":
        if vision.arithmetic is None:
            raise ConfigError("vision.arithmetic is required by the fig2_fig3 runner (groups and alphas)")
        if not vision.arithmetic.groups or not vision.arithmetic.alphas:
            raise ConfigError("vision.arithmetic: give at least one group and one alpha")
        for i, g in enumerate(vision.arithmetic.groups):
            if len(g.sources) < 2:
                raise ConfigError(f"vision.arithmetic.groups[{i}].sources={list(g.sources)}: a joint decomposition "
                                  "needs at least two task vectors")
        return list(dict.fromkeys(s for g in vision.arithmetic.groups for s in g.sources))
    if not vision.tasks or len(vision.tasks) < 2:
        raise ConfigError(f"vision.tasks={_plain(vision.tasks)}: the {protocol} runner merges at least two tasks")
    if protocol == "table2" and not vision.unseen:
        raise ConfigError("vision.unseen is required by the table2 runner (the held-out tasks)")
    if protocol == "table3" and vision.ablation is None:
        raise ConfigError("vision.ablation is required by the table3 runner (granularity, init, steps, lr, "
                          "batch_size)")
    return list(vision.tasks)


def _check_vision_methods(cfg: DictConfig, baselines: bool) -> None:
    """Every row builds from its ``_target_`` config; with ``baselines`` (Table 1 reads DeVec's effect from them),
    a row's ``baseline`` names another row's id."""
    from devec.vision.methods import Method
    from devec.vision.runner import method_configs

    methods = method_configs(cfg)
    if not methods:
        raise ConfigError("the experiment lists no methods: methods: {...} in conf/experiment/, or "
                          "method=vision/<name>")
    for key, node in methods.values():
        m = instantiated(key, node, Method)
        if baselines and m.baseline is not None and m.baseline not in methods:
            raise ConfigError(f"{key}.baseline={m.baseline!r}: no row has that id{_near(m.baseline, list(methods))}; "
                              f"the rows are {', '.join(methods)} (add it, or set {key}.baseline=null)")


# ---------------------------------------------------------------- toxicity (Sec. 4.3)

def _check_toxicity(cfg: DictConfig, figure: str) -> None:
    from devec.dtypes import torch_dtype
    from devec.toxicity.pool import HubPool, PoolSpec

    pool = instantiated("pool", cfg.get("pool"), PoolSpec)
    for key in ("dtype", "store_dtype"):
        try:
            torch_dtype(getattr(pool, key), f"pool.{key}", allowed=("float32", "bfloat16", "float16", "float64")
                        if key == "store_dtype" else ("float32", "bfloat16", "float16"))
        except ValueError as err:
            raise ConfigError(str(err)) from None
    if pool.threads is not None:
        _at_least("pool.threads", pool.threads, 1)
    from devec.toxicity.runner import DoraTraining, Negation

    method = instantiated("method", cfg.get("method"), DoraTraining if figure == "train_dora" else Negation)
    if figure == "train_dora":
        recipe = list((pool.recipe or {}).get("datasets") or {})
        names_in("method.datasets", method.datasets or [], recipe, "pool.recipe.datasets")
        return
    check_decomposition(cfg, "iterative", "toxicity removal extracts the toxic vector's unique part iteratively "
                        "(Sec. 4.3), so it", tau_swept="method.taus" if figure == "fig6" else "")
    check_device("pool.decompose_device", pool.decompose_device)
    members = pool.member_names()
    names_in("pool.toxic", [pool.toxic], members, "pool.members")
    subpools = list(method.subpools) if figure == "fig5" else [method.subpool]
    if not subpools:
        raise ConfigError("method.subpools=[]: name at least one of pool.subpools")
    others = [m for m in members if m != pool.toxic]
    key = "method.subpools" if figure == "fig5" else "method.subpool"
    used = {pool.toxic: "pool.toxic"}
    for s in subpools:
        used.update({n: f"sub-pool {s}" for n in _subpool_members(cfg, key, s, others) if n not in used})
    if isinstance(pool, HubPool):
        for name, user in used.items():
            repo = str(pool.members[name].get("repo"))
            if repo.startswith("SET-ME"):
                raise ConfigError(f"pool.members.{name}.repo={repo!r}: set it to the checkpoint's hub repository "
                                  f"or a local directory ({user} uses it)")
    if figure == "fig5" and not method.coefficients:
        raise ConfigError("method.coefficients=[]: give the lambdas to sweep, e.g. method.coefficients=[0,1,2]")
    if figure == "fig6":
        bad = [t for t in method.taus if not 0.0 < t <= 1.0]
        if not method.taus or bad:
            raise ConfigError(f"method.taus={list(method.taus)}: give one or more taus, each in (0, 1]")
    _check_bench(cfg, control_only=figure in ("fig5", "fig6"))


def _subpool_members(cfg: DictConfig, key: str, name: str, others: Sequence[str]) -> list[str]:
    """The members sub-pool ``name`` (named at ``key``) extracts against; each must be a non-toxic pool member."""
    subpools = cfg.pool.get("subpools") or {}
    names_in(key, [name], list(subpools), "pool.subpools")
    spec = subpools[name]
    if isinstance(spec, Mapping | DictConfig):
        count = spec.get("random")
        if not isinstance(count, int) or not 1 <= count <= len(others):
            raise ConfigError(f"pool.subpools.{name}.random={count!r}: draw 1 .. {len(others)} of the pool's "
                              f"{len(others)} non-toxic members")
        return list(others)
    names_in(f"pool.subpools.{name}", spec, others, "the pool's non-toxic members (pool.members minus pool.toxic)")
    return [str(n) for n in spec]


def _check_bench(cfg: DictConfig, control_only: bool) -> None:
    from devec.toxicity.evaluate import EvaluationData, PerspectiveClassifier

    instantiated("data", cfg.get("data"), EvaluationData)  # _recursive_: false, the classifiers stay configs
    data = cfg.data
    ids = [str(t.get("name")) for t in (data.control.get("tasks") or [])]
    if control_only:
        names_in("data.sweep_control", data.get("sweep_control") or [], ids, "data.control.tasks (names)")
    for i, node in enumerate(data.get("classifiers") or []):
        key = f"data.classifiers[{i}]"
        cls = signature_checked(key, node)  # built by the runner: a classifier loads its model when constructed
        if not isinstance(cls, type) or "__call__" not in vars(cls) or not hasattr(cls, "name"):
            raise ConfigError(f"{key}._target_={node._target_!r} is not a classifier class (texts -> toxic flags, "
                              "with a name), e.g. devec.toxicity.evaluate.ToxigenRoberta")
        spec = _plain(node)
        if spec.get("device") is not None:
            check_device(f"{key}.device", spec["device"])
        package = getattr(cls, "package", None)
        if package and importlib.util.find_spec(package) is None:
            raise ConfigError(f"{key}: {cls.__name__} needs the package: pip install {package} "
                              "(or drop it from data.classifiers)")
        key_env = spec.get("key_env", "PERSPECTIVE_API_KEY")
        if issubclass(cls, PerspectiveClassifier) and not os.environ.get(key_env):
            raise ConfigError(f"{key}: {cls.__name__} needs an API key in ${key_env} (or drop it from "
                              "data.classifiers)")


# ---------------------------------------------------------------- style mixing (Sec. 4.2)

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


def _toxicity(figure: str) -> Callable[[DictConfig], None]:
    return lambda cfg: _check_toxicity(cfg, figure)


CHECKS: dict[str, Callable[[DictConfig], None]] = {
    "devec.toy.recovery.run": lambda cfg: _check_toy(cfg, ToyRecovery),
    "devec.toy.alternative.run": lambda cfg: _check_toy(cfg, ToyAlternative),
    "devec.vectors.runner.run": _check_checkpoints,
    **{f"devec.vision.runner.{p}": (lambda cfg, p=p: _check_vision(cfg, p)) for p in VISION_MODES},
    "devec.toxicity.runner.table4": _toxicity("table4"),
    "devec.toxicity.runner.fig5_negation_coefficient": _toxicity("fig5"),
    "devec.toxicity.runner.fig6_tau": _toxicity("fig6"),
    "devec.toxicity.runner.train_toxic_dora": _toxicity("train_dora"),
    "devec.style.runner.run": _check_style,
}
"""The checks of each runner devec ships, by ``cfg.runner._target_``; any other runner gets the shared checks only."""
