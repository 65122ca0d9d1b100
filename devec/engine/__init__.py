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
from devec.engine.chance import CHANCE_METHOD, chance_pair_dim, chance_shared_dim, random_bases
from devec.engine.decompose import Decomposition, check_pool, decompose, merge_shared
from devec.engine.modes import MODES, iterative, joint, pairwise
from devec.engine.rank import RankRule, parse_rank
from devec.engine.subspace import SharedSubspace, check_tau, shared_subspace

__all__ = [
    "CHANCE_METHOD", "MODES", "ColumnBasis", "Decomposition", "LoRAFactors", "RankRule", "SharedSubspace",
    "TaskVector", "as_task_vector", "as_task_vectors", "chance_pair_dim", "chance_shared_dim", "check_pool",
    "check_tau", "column_basis", "decompose", "frobenius_norm", "iterative", "joint", "merge_shared",
    "orthonormal_basis", "pairwise", "parse_rank", "pool_dtype", "principal_angles", "principal_vector_basis",
    "random_bases", "shared_subspace",
]
