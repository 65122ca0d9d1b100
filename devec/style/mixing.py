"""Style mixing (Sec. 4.2): decompose all style vectors jointly and add only their unique components."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from devec.engine import TaskVector, frobenius_norm
from devec.runtime import stage
from devec.style.loras import StyleLoRA, load_adapter
from devec.vectors import DecompositionSettings, decompose_model

COMPONENTS = ("original", "unique", "shared")
DECOMPOSE_OVER = ("pool", "mix")
COEFFICIENTS = ("one", "raised")
FIG4 = ["anime", "flat_anime", "ghibli", "pixel_art"]


@dataclass
class Mixing:
    """How styles are mixed (``_target_`` config conf/method/style/mixing.yaml): what each method adds per style
    (``methods``: method id -> one of COMPONENTS), the coefficients, which styles, and over which styles the
    joint decomposition runs.

    ``coefficients``: ``one`` sets every style's coefficient to 1 (Sec. 4.2); ``raised`` starts from each LoRA's
    suggested weight and raises all of them together, lambda_i = gamma * weight_i for gamma in ``schedule``
    (App. 11)."""

    methods: dict[str, str] = field(default_factory=lambda: {"vanilla": "original", "unique": "unique"})
    coefficients: str = "one"
    schedule: list[float] = field(default_factory=lambda: [1.0, 1.5, 2.0])
    mix: Any = field(default_factory=lambda: list(FIG4))
    decompose_over: str = "mix"
    save_components: bool = True

    def __post_init__(self) -> None:
        for name, comp in self.methods.items():
            if comp not in COMPONENTS:
                raise ValueError(f"methods.{name}={comp!r}: use one of {', '.join(COMPONENTS)}")
        if "style" in self.methods:
            raise ValueError("methods.style: the id 'style' is taken by each style alone; name the method otherwise")
        if self.coefficients not in COEFFICIENTS:
            raise ValueError(f"coefficients={self.coefficients!r}: use one (Sec. 4.2: every style at 1) or raised "
                             f"(App. 11: the suggested weights raised together through schedule)")
        if self.coefficients == "raised" and not self.schedule:
            raise ValueError("schedule=[]: give the coefficients to raise the mix through, e.g. [1.0,2.0]")
        if any(float(g) <= 0 for g in self.schedule):
            raise ValueError(f"schedule={list(self.schedule)}: every gamma must be > 0")
        if self.decompose_over not in DECOMPOSE_OVER:
            raise ValueError(f"decompose_over={self.decompose_over!r}: use one of {', '.join(DECOMPOSE_OVER)}")

    def gammas(self) -> list[float]:
        """The multipliers the mix is generated at: 1 (Sec. 4.2), or every value of ``schedule`` (App. 11)."""
        return [1.0] if self.coefficients == "one" else [float(g) for g in self.schedule]

    def coefficients_at(self, gamma: float, weights: Sequence[float]) -> list[float]:
        """Each style's coefficient lambda_i at ``gamma``: 1 (Sec. 4.2) or gamma * weight_i (App. 11)."""
        if self.coefficients == "one":
            return [1.0] * len(weights)
        return [float(gamma) * float(w) for w in weights]


@dataclass
class StyleDecomposition:
    """Per style: its unique and shared components as ``{module: LoRAFactors}``, plus a per-module report."""

    names: list[str]
    unique: list[dict[str, TaskVector]]
    shared: list[dict[str, TaskVector]]
    report: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Shared dimension and the fraction of each style's energy that is shared, over all modules."""
        rows = [r for r in self.report if r.get("action") == "decompose"]
        out: dict[str, Any] = {"modules": len(self.report), "decomposed_modules": len(rows),
                               "modules_with_shared": sum(1 for r in rows if r.get("shared_dim", 0) > 0),
                               "mean_shared_dim": _mean([r.get("shared_dim", 0) for r in rows])}
        for i, name in enumerate(self.names):
            shared = sum(frobenius_norm(v) ** 2 for v in self.shared[i].values())
            total = shared + sum(frobenius_norm(v) ** 2 for v in self.unique[i].values())
            out[f"shared_energy/{name}"] = shared / total if total > 0 else 0.0
        return out


def decompose_styles(loras: Sequence[StyleLoRA], decomposition: Mapping[str, Any],
                     progress: bool = True) -> StyleDecomposition:
    """Joint DeVec over the style vectors, module by module, in factor form (the LoRA rank rule keeps rank r).

    A module that only some LoRAs adapt is zero in the others, so nothing in it is shared by all of them:
    it stays whole in each unique component.
    """
    if len(loras) < 2:
        raise ValueError(f"style mixing needs at least two style LoRAs (pool.styles), got {len(loras)}")
    settings = DecompositionSettings.from_config(decomposition)
    if settings.mode != "joint":
        raise ValueError(f"style mixing decomposes all styles jointly (Sec. 4.2): use decomposition=joint, "
                         f"not mode {settings.mode!r}")
    common = [m for m in loras[0].modules if all(m in lora.factors for lora in loras[1:])]
    pool = [{m: lora.factors[m] for m in common} for lora in loras]
    with stage("decomposition", f"joint over {len(loras)} styles"):
        md = decompose_model(pool, settings, progress=progress)
    unique = [dict(md.unique[i]) for i in range(len(loras))]
    shared = [dict(md.shared[i]) for i in range(len(loras))]
    report = list(md.report)
    for i, lora in enumerate(loras):
        for module, f in lora.factors.items():
            if module not in common:
                unique[i][module] = f
                report.append({"name": module, "shape": "x".join(map(str, f.shape)), "action": "only_in_some",
                               "shared_dim": 0, "shared_energy": 0.0, "unique_energy": 1.0})
    return StyleDecomposition([lora.name for lora in loras], unique, shared, report)


def components(method: str, loras: Sequence[StyleLoRA], dec: StyleDecomposition) -> list[dict[str, TaskVector]]:
    """What a mixing method adds for each style: its whole vector, its unique part or its shared part."""
    if method == "original":
        return [dict(lora.factors) for lora in loras]
    if method == "unique":
        return dec.unique
    if method == "shared":
        return dec.shared
    raise ValueError(f"components={method!r}: use one of {', '.join(COMPONENTS)} (conf/method/style)")


def load_components(pipe: Any, loras: Sequence[StyleLoRA], dec: StyleDecomposition,
                    methods: Mapping[str, str]) -> dict[str, list[str]]:
    """Load every (method, style) component into ``pipe`` as a named adapter (``methods``: method id -> components);
    returns adapter names per method id."""
    names: dict[str, list[str]] = {}
    loaded: dict[str, list[str]] = {}
    for method, comp in methods.items():
        if comp in loaded:  # e.g. vanilla reuses the styles' own adapters
            names[method] = loaded[comp]
            continue
        parts = components(comp, loras, dec)
        names[method] = loaded[comp] = []
        for lora, part in zip(loras, parts, strict=True):
            adapter = f"{method}__{lora.name}"
            extras = lora.extras if comp != "shared" else None
            load_adapter(pipe, adapter, part, extras)
            names[method].append(adapter)
    return names


def set_mix(pipe: Any, adapters: Sequence[str], weights: Sequence[float]) -> None:
    """Activate exactly these adapters with these coefficients (W = W_pre + sum_i lambda_i V_i); none: the base."""
    if not adapters:
        pipe.disable_lora()
        return
    pipe.enable_lora()
    pipe.set_adapters(list(adapters), adapter_weights=[float(w) for w in weights])


def _mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else 0.0
