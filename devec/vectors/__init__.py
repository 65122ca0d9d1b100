"""Task vectors from checkpoints: safe lazy loading, parameter policies, the one whole-model decomposition driver."""

from devec.vectors.checkpoint import Checkpoint, open_checkpoint
from devec.vectors.driver import (
    DecompositionSettings,
    LayerResult,
    ModelDecomposition,
    StoredDecomposition,
    StoredVectors,
    decompose_model,
    decompose_to_store,
    dense_state,
    iter_decompose,
    layer_group,
    store_for,
)
from devec.vectors.model import InMemoryPool, SourcePool, TaskVectorPool, task_vectors
from devec.vectors.policy import ParamPolicy

__all__ = [
    "Checkpoint", "DecompositionSettings", "InMemoryPool", "LayerResult", "ModelDecomposition", "ParamPolicy",
    "SourcePool", "StoredDecomposition", "StoredVectors", "TaskVectorPool", "decompose_model", "decompose_to_store",
    "dense_state", "iter_decompose", "layer_group", "open_checkpoint", "store_for", "task_vectors",
]
