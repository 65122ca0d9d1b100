"""The model pool of Sec. 4.3: pre-trained LLaMA, the toxic task vector and the other task vectors, by name."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devec import hub
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


def load_pool(cfg: Mapping[str, Any], cache_dir: str | Path, progress=None) -> ToxicityPool:
    """The pool of ``cfg`` (``pool`` config group): ``embedded`` builds the tiny LLaMA pool, ``hub`` resolves repos."""
    kind = cfg.get("kind", "hub")
    if kind == "embedded":
        from devec.toxicity.tiny import build_embedded_pool

        built = build_embedded_pool(cfg["build"], Path(cache_dir), progress=progress)
        paths = {n: (m["path"], m["kind"]) for n, m in built["members"].items()}
        base, tokenizer = built["base"], built["tokenizer"]
    elif kind == "hub":
        base = str(hub.resolve(cfg["base"], HUB_PATTERNS, key="pool.base"))
        tokenizer = str(hub.resolve(cfg.get("tokenizer") or cfg["base"], HUB_PATTERNS, key="pool.tokenizer"))
        paths = {}
        for name, m in cfg["members"].items():
            if name != cfg["toxic"] and name not in set(_used(cfg)):
                continue
            kind_m = str(m.get("kind", "auto"))
            if name == cfg["toxic"] and not Path(str(m["repo"])).exists() and not hub.is_repo_id(str(m["repo"])):
                raise FileNotFoundError(f"the toxic adapter {m['repo']} does not exist yet: train it with "
                                        f"`devec experiment=toxicity_train_dora scale=paper` (pool.recipe; it writes "
                                        f"<run folder>/adapters/<dataset>) and point pool.members.{name}.repo at it, "
                                        f"or at your own adapter or checkpoint")
            patterns = HUB_PATTERNS + (["*.bin"] if m.get("allow_bin") else [])
            paths[name] = (str(hub.resolve(m["repo"], patterns, m.get("revision"), key=f"pool.members.{name}.repo")),
                           kind_m)
    else:
        raise ValueError(f"pool.kind={kind!r}: use embedded or hub")
    toxic_name = str(cfg["toxic"])
    if toxic_name not in paths:
        raise ValueError(f"pool.toxic={toxic_name!r} is not one of pool.members ({', '.join(paths)})")
    sources = {n: open_source(p, k, name=n) for n, (p, k) in paths.items()}
    toxic = sources.pop(toxic_name)
    return ToxicityPool(base=base, tokenizer=tokenizer, toxic=toxic, members=sources,
                        subpools=dict(cfg.get("subpools") or {}))


def _used(cfg: Mapping[str, Any]) -> list[str]:
    """Pool members named by any sub-pool (only those are downloaded); random sub-pools use all."""
    names: list[str] = []
    for spec in (cfg.get("subpools") or {}).values():
        if isinstance(spec, Mapping):
            return [n for n in cfg["members"] if n != cfg["toxic"]]
        names += list(spec)
    return names
