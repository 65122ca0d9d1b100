"""Which parameters DeVec decomposes, and what happens to the rest (METHOD.md: 1-D tensors and embeddings)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

ACTIONS = ("decompose", "pass_through", "average", "exclude")
NON_MATRIX_ACTIONS = ("pass_through", "average", "exclude")
EMBEDDING_PATTERNS = (r"embed", r"\bwte\b", r"\bwpe\b", r"lm_head", r"positional_embedding", r"class_embedding")


@dataclass(frozen=True)
class ParamPolicy:
    """Per-parameter policy: matrices are decomposed; 1-D tensors and embeddings follow ``vectors``/``embeddings``.

    ``pass_through``: kept whole and treated as unique; ``average``: the pool mean is the shared part;
    ``exclude``: left out of every component (the parameter is not edited). ``include``/``exclude`` are
    regexes on parameter names: when ``include`` is set only matching matrices are decomposed; matrices
    outside it, or matching ``exclude``, are passed through.
    """

    vectors: str = "pass_through"
    embeddings: str = "pass_through"
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    embedding_patterns: tuple[str, ...] = EMBEDDING_PATTERNS
    _compiled: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        for key in ("vectors", "embeddings"):
            value = getattr(self, key)
            if value not in NON_MATRIX_ACTIONS:
                raise ValueError(f"decomposition.policy.{key}={value!r}: use one of {', '.join(NON_MATRIX_ACTIONS)}")
        for key in ("include", "exclude", "embedding_patterns"):
            patterns = tuple(getattr(self, key))
            object.__setattr__(self, key, patterns)
            try:
                self._compiled[key] = [re.compile(p) for p in patterns]
            except re.error as err:
                raise ValueError(f"decomposition.policy.{key}: bad regex ({err})") from None

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> ParamPolicy:
        cfg = dict(cfg or {})
        unknown = set(cfg) - {"vectors", "embeddings", "include", "exclude", "embedding_patterns"}
        if unknown:
            raise ValueError(f"decomposition.policy: unknown keys {sorted(unknown)}")
        as_tuple = lambda v: tuple(v) if isinstance(v, Sequence) and not isinstance(v, str) else v
        return cls(**{k: as_tuple(v) for k, v in cfg.items()})

    def action(self, name: str, shape: Sequence[int]) -> str:
        """What to do with parameter ``name`` of this shape: one of ACTIONS."""
        if len(shape) <= 1:
            return self.vectors
        if self._matches("embedding_patterns", name):
            return self.embeddings
        if self._matches("exclude", name):
            return "pass_through"
        if self.include and not self._matches("include", name):
            return "pass_through"
        return "decompose"

    def _matches(self, key: str, name: str) -> bool:
        return any(p.search(name) for p in self._compiled[key])
