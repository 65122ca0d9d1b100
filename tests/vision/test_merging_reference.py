"""Table 1's baselines against direct transcriptions of their formulas on tiny tensors and the tiny CLIP encoder:
TIES as [48]'s code (global top-k), Fisher merging, RegMean, AdaMerging's batches, and Task Arithmetic + DeVec's
learned coefficients (issue 12 items 2-4)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from devec.vision.adamerging import MergedParams, adamerge, entropy
from devec.vision.data import ImageSet
from devec.vision.fisher import fisher_diagonal, fisher_merge
from devec.vision.methods import (
    FisherMerging,
    MergeContext,
    RegMean,
    SupervisedCoefficients,
    Ties,
    ties_merge,
    ties_vectors,
)
from devec.vision.regmean import attention_values, gram_matrices, regmean_merge
from tests.reliability.test_settings import composed, tripwires  # noqa: F401 (a fixture)
from tests.vision.conftest import tiny_merge_setup

# ---------------------------------------------------------------- TIES as [48]'s ties_merging_utils

def _reference_ties(vectors: list[dict], k: float, merge: str) -> tuple[torch.Tensor, torch.Tensor]:
    """[48]'s topk_values_mask / resolve_sign / disjoint_merge, transcribed with loops over the flat model."""
    names = sorted(vectors[0])
    flat = torch.stack([torch.cat([v[n].reshape(-1) for n in names]) for v in vectors])
    n, d = flat.shape
    trimmed = torch.zeros_like(flat)
    for i in range(n):
        kth = sorted(flat[i].abs().tolist())[d - int(d * k) - 1]
        for j in range(d):
            if abs(flat[i, j]) >= kth:
                trimmed[i, j] = flat[i, j]
    sign = torch.sign(trimmed.sum(0))
    majority = torch.sign(sign.sum())
    sign = torch.where(sign == 0, majority, sign)
    selected = torch.zeros_like(trimmed)
    for i in range(n):
        for j in range(d):
            if (sign[j] > 0 and trimmed[i, j] > 0) or (sign[j] < 0 and trimmed[i, j] < 0):
                selected[i, j] = trimmed[i, j]
    merged = selected.sum(0)
    if merge == "mean":
        merged = merged / (selected != 0).sum(0).clamp(min=1)
    return selected, merged


def _scaled_vectors(k: int = 3) -> list[dict[str, torch.Tensor]]:
    """Layers of very different scales: a per-tensor trim keeps 20 % of each, the global one almost none of 'small'."""
    gen = torch.Generator().manual_seed(3)
    return [{"big": 100.0 * torch.randn(10, 6, generator=gen), "small": 0.01 * torch.randn(25, generator=gen),
             "mid": torch.randn(4, 5, generator=gen)} for _ in range(k)]


@pytest.mark.parametrize("merge", ["sum", "mean"])
def test_ties_trims_each_vector_over_the_whole_model_as_the_reference_code(merge):
    vectors = _scaled_vectors()
    selected, merged = _reference_ties(vectors, 0.2, merge)
    names = sorted(vectors[0])
    ours = ties_vectors(vectors, 0.2)
    flat = torch.stack([torch.cat([v[n].reshape(-1) for n in names]) for v in ours])
    torch.testing.assert_close(flat, selected, rtol=0, atol=0)
    out = ties_merge(vectors, 0.2, merge)
    torch.testing.assert_close(torch.cat([out[n].reshape(-1) for n in names]), merged, rtol=1e-6, atol=1e-6)
    # the trimmed set is global: the tiny-scale layer loses every entry, the big one keeps more than 20 %
    assert all(int((v["small"] != 0).sum()) == 0 for v in ours)
    assert all(int((v["big"] != 0).sum()) > 0.2 * 60 for v in ours)


def test_ties_zero_signs_take_the_majority_sign_and_the_paper_preset_is_dis_sum_at_0_3():
    # entry 0: +1 and -1 cancel (zero sum) -> the majority sign (+, from entries 1-3) keeps the +1
    vectors = [{"w": torch.tensor([1.0, 2.0, 3.0, 4.0])}, {"w": torch.tensor([-1.0, 2.0, 3.0, 4.0])}]
    out = ties_merge(vectors, 1.0, "sum")
    assert out["w"].tolist() == [1.0, 4.0, 6.0, 8.0]
    preset = Ties()
    assert (preset.k, preset.merge_func, preset.coefficient) == (0.2, "sum", 0.3)


# ---------------------------------------------------------------- Fisher merging

def _model_logits(model, params, head, x):
    with torch.nn.utils.stateless._reparametrize_module(model.visual, params):
        return F.normalize(model.visual(x), dim=-1) @ head


def test_fisher_exact_estimator_is_the_definition_and_batch_is_fusionbench_estimate():
    model, pre, _, tasks, heads, _ = tiny_merge_setup()
    data = tasks["t0"].train.head(4)
    params = {k: v.clone().requires_grad_(True) for k, v in pre.items()}
    exact = {k: torch.zeros_like(v) for k, v in pre.items()}
    batch = {k: torch.zeros_like(v) for k, v in pre.items()}
    x, _ = data.batch(torch.arange(4))
    for n in range(4):  # the definition: sum_y p(y|x) (d log p(y|x))^2, averaged over examples
        logp = _model_logits(model, params, heads["t0"], x[n:n + 1]).log_softmax(-1)[0]
        for y in range(3):
            grads = torch.autograd.grad(logp[y], list(params.values()), retain_graph=True)
            for (k, _), g in zip(params.items(), grads, strict=True):
                exact[k] += logp[y].exp().detach() * g ** 2 / 4
    for start in (0, 2):  # FusionBench: (d sum_n sum_y sqrt(p) log p)^2 per batch of 2, over the examples
        logp = _model_logits(model, params, heads["t0"], x[start:start + 2]).log_softmax(-1)
        grads = torch.autograd.grad((logp.detach().exp().sqrt() * logp).sum(), list(params.values()))
        for (k, _), g in zip(params.items(), grads, strict=True):
            batch[k] += g ** 2 / 4
    ordered = ImageSet(data.images, data.labels)
    ours = fisher_diagonal(model.visual, pre, heads["t0"], ordered, 4, 1, "exact")
    for k in pre:
        torch.testing.assert_close(ours[k], exact[k], rtol=1e-4, atol=1e-9)
    # the batch estimate is order-dependent: feed the batches in order (shuffle with one batch of all examples)
    ours_batch = {k: torch.zeros_like(v) for k, v in pre.items()}
    for start in (0, 2):
        part = fisher_diagonal(model.visual, pre, heads["t0"], data.subset(torch.arange(start, start + 2)), 2, 2)
        for k in pre:
            ours_batch[k] += part[k] / 2
    for k in pre:
        torch.testing.assert_close(ours_batch[k], batch[k], rtol=1e-4, atol=1e-9)


def test_fisher_merge_is_the_fisher_weighted_average_of_the_fine_tuned_models():
    gen = torch.Generator().manual_seed(0)
    vecs = [{"w": torch.randn(5, generator=gen)} for _ in range(3)]
    fishers = [{"w": torch.rand(5, generator=gen)} for _ in range(3)]
    plain = fisher_merge(vecs, fishers, normalize=False, minimal=0.0)
    expected = sum(f["w"] * v["w"] for f, v in zip(fishers, vecs, strict=True)) / sum(f["w"] for f in fishers)
    torch.testing.assert_close(plain["w"], expected)
    norms = torch.stack([f["w"].norm() for f in fishers])
    c = (1 / norms) / (1 / norms).sum()
    weighted = fisher_merge(vecs, fishers, normalize=True, minimal=0.0)
    expected = sum(c[i] * fishers[i]["w"] * vecs[i]["w"] for i in range(3)) / sum(c[i] * fishers[i]["w"]
                                                                                  for i in range(3))
    torch.testing.assert_close(weighted["w"], expected)


def test_fisher_merging_method_runs_on_the_tiny_encoder_and_stays_between_the_models():
    _, pre, vecs, tasks, _, pool = tiny_merge_setup()
    ctx = MergeContext(pool, tasks, vecs)
    params, info = FisherMerging(examples=8, batch_size=4).merge(ctx)
    for k in pre:
        lo = torch.minimum(vecs[0][k], vecs[1][k]) + pre[k]
        hi = torch.maximum(vecs[0][k], vecs[1][k]) + pre[k]
        assert bool(((params[k] >= lo - 1e-5) & (params[k] <= hi + 1e-5)).all())
    assert info["examples"] == 8


# ---------------------------------------------------------------- RegMean

def test_regmean_on_one_linear_layer_is_the_least_squares_merge():
    gen = torch.Generator().manual_seed(1)
    xs = [torch.randn(40, 6, generator=gen, dtype=torch.float64) for _ in range(3)]
    ws = [torch.randn(4, 6, generator=gen, dtype=torch.float64) for _ in range(3)]
    grams = [{"w": x.T @ x / len(x)} for x in xs]
    merged = regmean_merge([{"w": w, "b": torch.full((4,), float(i))} for i, w in enumerate(ws)], grams, alpha=1.0)
    # argmin_W sum_i ||X_i W^T - X_i W_i^T||^2 / n_i, solved by least squares on the stacked system
    a = torch.cat([x / len(x) ** 0.5 for x in xs])
    b = torch.cat([x @ w.T / len(x) ** 0.5 for x, w in zip(xs, ws, strict=True)])
    torch.testing.assert_close(merged["w"], torch.linalg.lstsq(a, b).solution.T)
    torch.testing.assert_close(merged["b"], torch.full((4,), 1.0, dtype=merged["b"].dtype))  # others: the mean
    shrunk = regmean_merge([{"w": w} for w in ws], grams, alpha=0.6)
    scale = torch.full((6, 6), 0.6, dtype=torch.float64).fill_diagonal_(1.0)
    g = [gr["w"] * scale for gr in grams]
    expected = torch.linalg.inv(sum(g)) @ sum(gi @ w.T for gi, w in zip(g, ws, strict=True))
    torch.testing.assert_close(shrunk["w"], expected.T)


def test_regmean_hooks_every_linear_map_of_the_encoder_and_recompute_the_attention_output():
    model, pre, _, tasks, _, _ = tiny_merge_setup()
    mha = model.visual.transformer.resblocks[0].attn
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(F.linear(attention_values(mha, x), mha.out_proj.weight, mha.out_proj.bias),
                               mha(x, x, x, need_weights=False)[0], rtol=1e-5, atol=1e-6)
    grams = gram_matrices(model.visual, pre, tasks["t0"].train, 8, 4)
    block = "transformer.resblocks.0."
    assert set(grams) == {f"{block}attn.in_proj_weight", f"{block}attn.out_proj.weight", f"{block}mlp.c_fc.weight",
                          f"{block}mlp.c_proj.weight"}
    for name, g in grams.items():
        assert g.shape == (pre[name].shape[1],) * 2 and torch.allclose(g, g.T, atol=1e-6)
    assert not any(h for m in model.visual.modules() for h in m._forward_hooks.values())  # hooks removed


def test_regmean_method_merges_the_tiny_encoder(tmp_path):
    _, pre, vecs, tasks, _, pool = tiny_merge_setup()
    params, info = RegMean(examples=8, batch_size=4).merge(MergeContext(pool, tasks, vecs))
    assert set(params) == set(pre) and all(torch.isfinite(v).all() for v in params.values())
    assert "transformer.resblocks.0.mlp.c_fc.weight" in info["regmean_layers"]
    mean = {k: pre[k] + (vecs[0][k] + vecs[1][k]) / 2 for k in pre}
    torch.testing.assert_close(params["conv1.weight"], mean["conv1.weight"])
    assert not torch.allclose(params["transformer.resblocks.0.mlp.c_fc.weight"],
                              mean["transformer.resblocks.0.mlp.c_fc.weight"])


# ---------------------------------------------------------------- AdaMerging's batches, TA + DeVec supervised

def test_adamerging_takes_the_given_batches_per_task_and_step():
    model, pre, vecs, tasks, heads, _ = tiny_merge_setup()
    merged = MergedParams(pre, vecs, [0.3, 0.3], "task")
    losses = adamerge(model.visual, heads, tasks, merged, steps=1, lr=1e-3, batch_size=4, clamp=None, batches=2)
    start = MergedParams(pre, vecs, [0.3, 0.3], "task")()
    expected = 0.0
    for i, name in enumerate(tasks):
        sampler = tasks[name].test.sampler(4, seed=i)
        for _ in range(2):
            x, _ = next(sampler)
            expected += float(entropy(_model_logits(model, start, heads[name], x)).detach())
    assert losses[0] == pytest.approx(expected, rel=1e-5)


def test_task_arithmetic_devec_learns_one_coefficient_per_vector_with_cross_entropy_on_train():
    model, pre, vecs, tasks, _, pool = tiny_merge_setup()
    shared = [{k: 0.5 * (vecs[0][k] + vecs[1][k]) for k in pre}]
    frozen = [{k: v.clone() for k, v in t.items()} for t in vecs + shared]
    method = SupervisedCoefficients(steps=20, lr=0.02, batch_size=24, devec=True)
    params, info = method.merge(MergeContext(pool, tasks, vecs, shared))
    assert len(info["task_coefficients"]) == 2 and len(info["shared_coefficients"]) == 1
    assert info["task_coefficients"] != [0.3, 0.3] and info["shared_coefficients"] != [0.0]
    assert info["cross_entropy_last"] < info["cross_entropy_first"] and info["split"] == "train"  # full batches
    lam = info["task_coefficients"] + info["shared_coefficients"]
    for k in pre:
        expected = pre[k] + sum(c * v[k] for c, v in zip(lam, vecs + shared, strict=True))
        torch.testing.assert_close(params[k], expected, rtol=1e-5, atol=1e-6)
    assert all(torch.equal(a[k], b[k]) for a, b in zip(vecs + shared, frozen, strict=True) for k in pre)
    assert all(not p.requires_grad for p in model.parameters())


# ---------------------------------------------------------------- settings: fail before any model is built

BAD = [
    ("table1_multitask", "methods.ties.merge_func=max", "methods.ties.merge_func='max'"),
    ("table1_multitask", "methods.ties.k=0", "methods.ties.k=0"),
    ("table1_multitask", "methods.task_arithmetic_devec.split=test", "methods.task_arithmetic_devec.split='test'"),
    ("table1_multitask", "methods.regmean.alpha=2", "methods.regmean.alpha=2"),
    ("table1_multitask", "methods.fisher.estimator=sampled", "methods.fisher.estimator='sampled'"),
    ("table1_multitask", "methods.adamerging_layer.batches=0", "methods.adamerging_layer"),
]


@pytest.mark.parametrize(("experiment", "override", "names"), BAD, ids=[o for _, o, _ in BAD])
def test_a_bad_method_setting_stops_before_anything_is_built(tmp_path, tripwires, experiment, override, names):  # noqa: F811
    from devec.cli import execute

    cfg = composed(experiment, override, tmp=tmp_path)
    with pytest.raises(ValueError) as err:
        execute(cfg, tmp_path / "out")
    assert names in str(err.value) and "\n" not in str(err.value)


TABLE1_PAPER = ["pretrained", "individual", "weight_average", "fisher", "regmean", "ties", "task_arithmetic",
                 "adamerging_task", "adamerging_plus_task", "adamerging_layer", "adamerging_plus_layer",
                 "task_arithmetic_devec", "adamerging_task_devec", "adamerging_layer_devec"]


@pytest.mark.parametrize("experiment", ["table1_multitask", "table2_generalization"])
def test_the_rows_are_the_papers_in_its_order_then_the_extra_rows(tmp_path, experiment):
    from devec.vision.runner import _methods

    rows = _methods(composed(experiment, tmp=tmp_path))
    paper = [mid for mid, m, _ in rows if m.paper]
    extra = [mid for mid, m, _ in rows if not m.paper]
    assert [mid for mid, _, _ in rows] == paper + extra  # every extra row after the paper's
    if experiment == "table1_multitask":
        assert paper == TABLE1_PAPER
        assert {"task_arithmetic_devec_grid", "ties_paper"} <= set(extra)
        by_id = {mid: m for mid, m, _ in rows}
        assert type(by_id["task_arithmetic_devec"]).__name__ == "SupervisedCoefficients"
        assert by_id["task_arithmetic_devec"].devec and by_id["task_arithmetic_devec"].split == "train"
        assert by_id["adamerging_plus_task"].ties and by_id["adamerging_plus_task"].granularity == "task"
    else:
        assert paper == ["task_arithmetic", "ties", "adamerging_layer", "adamerging_plus_layer",
                         "adamerging_layer_devec"]
