"""Class names and templates of the zero-shot heads each public checkpoint set was fine-tuned against, as data.

A fine-tuned CLIP image encoder is only right against the frozen head it was trained with (Ilharco et al.): the pool
config names its set (``pool.head_text``) and the heads are built from it, not from shortened lists. Sources:

- ``task_vectors``: mlfoundations/task_vectors ``src/datasets/templates.py`` (templates) and
  ``src/datasets/<dataset>.py`` (class names; [48] EnnengYang/AdaMerging builds its heads the same way);
- ``fusionbench``: tanganke/fusion_bench ``fusion_bench/tasks/clip_classification/<task>.py``.

``classnames: None`` means the reference code takes them from its dataset (e.g. Cars from ``cars_meta.mat``, CIFAR100
from torchvision): we take the dataset's ClassLabel names (underscores as spaces), as devec/vision/data.py does.
"""

from __future__ import annotations

from typing import Any

DIGITS = [str(i) for i in range(10)]

# src/datasets/templates.py (task_vectors); FusionBench's <task>.py `templates` are the same lists for these tasks
TEMPLATES: dict[str, list[str]] = {
    "stanford_cars": ["a photo of a {c}.", "a photo of the {c}.", "a photo of my {c}.", "i love my {c}!",
                      "a photo of my dirty {c}.", "a photo of my clean {c}.", "a photo of my new {c}.",
                      "a photo of my old {c}."],
    "cifar100": [t for a in ("a", "the") for t in
                 [f"a {q}photo of {a} {{c}}." for q in ("", "blurry ", "black and white ", "low contrast ",
                                                       "high contrast ", "bad ", "good ")]
                 + [f"a photo of {a} {s} {{c}}." for s in ("small", "big")]],
    "dtd": [f"a photo of {a} {{c}} {w}." for a in ("a", "the") for w in ("texture", "pattern", "thing", "object")],
    "eurosat": ["a centered satellite photo of {c}.", "a centered satellite photo of a {c}.",
                "a centered satellite photo of the {c}."],
    "gtsrb": ['a zoomed in photo of a "{c}" traffic sign.', 'a centered photo of a "{c}" traffic sign.',
              'a close up photo of a "{c}" traffic sign.'],
    "mnist": ['a photo of the number: "{c}".'],
    "resisc45": [f"{k} {v} of {a}{{c}}." for a in ("", "a ", "the ") for v in ("imagery", "photo", "view")
                 for k in ("satellite", "aerial")],
    "sun397": ["a photo of a {c}.", "a photo of the {c}."],
    "svhn": ['a photo of the number: "{c}".'],
}
"""Templates per task id ("{c}" is the class name), in the reference files' order."""

# FusionBench oxford_iiit_pet.py; CLIP's prompts for the tasks no public set covers (our own fine-tunes use them)
EXTRA_TEMPLATES: dict[str, list[str]] = {
    "oxford_pets": ["a photo of a {c}, a type of pet."],
    "country211": ["a photo i took in {c}.", "a photo i took while visiting {c}.", "a photo from my home country "
                   "of {c}.", "a photo from my visit to {c}.", "a photo showing the country of {c}."],
    "fgvc_aircraft": ["a photo of a {c}, a type of aircraft.", "a photo of the {c}, a type of aircraft."],
    "caltech256": ["a photo of a {c}.", "a painting of a {c}.", "a plastic {c}.", "a sculpture of a {c}.",
                   "a sketch of a {c}.", "a tattoo of a {c}.", "a toy {c}.", "a rendition of a {c}.",
                   "a embroidered {c}.", "a cartoon {c}.", "a {c} in a video game.", "a plushie {c}.",
                   "a origami {c}.", "art of a {c}.", "graffiti of a {c}.", "a drawing of a {c}.",
                   "a doodle of a {c}.", "a photo of the {c}.", "a painting of the {c}.", "the plastic {c}.",
                   "a sculpture of the {c}.", "a sketch of the {c}.", "a tattoo of the {c}.", "the toy {c}.",
                   "a rendition of the {c}.", "the embroidered {c}.", "the cartoon {c}.", "the {c} in a video game.",
                   "the plushie {c}.", "the origami {c}.", "art of the {c}.", "graffiti of the {c}.",
                   "a drawing of the {c}.", "a doodle of the {c}."],
}
"""CLIP's published prompts (openai/CLIP data/prompts.md) for tasks with no public fine-tuned set."""

EUROSAT = ["annual crop land", "forest", "brushland or shrubland", "highway or road",
           "industrial buildings or commercial buildings", "pasture land", "permanent crop land",
           "residential buildings or homes or apartments", "river", "lake or sea"]
"""task_vectors eurosat.py (its ``ours_to_open_ai`` map over the sorted folders) = FusionBench eurosat.py."""

GTSRB = [
    "red and white circle 20 kph speed limit", "red and white circle 30 kph speed limit",
    "red and white circle 50 kph speed limit", "red and white circle 60 kph speed limit",
    "red and white circle 70 kph speed limit", "red and white circle 80 kph speed limit",
    "end / de-restriction of 80 kph speed limit", "red and white circle 100 kph speed limit",
    "red and white circle 120 kph speed limit", "red and white circle red car and black car no passing",
    "red and white circle red truck and black car no passing", "red and white triangle road intersection warning",
    "white and yellow diamond priority road", "red and white upside down triangle yield right-of-way", "stop",
    "empty red and white circle", "red and white circle no truck entry",
    "red circle with white horizonal stripe no entry", "red and white triangle with exclamation mark warning",
    "red and white triangle with black left curve approaching warning",
    "red and white triangle with black right curve approaching warning",
    "red and white triangle with black double curve approaching warning",
    "red and white triangle rough / bumpy road warning", "red and white triangle car skidding / slipping warning",
    "red and white triangle with merging / narrow lanes warning",
    "red and white triangle with person digging / construction / road work warning",
    "red and white triangle with traffic light approaching warning",
    "red and white triangle with person walking warning",
    "red and white triangle with child and person walking warning", "red and white triangle with bicyle warning",
    "red and white triangle with snowflake / ice warning", "red and white triangle with deer warning",
    "white circle with gray strike bar no speed limit", "blue circle with white right turn arrow mandatory",
    "blue circle with white left turn arrow mandatory", "blue circle with white forward arrow mandatory",
    "blue circle with white forward or right turn arrow mandatory",
    "blue circle with white forward or left turn arrow mandatory", "blue circle with white keep right arrow mandatory",
    "blue circle with white keep left arrow mandatory", "blue circle with white arrows indicating a traffic circle",
    "white circle with gray strike bar indicating no passing for cars has ended",
    "white circle with gray strike bar indicating no passing for trucks has ended",
]
"""task_vectors gtsrb.py (from openai/CLIP data/prompts.md) = FusionBench gtsrb.py; the typos are theirs."""

RESISC45 = [
    "airplane", "airport", "baseball diamond", "basketball court", "beach", "bridge", "chaparral", "church",
    "circular farmland", "cloud", "commercial area", "dense residential", "desert", "forest", "freeway",
    "golf course", "ground track field", "harbor", "industrial area", "intersection", "island", "lake", "meadow",
    "medium residential", "mobile home park", "mountain", "overpass", "palace", "parking lot", "railway",
    "railway station", "rectangular farmland", "river", "roundabout", "runway", "sea ice", "ship", "snowberg",
    "sparse residential", "stadium", "storage tank", "tennis court", "terrace", "thermal power station", "wetland",
]
"""task_vectors resisc45.py (``RESISC45Dataset.classes`` with "_" as " ") = FusionBench resisc45.py."""

DTD = [
    "banded", "blotchy", "braided", "bubbly", "bumpy", "chequered", "cobwebbed", "cracked", "crosshatched",
    "crystalline", "dotted", "fibrous", "flecked", "freckled", "frilly", "gauzy", "grid", "grooved", "honeycombed",
    "interlaced", "knitted", "lacelike", "lined", "marbled", "matted", "meshed", "paisley", "perforated", "pitted",
    "pleated", "polka-dotted", "porous", "potholed", "scaly", "smeared", "spiralled", "sprinkled", "stained",
    "stratified", "striped", "studded", "swirly", "veined", "waffled", "woven", "wrinkled", "zigzagged",
]
"""FusionBench dtd.py; task_vectors dtd.py takes the sorted DTD folder names, which are these 47."""

PETS = [c.replace("_", " ") for c in (
    "abyssinian american_bulldog american_pit_bull_terrier basset_hound beagle bengal birman bombay boxer "
    "british_shorthair chihuahua egyptian_mau english_cocker_spaniel english_setter german_shorthaired "
    "great_pyrenees havanese japanese_chin keeshond leonberger maine_coon miniature_pinscher newfoundland persian "
    "pomeranian pug ragdoll russian_blue saint_bernard samoyed scottish_terrier shiba_inu siamese sphynx "
    "staffordshire_bull_terrier wheaten_terrier yorkshire_terrier").split()]
"""FusionBench oxford_iiit_pet.py (it keeps the underscores; so do we, in ``fusionbench``)."""

_COMMON_CLASSNAMES: dict[str, list[str] | None] = {
    "eurosat": EUROSAT, "gtsrb": GTSRB, "resisc45": RESISC45, "dtd": DTD, "mnist": DIGITS, "svhn": DIGITS,
    "stanford_cars": None, "sun397": None, "cifar100": None,
}

SETS: dict[str, dict[str, dict[str, Any]]] = {
    "task_vectors": {t: {"classnames": _COMMON_CLASSNAMES.get(t), "templates": TEMPLATES[t]} for t in TEMPLATES},
    "fusionbench": {
        **{t: {"classnames": _COMMON_CLASSNAMES.get(t), "templates": TEMPLATES[t]} for t in TEMPLATES},
        "oxford_pets": {"classnames": [c.replace(" ", "_") for c in PETS], "templates": EXTRA_TEMPLATES["oxford_pets"]},
    },
}
"""Per checkpoint set, per task id: ``classnames`` (None: the dataset's) and ``templates``. Tasks of neither set
(Country211, FGVC-Aircraft, Caltech256, ImageNet, MNIST-C) use the data config's entries, which our fine-tuning
experiment (devec/vision/finetune.py) trains against too."""

for _set in SETS.values():
    _set["mnist_c_glass_blur"] = _set["mnist"]   # Fig. 9b evaluates MNIST's classes on corrupted MNIST
for _set in SETS.values():  # our own fine-tunes (conf/experiment/vision_finetune.yaml) train against these heads
    for _task, _templates in EXTRA_TEMPLATES.items():
        _set.setdefault(_task, {"classnames": None, "templates": _templates})


def head_text(set_name: str | None, task: str) -> dict[str, Any]:
    """``{"classnames": list | None, "templates": list | None}`` of ``task`` in the set (empty when not listed)."""
    if set_name is None:
        return {"classnames": None, "templates": None}
    if set_name not in SETS:
        raise ValueError(f"pool.head_text={set_name!r}: unknown set; known: {', '.join(SETS)} "
                         "(devec/vision/head_text.py)")
    if task == "imagenet":
        return imagenet_text()
    return dict(SETS[set_name].get(task) or {"classnames": None, "templates": None})


def imagenet_text() -> dict[str, Any]:
    """ImageNet's CLIP class names and 80 templates (open_clip's copy of openai/CLIP's; task_vectors' imagenet.py and
    templates.py ``imagenet_template`` are the same lists)."""
    from open_clip import zero_shot_metadata as meta

    return {"classnames": list(meta.IMAGENET_CLASSNAMES),
            "templates": [t("{c}") for t in meta.OPENAI_IMAGENET_TEMPLATES]}
