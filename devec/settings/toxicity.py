"""The checks of the toxicity experiments (Sec. 4.3): pool members, sub-pools, the method and the benchmark."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Mapping, Sequence

from omegaconf import DictConfig

from devec.settings.core import (
    ConfigError,
    _at_least,
    _plain,
    check_decomposition,
    check_device,
    instantiated,
    names_in,
    signature_checked,
)


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
        mixed = (pool.recipe or {}).get("mixed_precision")
        if mixed not in (None, "none", "no", "fp16", "bf16"):
            raise ConfigError(f"pool.recipe.mixed_precision={mixed!r}: use fp16 (App. 12), bf16 or none")
        if mixed == "fp16" and not str(cfg.get("device")).startswith("cuda"):
            raise ConfigError(f"pool.recipe.mixed_precision=fp16 needs device=cuda (got device={cfg.get('device')!r});"
                              " set pool.recipe.mixed_precision=none to train on the CPU")
        return
    check_decomposition(cfg, "iterative", "toxicity removal extracts the toxic vector's unique part iteratively "
                        "(Sec. 4.3), so it", tau_swept="method.taus" if figure == "fig6" else "")
    members = pool.member_names()
    names_in("pool.toxic", [pool.toxic], members, "pool.members")
    names_in("pool.toxic_vectors", list(pool.toxic_vectors.values()), members, "pool.members")
    names_in("pool.toxic_vectors (prompt sets)", list(pool.toxic_vectors), list(cfg.data.get("prompts") or {}),
             "data.prompts")
    subpools = list(method.subpools) if figure == "fig5" else [method.subpool]
    if not subpools:
        raise ConfigError("method.subpools=[]: name at least one of pool.subpools")
    others = [m for m in members if m != pool.toxic]
    key = "method.subpools" if figure == "fig5" else "method.subpool"
    used = {pool.toxic: "pool.toxic"}
    if figure == "table4":
        used.update({m: f"pool.toxic_vectors.{s}" for s, m in pool.toxic_vectors.items() if m not in used})
    for s in subpools:
        used.update({n: f"sub-pool {s}" for n in _subpool_members(cfg, key, s, others) if n not in used})
    if isinstance(pool, HubPool):
        for name, user in used.items():
            repo = str(pool.members[name].get("repo"))
            if repo.startswith("SET-ME"):
                raise ConfigError(f"pool.members.{name}.repo={repo!r}: set it to the checkpoint's hub repository "
                                  f"or a local directory ({user} uses it)")
    if figure in ("fig5", "fig6") and not method.coefficients:
        raise ConfigError("method.coefficients=[]: give the lambdas to sweep, e.g. method.coefficients=[0,1,2]")
    if figure == "fig6":
        bad = [t for t in method.taus if not 0.0 < t <= 1.0]
        if not method.taus or bad:
            raise ConfigError(f"method.taus={list(method.taus)}: give one or more taus, each in (0, 1]")
    _check_bench(cfg, control_key={"fig5": "sweep_control", "fig6": "tau_sweep_control"}.get(figure))
    if figure == "table4" and method.coefficient == "select":
        names_in("data.sweep_control", cfg.data.get("sweep_control") or [], [str(t.get("name")) for t in
                 cfg.data.control.get("tasks") or []], "data.control.tasks (names)")
        if not cfg.data.get("sweep_control"):
            raise ConfigError("data.sweep_control=[]: method.coefficient=select needs the control tasks its rule "
                              "keeps within method.max_control_drop")


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


def _check_bench(cfg: DictConfig, control_key: str | None) -> None:
    from devec.toxicity.evaluate import EvaluationData

    instantiated("data", cfg.get("data"), EvaluationData)  # _recursive_: false, the classifiers stay configs
    data = cfg.data
    ids = [str(t.get("name")) for t in (data.control.get("tasks") or [])]
    if control_key:
        names_in(f"data.{control_key}", data.get(control_key) or [], ids, "data.control.tasks (names)")
    for i, task in enumerate(data.control.get("tasks") or []):
        if task.get("limit") is not None:
            _at_least(f"data.control.tasks[{i}].limit", task.limit, 1)
    _check_generation("data.generation", data.get("generation") or {})
    for i, node in enumerate(data.get("classifiers") or []):
        _check_classifier(f"data.classifiers[{i}]", node)
    for name, spec in (data.get("prompts") or {}).items():
        if spec.get("generation") is not None:
            _check_generation(f"data.prompts.{name}.generation", spec.generation)
        for i, node in enumerate(spec.get("classifiers") or []):
            _check_classifier(f"data.prompts.{name}.classifiers[{i}]", node)
        if spec.get("source") == "toxigen_files":
            if not spec.get("groups"):
                raise ConfigError(f"data.prompts.{name}.groups: name ToxiGen's groups (hate_<group>_1k.txt)")
            _at_least(f"data.prompts.{name}.per_group", spec.get("per_group"), 1)
        elif spec.get("n") is not None:
            _at_least(f"data.prompts.{name}.n", spec.n, 1)


def _check_generation(key: str, gen: Mapping) -> None:
    """Generation settings: a positive token limit, a positive batch size."""
    import inspect

    from devec.toxicity.evaluate import generate

    known = set(inspect.signature(generate).parameters) - {"model", "tok", "prompts", "seed"}
    names_in(key, list(gen), sorted(known), "generate() of devec.toxicity.evaluate")
    if "max_new_tokens" in gen:
        _at_least(f"{key}.max_new_tokens", gen["max_new_tokens"], 1)
    if "batch_size" in gen:
        _at_least(f"{key}.batch_size", gen["batch_size"], 1)


def _check_classifier(key: str, node: DictConfig) -> None:
    """A classifier config: a class that flags texts, its packages installed, its API key or a fallback."""
    from devec.toxicity.evaluate import PerspectiveClassifier

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
        if spec.get("fallback") is None:
            raise ConfigError(f"{key}: {cls.__name__} needs an API key in ${key_env} (or a fallback classifier, "
                              "or drop it from data.classifiers)")
        _check_classifier(f"{key}.fallback", node.fallback)


def _toxicity(figure: str) -> Callable[[DictConfig], None]:
    return lambda cfg: _check_toxicity(cfg, figure)


CHECKS: dict[str, Callable[[DictConfig], None]] = {
    "devec.toxicity.runner.table4": _toxicity("table4"),
    "devec.toxicity.runner.fig5_negation_coefficient": _toxicity("fig5"),
    "devec.toxicity.runner.fig6_tau": _toxicity("fig6"),
    "devec.toxicity.runner.train_toxic_dora": _toxicity("train_dora"),
}
"""The checks of the toxicity runners, by ``cfg.runner._target_``."""
