"""Zero-shot classification heads from class names and templates (CLIP; Ilharco et al.'s frozen heads)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from devec import store


@torch.no_grad()
def zeroshot_head(model: nn.Module, tokenize: Any, classnames: Sequence[str], templates: Sequence[str]
                  ) -> torch.Tensor:
    """(embed_dim, C): per class the normalized mean of its normalized template embeddings, times the logit scale."""
    model.eval()
    columns = []
    for name in classnames:
        emb = F.normalize(model.encode_text(tokenize([t.format(c=name) for t in templates])), dim=-1)
        columns.append(F.normalize(emb.mean(0), dim=-1))
    return model.logit_scale.exp() * torch.stack(columns, dim=1)


def cached_head(model: nn.Module, tokenize: Any, classnames: Sequence[str], templates: Sequence[str],
                model_key: str, cache_dir: Path) -> torch.Tensor:
    """:func:`zeroshot_head`, cached under ``cache_dir/vision/heads`` by model, class names, templates and code."""
    key = store.config_key({"model": model_key, "classnames": list(classnames), "templates": list(templates),
                      "code": store.code_version("devec.vision.heads")})
    path = Path(cache_dir) / "vision" / "heads" / f"{key}.safetensors"
    found = store.load_entry(path, {"key": key})
    if found is not None and "head" in found[0]:
        return found[0]["head"]
    head = zeroshot_head(model, tokenize, classnames, templates)
    store.save_entry(path, {"head": head}, {"key": key})
    return head
