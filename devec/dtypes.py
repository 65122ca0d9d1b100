"""Torch dtypes by the names configs use, with one clear error for a name that is not one of them."""

from __future__ import annotations

from collections.abc import Iterable

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}
MODEL_DTYPES = ("float32", "bfloat16", "float16")  # what models are loaded or trained in


def torch_dtype(name: str, key: str = "dtype", allowed: Iterable[str] = MODEL_DTYPES) -> torch.dtype:
    """The dtype called ``name``; ``key`` names the config setting in the error."""
    allowed = tuple(allowed)
    if name not in allowed:
        raise ValueError(f"{key}={name!r}: use one of {', '.join(allowed)}")
    return DTYPES[name]
