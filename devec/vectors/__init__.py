"""Task vectors from checkpoints: safe lazy loading, parameter policies, whole-model decomposition."""

from devec.vectors.checkpoint import Checkpoint, open_checkpoint
from devec.vectors.model import (
    InMemoryPool,
    LayerResult,
    ModelDecomposition,
    TaskVectorPool,
    decompose_model,
    decomposition_kwargs,
    iter_decompose,
    task_vectors,
)
from devec.vectors.policy import ParamPolicy

__all__ = [
    "Checkpoint", "InMemoryPool", "LayerResult", "ModelDecomposition", "ParamPolicy", "TaskVectorPool",
    "decompose_model", "decomposition_kwargs", "iter_decompose", "open_checkpoint", "task_vectors",
]
