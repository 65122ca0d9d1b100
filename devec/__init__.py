"""devec: Decomposing Task Vectors for Refined Model Editing (arXiv 2512.22511), reference implementation."""

from devec.engine import (
    ColumnBasis,
    Decomposition,
    LoRAFactors,
    RankRule,
    column_basis,
    decompose,
    iterative,
    joint,
    pairwise,
    parse_rank,
    principal_angles,
    principal_vector_basis,
)

__version__ = "0.1.0"

__all__ = [
    "ColumnBasis", "Decomposition", "LoRAFactors", "RankRule", "column_basis", "decompose", "iterative",
    "joint", "pairwise", "parse_rank", "principal_angles", "principal_vector_basis",
]
