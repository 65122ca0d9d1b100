"""Image grids of Figs. 4, 10-17: rows are methods (each style alone, vanilla mix, unique mix), columns are seeds."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


def image_grid(rows: Sequence[tuple[str, torch.Tensor]], seeds: Sequence[int], title: str = "",
               cell_inches: float = 1.3):
    """A matplotlib figure: one labelled row per (label, n x 3 x H x W images in [0, 1]), one column per seed."""
    n_rows, n_cols = len(rows), len(seeds)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(cell_inches * n_cols + 1.6, cell_inches * n_rows + 0.4),
                             squeeze=False)
    for r, (label, images) in enumerate(rows):
        if len(images) != n_cols:
            raise ValueError(f"row {label!r} has {len(images)} images for {n_cols} seeds")
        for c in range(n_cols):
            ax = axes[r][c]
            ax.imshow(images[c].float().clamp(0, 1).permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"seed {seeds[c]}", fontsize=8)
            if c == 0:
                ax.set_ylabel(label, fontsize=8, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
