"""The DeVec decomposition engine: pure torch maths, no Hydra, no W&B, no domain."""

from devec.engine.angles import orthonormal_basis, principal_angles, principal_vector_basis
from devec.engine.basis import (
    ColumnBasis,
    LoRAFactors,
    TaskVector,
    as_task_vector,
    as_task_vectors,
    column_basis,
    frobenius_norm,
    pool_dtype,
)
from devec.engine.decompose import Decomposition, check_pool, decompose, merge_shared
from devec.engine.modes import MODES, iterative, joint, pairwise
from devec.engine.rank import RankRule, parse_rank
from devec.engine.subspace import SharedSubspace, check_tau, shared_subspace

__all__ = [
    "MODES", "ColumnBasis", "Decomposition", "LoRAFactors", "RankRule", "SharedSubspace", "TaskVector",
    "as_task_vector", "as_task_vectors", "check_pool", "check_tau", "column_basis", "decompose", "frobenius_norm",
    "iterative", "joint", "merge_shared", "orthonormal_basis", "pairwise", "parse_rank", "pool_dtype",
    "principal_angles", "principal_vector_basis", "shared_subspace",
]
