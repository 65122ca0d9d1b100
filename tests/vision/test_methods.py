"""Merging methods and AdaMerging's functional merge, on small tensors and the tiny CLIP image encoder."""

from __future__ import annotations

import torch

from devec.vision.adamerging import MergedParams, adamerge, entropy
from devec.vision.methods import combine, sum_vectors, ties_vectors
from tests.vision.conftest import tiny_merge_setup


def _vectors(k: int = 3, seed: int = 0) -> tuple[dict, list[dict]]:
    gen = torch.Generator().manual_seed(seed)
    pre = {"w": torch.randn(6, 5, generator=gen), "b": torch.randn(6, generator=gen)}
    return pre, [{n: torch.randn(v.shape, generator=gen) for n, v in pre.items()} for _ in range(k)]


def test_combine_is_task_arithmetic():
    pre, vecs = _vectors()
    out = combine(pre, vecs, [0.3, 0.0, -1.0])
    torch.testing.assert_close(out["w"], pre["w"] + 0.3 * vecs[0]["w"] - vecs[2]["w"])
    torch.testing.assert_close(sum_vectors(vecs)["b"], vecs[0]["b"] + vecs[1]["b"] + vecs[2]["b"])
    assert out["w"] is not pre["w"] and not torch.equal(out["w"], pre["w"])


def test_ties_keeps_top_k_entries_that_agree_with_the_elected_sign():
    _, vecs = _vectors(k=4, seed=1)
    out = ties_vectors(vecs, k=0.3)
    stacked = torch.stack([v["w"] for v in vecs])
    kept = torch.stack([v["w"] for v in out])
    # the trim is over each vector flattened across the model (w: 30 entries, b: 6), keeping int(0.3 * 36) + 1
    # entries as [48]'s topk_values_mask does, before the sign election drops some
    assert all(sum(int((v[n] != 0).sum()) for n in v) <= int(0.3 * 36) + 1 for v in out)
    nonzero = kept != 0
    assert torch.equal(kept[nonzero], stacked[nonzero])  # kept entries are unchanged
    elected = torch.sign(kept.sum(0))
    assert (torch.sign(kept)[nonzero] == elected.expand_as(kept)[nonzero]).all()


def test_merged_params_equal_task_arithmetic_and_layerwise_coefficients_are_per_parameter():
    pre, vecs = _vectors()
    task = MergedParams(pre, vecs, [0.2, 0.5, 0.1], "task")()
    torch.testing.assert_close(task["w"], combine(pre, vecs, [0.2, 0.5, 0.1])["w"])
    layer = MergedParams(pre, vecs, [0.3] * 3, "layer")
    assert layer.coefficients.shape == (3, 2)
    with torch.no_grad():
        layer.coefficients[:, 1] = 0.0
    out = layer()
    torch.testing.assert_close(out["b"], pre["b"])
    torch.testing.assert_close(out["w"], combine(pre, vecs, [0.3] * 3)["w"])


def test_adamerging_functional_and_naive_paths_take_identical_steps_and_lower_entropy():
    model, pre, vecs, tasks, heads, _ = tiny_merge_setup()
    runs = {}
    for naive in (False, True):
        merged = MergedParams(pre, vecs, [0.3, 0.3], "layer")
        losses = adamerge(model.visual, heads, tasks, merged, steps=15, lr=0.05, batch_size=8, clamp=[0.0, 1.0],
                          naive=naive)
        runs[naive] = (losses, merged.coefficients.detach().clone())
    torch.testing.assert_close(runs[False][1], runs[True][1], atol=1e-5, rtol=0)
    losses, coefs = runs[False]
    assert losses[-1] < losses[0]
    assert coefs.min() >= 0.0 and coefs.max() <= 1.0 and not torch.allclose(coefs, torch.full_like(coefs, 0.3))
    assert all(not p.requires_grad for p in model.parameters())  # the model itself is never trained


def test_entropy_is_zero_for_certain_and_log_c_for_uniform_predictions():
    assert float(entropy(torch.tensor([[100.0, 0.0, 0.0]]))) < 1e-6
    torch.testing.assert_close(entropy(torch.zeros(2, 4)), torch.log(torch.tensor(4.0)))


def test_adamerging_reports_where_its_coefficients_ended():
    from devec.vision.methods import coefficient_summary

    lam = torch.tensor([[0.0, 0.3, 1.0, 0.5], [0.0, 0.0, 0.2, 0.6]])
    out = coefficient_summary(lam, [0.0, 1.0])
    assert out["task_coefficients_at_bounds"] == [0.375, 0.125]       # 3 of 8 at 0, 1 of 8 at 1
    assert out["task_coefficients_per_task"] == [0.45, 0.2]
    assert abs(out["task_coefficients_sd"] - float(lam.std())) < 1e-6
    assert "task_coefficients_at_bounds" not in coefficient_summary(lam, None)


def test_adamerging_method_info_carries_the_coefficient_summary():
    from devec.vision.methods import AdaMerging, MergeContext

    _, pre, vecs, tasks, _, pool = tiny_merge_setup()
    _, info = AdaMerging(steps=3, lr=0.05, batch_size=4, batches=1, clamp=[0.0, 1.0]).merge(
        MergeContext(pool, tasks, vecs))
    assert len(info["task_coefficients_per_task"]) == len(vecs)
    assert info["task_coefficients_sd"] > 0                            # layer-wise coefficients moved apart
    assert all(0.0 <= f <= 1.0 for f in info["task_coefficients_at_bounds"])
