"""Rank rules: how many column-space directions of a task vector carry the task (METHOD.md fact 1)."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch

RANK_KINDS = ("full", "energy", "ratio", "fixed", "epsilon")


@dataclass(frozen=True)
class RankRule:
    """A rule that picks the kept rank r from a singular-value spectrum.

    ``full``: every nonzero direction; ``energy:e``: smallest r whose cumulative
    sigma^2 fraction reaches e; ``ratio:f``: ceil(f * min(n, m)); ``fixed:r``;
    ``epsilon:eps``: sigma_j > eps * sigma_1.
    """

    kind: str = "full"
    value: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in RANK_KINDS:
            raise ValueError(f"unknown rank rule {self.kind!r}; use one of {', '.join(RANK_KINDS)}")
        if self.kind == "full":
            return
        if isinstance(self.value, bool) or not isinstance(self.value, numbers.Real) or not math.isfinite(self.value):
            raise ValueError(f"rank rule {self.kind!r} needs a value, e.g. '{self.kind}:{_EXAMPLE[self.kind]}'")
        v = self.value
        ok = {
            "energy": 0 < v <= 1,
            "ratio": 0 < v <= 1,
            "fixed": v >= 1 and float(v).is_integer(),
            "epsilon": 0 <= v < 1,
        }[self.kind]
        if not ok:
            raise ValueError(f"rank rule '{self}' keeps nothing or is out of range: {_RANGE[self.kind]}")

    def __str__(self) -> str:
        if self.kind == "full":
            return "full"
        v = int(self.value) if self.kind == "fixed" else self.value
        return f"{self.kind}:{v}"

    @property
    def needs_full_spectrum(self) -> bool:
        """True when r depends on the whole spectrum (a randomized SVD cannot decide it)."""
        return self.kind in ("full", "energy", "epsilon")

    def target_rank(self, shape: tuple[int, int]) -> int | None:
        """The rank known from the shape alone (``fixed``, ``ratio``), else None."""
        limit = min(shape)
        if self.kind == "fixed":
            return min(int(self.value), limit)
        if self.kind == "ratio":
            return max(1, min(limit, math.ceil(self.value * limit)))
        return None

    def select(self, singular_values: torch.Tensor, shape: tuple[int, int], total_energy: float | None = None,
               rtol: float | None = None) -> int:
        """Kept rank for a descending spectrum; ``total_energy`` is ||W||_F^2 when the spectrum is partial.

        Directions below ``rtol * sigma_1`` are rounding noise, never kept; ``rtol`` defaults to
        ``max(n, m) * eps`` of float64 and should follow the input's precision (see :func:`zero_rtol`).
        """
        s = singular_values.double()
        rtol = zero_rtol(torch.float64, shape) if rtol is None else rtol
        nonzero = int((s > s[0] * rtol).sum()) if s.numel() and s[0] > 0 else 0
        if nonzero == 0:
            return 0
        if self.kind == "full":
            return nonzero
        if self.kind in ("fixed", "ratio"):
            return min(self.target_rank(shape), nonzero)
        if self.kind == "epsilon":
            return max(1, min(nonzero, int((s > self.value * s[0]).sum())))
        energy = s.square()
        total = float(energy.sum()) if total_energy is None else float(total_energy)
        fraction = torch.cumsum(energy, 0) / total
        reached = torch.nonzero(fraction >= self.value - 1e-12)
        r = int(reached[0]) + 1 if reached.numel() else s.numel()
        return min(r, nonzero)


STORAGE_NOISE = 4.0  # margin over the ~eps * sigma_1 that rounding to the input dtype adds (see zero_rtol)


def zero_rtol(dtype: torch.dtype, shape: tuple[int, ...]) -> float:
    """Relative singular-value threshold under which a direction is rounding noise.

    Two sources: the float64 factorisation itself (``max(n, m) * eps_64``, as ``matrix_rank``) and the rounding
    of the input to ``dtype``. Rounding each entry by up to eps/2 of itself adds a random-like perturbation whose
    largest singular value stays below about ``eps * sigma_1`` whatever the shape, so ``STORAGE_NOISE * eps``
    of the dtype clears it with a margin (``max(n, m) * eps`` would exceed 1 for bf16 at n = 4096 and call every
    direction noise).
    """
    eps64 = torch.finfo(torch.float64).eps
    eps = torch.finfo(dtype).eps if dtype.is_floating_point else eps64
    return max(max(shape) * eps64, STORAGE_NOISE * eps)


_EXAMPLE = {"energy": 0.9, "ratio": 0.25, "fixed": 64, "epsilon": "1e-3"}
_RANGE = {
    "energy": "energy:e needs 0 < e <= 1",
    "ratio": "ratio:f needs 0 < f <= 1",
    "fixed": "fixed:r needs an integer r >= 1",
    "epsilon": "epsilon:eps needs 0 <= eps < 1",
}


def parse_rank(rule: str | int | RankRule | None) -> RankRule:
    """Parse the command-line form: 'full', 'energy:0.9', 'ratio:0.25', 'fixed:64', 'epsilon:1e-3', or an int."""
    if rule is None:
        return RankRule("full")
    if isinstance(rule, RankRule):
        return rule
    if isinstance(rule, bool):
        raise ValueError(f"rank rule must be a string such as 'energy:0.9', got {rule!r}")
    if isinstance(rule, numbers.Integral):  # Python and numpy integers: a fixed rank
        return RankRule("fixed", float(rule))
    if isinstance(rule, numbers.Real):
        raise ValueError(f"rank rule {rule!r} is a number without a kind: write e.g. 'energy:0.9', 'ratio:0.25' "
                         "or 'fixed:64'")
    text = str(rule).strip().lower()
    kind, _, value = text.partition(":")
    if kind == "full":
        if value:
            raise ValueError(f"rank rule 'full' takes no value, got {rule!r}")
        return RankRule("full")
    if kind not in RANK_KINDS:
        raise ValueError(f"unknown rank rule {rule!r}; use one of full, energy:0.9, ratio:0.25, fixed:64, epsilon:1e-3")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"rank rule {rule!r} needs a number after ':', e.g. '{kind}:{_EXAMPLE[kind]}'") from None
    return RankRule(kind, number)
