"""The model pool of Sec. 4.3: pre-trained LLaMA, the toxic task vector and the other task vectors, by name."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devec import hub
from devec.runtime import built
from devec.toxicity.sources import DoRASource, FullSource, open_source

HUB_PATTERNS = ["*.safetensors", "*.json", "*.model", "tokenizer*"]


@dataclass
class ToxicityPool:
    """Base checkpoint, tokenizer, the toxic vector's source, the pool's sources and the named sub-pools (Fig. 5)."""

    base: str
    tokenizer: str
    toxic: FullSource | DoRASource
    members: dict[str, FullSource | DoRASource]
    subpools: dict[str, Any] = field(default_factory=dict)

    def subpool(self, name: str) -> list[FullSource | DoRASource]:
        """The pool vectors of sub-pool ``name``, in the order the iterative extraction visits them."""
        if name not in self.subpools:
            raise ValueError(f"sub-pool {name!r} is not defined: use one of {', '.join(self.subpools)} "
                           "(pool.subpools)")
        spec = self.subpools[name]
        if isinstance(spec, Mapping):
            rng = random.Random(int(spec.get("seed", 0)))
            names = rng.sample(sorted(self.members), int(spec["random"]))
        else:
            names = list(spec)
        unknown = [n for n in names if n not in self.members]
        if unknown:
            raise ValueError(f"sub-pool {name!r} names unknown pool models {unknown}: pool.members has "
                           f"{', '.join(self.members)}")
        return [self.members[n] for n in names]


@dataclass(kw_only=True)
class PoolSpec:
    """A toxicity pool config (``_target_``: :class:`EmbeddedPool` or :class:`HubPool`); the class is its schema."""

    toxic: str                          # the member whose unique component is negated (Figs. 5, 6)
    toxic_vectors: dict[str, str] = field(default_factory=dict)   # Table 4: prompt set -> its toxic member
    dtype: str = "float32"              # model dtype when evaluating edited models
    store_dtype: str = "float32"        # dtype of the cached T and T_unique
    threads: int | None = None          # torch threads (None: torch default)
    subpools: dict[str, Any] = field(default_factory=dict)   # Fig. 5's named sub-pools: member lists or {random, seed}
    recipe: dict[str, Any] | None = None                     # the toxic DoRA recipe (experiment=toxicity_train_dora)

    def member_names(self) -> list[str]:
        """Every member of the pool, the toxic one included."""
        raise NotImplementedError

    def vector_for(self, prompt_set: str) -> str:
        """The toxic member scored on ``prompt_set`` (Table 4: each vector on its own benchmark), else pool.toxic."""
        return str(self.toxic_vectors.get(prompt_set, self.toxic))

    def with_toxic(self, member: str) -> PoolSpec:
        """This pool with ``member`` as the toxic vector (Table 4 runs one per benchmark)."""
        import dataclasses

        return dataclasses.replace(self, toxic=member)

    def base_checkpoint(self, cache_dir: str | Path, progress: Any = None) -> str:
        """The pre-trained checkpoint (directory), built or downloaded."""
        raise NotImplementedError

    def load(self, cache_dir: str | Path, progress: Any = None) -> ToxicityPool:
        """The pool: base, tokenizer, the toxic member's source and those of the members the sub-pools use."""
        paths, base, tokenizer = self.sources(Path(cache_dir), progress)
        if self.toxic not in paths:
            raise ValueError(f"pool.toxic={self.toxic!r} is not one of pool.members ({', '.join(paths)})")
        sources = {n: open_source(p, k, name=n) for n, (p, k) in paths.items()}
        toxic = sources.pop(self.toxic)
        return ToxicityPool(base=base, tokenizer=tokenizer, toxic=toxic, members=sources, subpools=dict(self.subpools))

    def sources(self, cache_dir: Path, progress: Any) -> tuple[dict[str, tuple[str, str]], str, str]:
        """``({member: (path, kind)}, base, tokenizer)``."""
        raise NotImplementedError


@dataclass(kw_only=True)
class EmbeddedPool(PoolSpec):
    """The tiny LLaMA pool devec pre-trains on a generated world, with full and DoRA fine-tunes (cached by build)."""

    build: dict[str, Any]

    def member_names(self) -> list[str]:
        return [n for n, m in (self.build.get("members") or {}).items() if m is not None]

    def base_checkpoint(self, cache_dir: str | Path, progress: Any = None) -> str:
        return self.sources(Path(cache_dir), progress)[1]

    def sources(self, cache_dir: Path, progress: Any) -> tuple[dict[str, tuple[str, str]], str, str]:
        from devec.toxicity.tiny import build_embedded_pool

        built = build_embedded_pool(self.build, cache_dir, progress=progress)
        paths = {n: (m["path"], m["kind"]) for n, m in built["members"].items()}
        return paths, built["base"], built["tokenizer"]


MEMBER_KEYS = ("repo", "kind", "allow_bin", "revision", "label")
"""The settings of one entry of a hub pool's ``members``."""


@dataclass(kw_only=True)
class HubPool(PoolSpec):
    """Hub repositories or local directories: the base, its tokenizer and the members (full or DoRA fine-tunes)."""

    base: str
    tokenizer: str | None = None
    members: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, spec in self.members.items():
            for key in spec:
                if key not in MEMBER_KEYS:
                    raise ValueError(f"members.{name}.{key}: unknown key; known keys: {', '.join(MEMBER_KEYS)}")

    def member_names(self) -> list[str]:
        return list(self.members)

    def base_checkpoint(self, cache_dir: str | Path, progress: Any = None) -> str:
        return str(hub.resolve(self.base, HUB_PATTERNS, key="pool.base"))

    def sources(self, cache_dir: Path, progress: Any) -> tuple[dict[str, tuple[str, str]], str, str]:
        base = self.base_checkpoint(cache_dir)
        tokenizer = str(hub.resolve(self.tokenizer or self.base, HUB_PATTERNS, key="pool.tokenizer"))
        used = set(_used(self.members, self.toxic, self.subpools))
        paths = {}
        for name, m in self.members.items():
            if name != self.toxic and name not in used:
                continue
            repo = str(m["repo"])
            if name == self.toxic and not Path(repo).exists() and not hub.is_repo_id(repo):
                raise FileNotFoundError(f"the toxic adapter {repo} does not exist yet: train it with "
                                        f"`devec experiment=toxicity_train_dora scale=paper` (pool.recipe; it writes "
                                        f"<run folder>/adapters/<dataset>) and point pool.members.{name}.repo at it, "
                                        f"or at your own adapter or checkpoint")
            patterns = HUB_PATTERNS + (["*.bin"] if m.get("allow_bin") else [])
            paths[name] = (str(hub.resolve(repo, patterns, m.get("revision"), key=f"pool.members.{name}.repo")),
                           str(m.get("kind", "auto")))
        return paths, base, tokenizer


def pool_spec(cfg: Mapping[str, Any] | PoolSpec) -> PoolSpec:
    """The :class:`PoolSpec` the ``pool`` config names with ``_target_`` (as is when already built)."""
    return built(cfg, PoolSpec, "pool", "devec.toxicity.pool.EmbeddedPool or HubPool (conf/pool/toxicity/)")


def load_pool(cfg: Mapping[str, Any] | PoolSpec, cache_dir: str | Path, progress=None) -> ToxicityPool:
    """The pool ``cfg`` names with ``_target_`` (``pool`` config group): built (embedded) or resolved (hub)."""
    return pool_spec(cfg).load(cache_dir, progress)


def _used(members: Mapping[str, Any], toxic: str, subpools: Mapping[str, Any]) -> list[str]:
    """Pool members named by any sub-pool (only those are downloaded); random sub-pools use all."""
    names: list[str] = []
    for spec in subpools.values():
        if isinstance(spec, Mapping):
            return [n for n in members if n != toxic]
        names += list(spec)
    return names
