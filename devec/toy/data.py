"""Task vectors with a known shared subspace: W_i = Q_s C_i + Q_i D_i + noise (Appendix 7)."""

from __future__ import annotations

import torch


def planted_pool(n: int, m: int, shared: int, unique: int, k: int = 2, sigma: float = 0.0,
                 generator: torch.Generator | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
    """k n x m task vectors sharing ``shared`` column directions, each with ``unique`` own directions.

    Coefficients and noise have entries N(0, 1/m) and N(0, sigma^2/m): every planted direction has
    singular value about 1, and sigma is the noise level relative to it. Returns the vectors and the
    true shared basis (n x shared, orthonormal).
    """
    if shared + k * unique > n:
        raise ValueError(f"toy.n={n} is too small for {shared} shared + {k} x {unique} unique directions")
    q, _ = torch.linalg.qr(torch.randn(n, shared + k * unique, generator=generator, dtype=torch.float64))
    q_shared = q[:, :shared]
    scale = m ** -0.5
    vectors = []
    for i in range(k):
        q_own = q[:, shared + i * unique: shared + (i + 1) * unique]
        c = torch.randn(shared, m, generator=generator, dtype=torch.float64) * scale
        d = torch.randn(unique, m, generator=generator, dtype=torch.float64) * scale
        noise = torch.randn(n, m, generator=generator, dtype=torch.float64) * (sigma * scale)
        vectors.append(q_shared @ c + q_own @ d + noise)
    return vectors, q_shared
