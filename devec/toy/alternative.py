"""Appendix 6, Fig. 7: the shared subspace of Prop. 3.1 (eigenvectors of P_1 P_2) vs Theorem 6.1 (principal vectors)."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from devec.cache import BasisCache  # noqa: E402
from devec.engine import column_basis, decompose, principal_angles, principal_vector_basis  # noqa: E402
from devec.runtime import Run  # noqa: E402
from devec.toy.data import planted_pool  # noqa: E402


def run(cfg: DictConfig, run: Run) -> dict:
    """Over ``toy.runs`` random pools, the largest and mean principal angle between the two shared bases (on
    ``cfg.device``)."""
    toy, dec = cfg.toy, cfg.decomposition
    device = torch.device(str(cfg.get("device", "cpu")))
    gen = torch.Generator().manual_seed(int(cfg.seed))  # drawn on the CPU: the same pools on every device
    basis_fn = BasisCache(run.cache_dir / "bases").column_basis if dec.get("cache", True) else column_basis
    rows = []
    for i in run.progress(range(int(toy.runs)), desc="runs"):
        vectors, _ = planted_pool(toy.n, toy.m, toy.shared, toy.unique, k=2, sigma=toy.sigma, generator=gen)
        vectors = [v.to(device) for v in vectors]
        bases = [basis_fn(v, dec.rank, svd=dec.svd) for v in vectors]
        prop = decompose(vectors, tau=dec.tau, rank=dec.rank, method=dec.method, bases=bases).basis
        theorem = principal_vector_basis(bases[0].U, bases[1].U, dec.tau, side=toy.side)
        angles = principal_angles(prop, theorem) if prop.shape[1] and theorem.shape[1] else torch.zeros(1)
        rows.append({"run": i, "max_angle_deg": math.degrees(float(angles.max())),
                     "mean_angle_deg": math.degrees(float(angles.mean())),
                     "dim_prop31": prop.shape[1], "dim_thm61": theorem.shape[1]})
    maxima = [r["max_angle_deg"] for r in rows]
    means = [r["mean_angle_deg"] for r in rows]
    summary = {"runs": len(rows), "side": toy.side, "sigma": float(toy.sigma),
               "mean_of_max_angle_deg": sum(maxima) / len(maxima), "max_angle_deg": max(maxima),
               "mean_angle_deg": sum(means) / len(means), "paper_bound_deg": 6.0,
               "same_dimension": all(r["dim_prop31"] == r["dim_thm61"] for r in rows)}
    run.log({k: v for k, v in summary.items() if isinstance(v, float)})
    run.save_table("fig7_alternative", rows, title="Fig. 7 (Appendix 6): Prop. 3.1 vs Theorem 6.1, per run")
    run.save_table("fig7_summary", [summary], title="Fig. 7 summary")
    run.save_figure("fig7_alternative", _plot(rows, summary))
    return summary


def _plot(rows: list[dict], summary: dict):
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.hist([r["max_angle_deg"] for r in rows], bins=20, alpha=0.7, label="largest principal angle")
    ax.hist([r["mean_angle_deg"] for r in rows], bins=20, alpha=0.7, label="mean principal angle")
    ax.axvline(summary["paper_bound_deg"], color="tab:red", ls="--", lw=0.8, label="6 deg (paper)")
    ax.set(xlabel="angle between shared subspaces (deg)", ylabel="runs",
           title=f"Prop. 3.1 vs Thm. 6.1 ({summary['side']} principal vectors), sigma={summary['sigma']:g}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
