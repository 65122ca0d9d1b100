"""Pools of whole-model task vectors, read one parameter at a time: the inputs of the decomposition driver.

A pool has ``names`` (parameter order), ``len()``, ``shape(name)``, ``vectors(name, members=None)`` (one task
vector per member, ``None`` where a member leaves the parameter untouched or was not asked for), ``labels``
(members, for messages) and ``fingerprint()`` (its content, for store keys). Every tensor is checked for NaN/Inf
when it is read; in-memory pools are checked whole when built (it costs one sum per tensor).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import torch

from devec.engine import LoRAFactors, TaskVector
from devec.engine.decompose import all_finite
from devec.vectors.checkpoint import Checkpoint, open_checkpoint
from devec.vectors.fingerprint import checkpoint_fingerprint, tensors_fingerprint

Source = str | os.PathLike | Mapping[str, torch.Tensor] | Checkpoint


class DeltaSource(Protocol):
    """A pool member streamed from files: one parameter's task vector at a time (e.g. a full or DoRA fine-tune)."""

    name: str

    def delta(self, param: str, w_pre: torch.Tensor) -> torch.Tensor | None:
        """``W_ft - W_pre`` of one parameter, or None when this member leaves it untouched."""

    def fingerprint(self) -> Any:
        """The member's content (:mod:`devec.vectors.fingerprint`), for store keys."""


class TaskVectorPool:
    """k task vectors ``W_ft - W_pre`` read lazily, one parameter at a time (eq. 1 per layer)."""

    def __init__(self, pretrained: Source, finetuned: Sequence[Source], dtype: torch.dtype = torch.float32) -> None:
        if len(finetuned) == 0:
            raise ValueError("the pool is empty: give at least two fine-tuned checkpoints (pool.finetuned)")
        self.pretrained = open_checkpoint(pretrained)
        self.finetuned = [open_checkpoint(f) for f in finetuned]
        self.dtype = dtype
        self.names = check_compatible(self.pretrained, self.finetuned)
        self.labels = [str(ft.source) for ft in self.finetuned]
        self._base = _LastTensor()

    def __len__(self) -> int:
        return len(self.finetuned)

    def shape(self, name: str) -> tuple[int, ...]:
        return self.pretrained.shape(name)

    def vectors(self, name: str, members: Sequence[int] | None = None) -> list[torch.Tensor | None]:
        """Each member's task vector for ``name`` (only ``members`` when given; None for the others)."""
        base = self._base.get(name, lambda: _finite(self.pretrained.get(name).to(self.dtype), self.pretrained.source,
                                                     name))
        return [_finite(ft.get(name).to(self.dtype) - base, ft.source, name) if _wanted(i, members) else None
                for i, ft in enumerate(self.finetuned)]

    def fingerprint(self) -> dict[str, Any]:
        """Content of every checkpoint (sampled, see :mod:`devec.vectors.fingerprint`) and the working dtype."""
        return {"pretrained": checkpoint_fingerprint(self.pretrained),
                "finetuned": [checkpoint_fingerprint(f) for f in self.finetuned], "dtype": str(self.dtype)}


class InMemoryPool:
    """A pool of task vectors already in memory: ``[{name: tensor or LoRAFactors}, ...]``, checked whole."""

    def __init__(self, task_vectors: Sequence[Mapping[str, TaskVector]]) -> None:
        if len(task_vectors) == 0:
            raise ValueError("the pool is empty: give at least two task vectors")
        self.task_vectors = [dict(tv) for tv in task_vectors]
        names = list(self.task_vectors[0])
        for i, tv in enumerate(self.task_vectors[1:], start=1):
            if set(tv) != set(names):
                missing, extra = sorted(set(names) - set(tv)), sorted(set(tv) - set(names))
                raise ValueError(f"task vector {i} has different parameters: missing {missing[:5]}, extra {extra[:5]}")
            for n in names:
                if tuple(tv[n].shape) != tuple(self.task_vectors[0][n].shape):
                    raise ValueError(f"task vector {i}: parameter {n!r} has shape {tuple(tv[n].shape)}, "
                                     f"task vector 0 has {tuple(self.task_vectors[0][n].shape)}")
        for i, tv in enumerate(self.task_vectors):  # before any decomposition: one sum per tensor
            for n, v in tv.items():
                for part in (v.B, v.A) if isinstance(v, LoRAFactors) else (v,):
                    _finite(part, f"task vector {i}", n, hint="")
        self.names = names
        self.labels = [f"task vector {i}" for i in range(len(self.task_vectors))]

    def __len__(self) -> int:
        return len(self.task_vectors)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.task_vectors[0][name].shape)

    def vectors(self, name: str, members: Sequence[int] | None = None) -> list[TaskVector | None]:
        """Each member's task vector for ``name`` (only ``members`` when given; None for the others)."""
        return [tv[name] if _wanted(i, members) else None for i, tv in enumerate(self.task_vectors)]

    def fingerprint(self) -> list[str]:
        """sha256 of every task vector's tensors."""
        return [tensors_fingerprint(tv) for tv in self.task_vectors]


class SourcePool:
    """A pre-trained checkpoint and members streamed from files (:class:`DeltaSource`), one parameter at a time.

    A member that leaves a parameter untouched (a LoRA/DoRA adapter outside its target modules, a tensor whose
    shape differs) gives ``None`` for it. The pre-trained tensor is read once per parameter and shared.
    """

    def __init__(self, pretrained: Source, sources: Sequence[DeltaSource]) -> None:
        if len(sources) == 0:
            raise ValueError("the pool is empty: give at least one task-vector source")
        self.pretrained = open_checkpoint(pretrained)
        self.sources = list(sources)
        self.names = self.pretrained.keys()
        self.labels = [s.name for s in self.sources]
        self._pre = _LastTensor()

    def __len__(self) -> int:
        return len(self.sources)

    def shape(self, name: str) -> tuple[int, ...]:
        return self.pretrained.shape(name)

    def vectors(self, name: str, members: Sequence[int] | None = None) -> list[torch.Tensor | None]:
        """Each member's task vector for ``name`` (only ``members`` when given), None where untouched."""
        w_pre = self._pre.get(name, lambda: _finite(self.pretrained.get(name), self.pretrained.source, name))
        out = []
        for i, s in enumerate(self.sources):
            d = s.delta(name, w_pre) if _wanted(i, members) else None
            out.append(None if d is None else _finite(d, s.name, name))
        return out

    def fingerprint(self) -> dict[str, Any]:
        """Content of the pre-trained checkpoint and of every source, in order."""
        return {"pretrained": checkpoint_fingerprint(self.pretrained),
                "sources": [s.fingerprint() for s in self.sources]}


def check_compatible(pretrained: Checkpoint, finetuned: Sequence[Checkpoint]) -> list[str]:
    """Same parameter names and shapes in every checkpoint, checked from metadata before any long work."""
    names = pretrained.keys()
    for ft in finetuned:
        missing, extra = sorted(set(names) - set(ft.keys())), sorted(set(ft.keys()) - set(names))
        if missing or extra:
            raise ValueError(f"{ft.source} does not match the pre-trained checkpoint {pretrained.source}: "
                             f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                             f"unexpected {extra[:5]}{'...' if len(extra) > 5 else ''}")
        for n in names:
            if ft.shape(n) != pretrained.shape(n):
                raise ValueError(f"{ft.source}: parameter {n!r} has shape {ft.shape(n)}, "
                                 f"the pre-trained checkpoint has {pretrained.shape(n)}")
    return names


def task_vectors(pretrained: Source, finetuned: Sequence[Source], dtype: torch.dtype = torch.float32
                 ) -> list[dict[str, torch.Tensor]]:
    """``[{name: W_ft - W_pre}]`` for each fine-tuned checkpoint, all in memory (small models)."""
    pool = TaskVectorPool(pretrained, finetuned, dtype=dtype)
    out: list[dict[str, torch.Tensor]] = [{} for _ in range(len(pool))]
    for name in pool.names:
        for tv, v in zip(out, pool.vectors(name), strict=False):
            tv[name] = v
    return out


class _LastTensor:
    """The last tensor read, by name: the pre-trained tensor is read once per parameter, not once per call."""

    def __init__(self) -> None:
        self._name: str | None = None
        self._tensor: torch.Tensor | None = None

    def get(self, name: str, read: Callable[[], torch.Tensor]) -> torch.Tensor:
        if self._name != name:
            self._name, self._tensor = None, None  # release the previous tensor before reading the next
            self._tensor, self._name = read(), name
        return self._tensor


def _wanted(i: int, members: Sequence[int] | None) -> bool:
    return members is None or i in members


STREAMED_HINT = (". Repair or replace that checkpoint and run again: the layers finished before this one are kept "
                 "(resume), and their SVDs are in the basis cache")


def _finite(t: torch.Tensor, where: str, name: str, hint: str = STREAMED_HINT) -> torch.Tensor:
    if not all_finite(t):
        raise ValueError(f"{where}: parameter {name!r} contains NaN or Inf{hint}")
    return t
