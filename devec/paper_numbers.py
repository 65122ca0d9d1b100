"""What the paper prints, as data: Tables 1-3 (vision), Table 4 (with the baseline rows it copies from ref. [44])
and App. 13's pool.

Numbers are verbatim from arXiv 2512.22511 (Tables 1-4; transcribed in design/PAPER_AUDIT.md sec. 5); reports put
them beside ours, marked as the paper's, and never compute anything from them. Vision rows and columns are keyed by
ids: the paper's row ids below, and our task ids (conf/data/vision/paper.yaml) for the columns.
"""

from __future__ import annotations

from typing import Any

TABLE4_COLUMNS = ["ToxiGen", "RealTox", "GSM8K", "BBH", "MMLU", "TydiQA", "Avg."]
"""Table 4's columns: % toxic (lower is better), then the control tasks and their mean (higher is better)."""

TABLE4_CONTROL = ["GSM8K", "BBH", "MMLU", "TydiQA"]
"""Table 4's control tasks, in column order (Avg. is their mean)."""

TABLE4_ROWS: list[dict[str, Any]] = [
    {"method": "LLaMA2-7B", "values": [79.1, 51.4, 14.6, 39.0, 41.7, 48.1, 35.9]},
    {"method": "SFT", "values": [86.7, 34.4, 8.95, 27.5, 32.3, 22.8, 22.9]},
    {"method": "Task Vector [18]", "values": [73.1, 17.3, 14.7, 30.1, 37.8, 43.4, 31.5]},
    {"method": "Contrastive Decoding*", "values": [73.5, 14.6, 13.0, 39.0, 41.2, 49.1, 35.6], "from": "[44]"},
    {"method": "Safe Activation*", "values": [71.9, 38.9, 10.3, 38.5, 40.9, 46.9, 34.2], "from": "[44]"},
    {"method": "Feature Subtraction*", "values": [53.5, 15.9, 15.5, 15.7, 33.7, 21.3, 21.6], "from": "[44]"},
    {"method": "Model Surgery [44]", "values": [39.9, 5.17, 14.4, 37.7, 41.7, 45.6, 34.9], "from": "[44]"},
    # The DeVec row prints control tasks as "ToxiGen vector / RTP vector"; the toxicity cells are single values.
    {"method": "DeVec (Ours)", "values": ["32.1", "5.90", "14.9/14.5", "37.8/36.3", "39.5/39.7", "44.4/48.1",
                                          "34.2/34.7"]},
]
"""Table 4's rows as printed (``from: [44]``: copied by the paper from Model Surgery)."""

TABLE4_ROW_IDS = {"pretrained": "LLaMA2-7B", "sft": "SFT", "tv_negation": "Task Vector [18]",
                  "devec_negation": "DeVec (Ours)"}
"""Our Table 4 row ids -> the paper's row they reproduce."""

APP13_MEMBERS = {
    "Odia LLAMA-2-7B": "OdiaGenAI/odia_llama2_7B_base",                      # ref. [35]
    "Dolphin LLAMA2-7B": "cognitivecomputations/dolphin-llama2-7b",          # ref. [8]
    "EMMA-500 LLAMA2-7B": "MaLA-LM/emma-500-llama2-7b",                      # ref. [30]
    "Ultrachat 200k LLAMA2-7B": "kykim0/Llama-2-7b-ultrachat-syn200k-2e",    # ref. [23], as printed
    "Ultrafeedback": "kevin1010607/llama2-7b-sft-full-llama2",               # ref. [20] (via the hf.rst.im mirror)
    "LLAMA2-Chat": "meta-llama/Llama-2-7b-chat-hf",                          # ref. [32]
    "LLAMA2-Chat-Uncensored": "georgesung/llama2_7b_chat_uncensored",        # ref. [11]
    "Physics LLAMA2-7B": "Harshvir/Llama-2-7B-physics",                      # ref. [13]
    "Asclepius LLAMA2-7B": "starmpcc/Asclepius-Llama2-7B",                   # ref. [42] prints starmppcc (typo, P11)
    "Roman Empire LLAMA2-7B": "gaodrew/llama-2-7b-roman-empire-qa-27k",      # ref. [9]
}
"""App. 13's ten pool checkpoints -> the hub id their reference prints (P5: Sec. 4.3 says "seven")."""

_CHATS = ["LLAMA2-Chat", "LLAMA2-Chat-Uncensored"]
APP13_SUBPOOLS: dict[str, list[str]] = {
    "LLAMA-Chat": ["LLAMA2-Chat"],
    "All-LLAMA-Chats": _CHATS,     # Sec. 4.3.1 calls it "All-LLAMA-Chat" (P6)
    "Narrow": _CHATS + ["Roman Empire LLAMA2-7B", "Asclepius LLAMA2-7B", "Physics LLAMA2-7B"],
    "Small Instruct": ["Odia LLAMA-2-7B", "Dolphin LLAMA2-7B"] + _CHATS,
    "Random": ["Roman Empire LLAMA2-7B", "EMMA-500 LLAMA2-7B", "LLAMA2-Chat", "Ultrachat 200k LLAMA2-7B",
               "Physics LLAMA2-7B"],   # "randomly chosen" once by the authors: a fixed list
    "Instruct EMMA": ["Odia LLAMA-2-7B", "Dolphin LLAMA2-7B", "Ultrachat 200k LLAMA2-7B", "Ultrafeedback"] + _CHATS
    + ["EMMA-500 LLAMA2-7B"],
    "All-Models": list(APP13_MEMBERS),
}
"""Fig. 5's sub-pools, membership verbatim from App. 13 (paper names; the order is not the paper's, T10)."""


def table4_rows() -> list[dict[str, Any]]:
    """The paper's Table 4 as report rows (``{"model": "<name> (paper)", column: value}``), marked as the paper's."""
    return [{"model": f"{r['method']} (paper)", "source": "paper" + (f", from {r['from']}" if r.get("from") else ""),
             **dict(zip(TABLE4_COLUMNS, r["values"], strict=True))} for r in TABLE4_ROWS]


# ---------------------------------------------------------------- vision: Tables 1-3 (Sec. 4.1)

PaperTable = dict[str, Any]
"""``{"title", "columns": [column id], "labels": {column id: paper label}, "rows": {row id: (paper label, [values])},
"aliases": {our row id: paper row id}, "notes": [...]}``; ``None`` marks a cell the paper leaves empty."""

_T1_COLUMNS = ["sun397", "stanford_cars", "resisc45", "eurosat", "svhn", "gtsrb", "mnist", "dtd", "avg"]
TABLE1: PaperTable = {
    "title": "Table 1: multi-task merging, 8 datasets, accuracy (%), CLIP ViT-B/32",
    "columns": _T1_COLUMNS,
    "labels": dict(zip(_T1_COLUMNS, ["SUN397", "Cars", "RESISC45", "EuroSat", "SVHN", "GTSRB", "MNIST", "DTD", "Avg."],
                       strict=True)),
    "rows": {
        "pretrained": ("Pre-Trained", [63.2, 59.6, 60.2, 45.0, 31.6, 32.6, 48.3, 44.4, 48.1]),
        "individual": ("Fine-Tuned*", [75.3, 77.7, 96.1, 99.7, 97.5, 98.7, 99.7, 79.4, 90.5]),
        "weight_average": ("Weight Averaging", [65.3, 63.3, 71.4, 73.6, 64.2, 52.8, 87.5, 50.1, 66.0]),
        "fisher": ("Fisher Merging [31]", [68.6, 69.2, 70.7, 66.4, 72.9, 51.1, 87.9, 59.9, 68.3]),
        "regmean": ("RegMean [19]", [65.3, 63.5, 75.6, 78.6, 78.1, 67.4, 93.7, 52.0, 71.8]),
        "ties": ("TIES-Merging [47]", [65.0, 64.3, 74.7, 76.8, 81.3, 69.4, 96.5, 54.3, 72.8]),
        "task_arithmetic": ("Task Arithmetic [18]", [55.3, 54.9, 66.7, 77.4, 80.2, 69.7, 97.3, 50.1, 69.0]),
        "adamerging_task": ("AdaMerging (Task) [48]", [58.1, 54.5, 67.0, 79.2, 79.0, 84.6, 93.8, 44.6, 70.1]),
        "adamerging_plus_task": ("AdaMerging++ (Task) [48]", [60.8, 56.9, 73.1, 83.4, 87.3, 82.4, 95.7, 50.1, 73.7]),
        "adamerging_layer": ("AdaMerging (Layer) [48]", [64.5, 68.1, 79.2, 93.8, 87.0, 91.9, 97.5, 59.1, 80.1]),
        "adamerging_plus_layer": ("AdaMerging++ (Layer) [48]",
                                  [66.6, 68.3, 82.2, 94.2, 89.6, 89.0, 98.3, 60.6, 81.1]),
        "task_arithmetic_devec": ("Task Arithmetic + DeVec", [61.9, 61.6, 78.1, 82.8, 81.5, 80.5, 88.5, 53.7, 73.6]),
        "adamerging_task_devec": ("AdaMerging (Task) + DeVec", [59.6, 65.3, 73.5, 88.0, 80.4, 84.9, 94.1, 55.4, 75.1]),
        "adamerging_layer_devec": ("AdaMerging (Layer) + DeVec",
                                   [65.1, 71.8, 83.7, 94.7, 86.4, 95.9, 97.1, 65.2, 82.5]),
    },
    # our method ids (keys under `methods` in conf/experiment/table1_multitask.yaml) that name a paper row otherwise
    "aliases": {"fisher_merging": "fisher", "adamerging_plus": "adamerging_plus_layer",
                "adamerging": "adamerging_layer", "adamerging_devec": "adamerging_layer_devec",
                "task_arithmetic_devec_learned": "task_arithmetic_devec", "finetuned": "individual",
                "weight_averaging": "weight_average", "ties_merging": "ties"},
    "notes": ["Fine-Tuned* and the AdaMerging rows are [48]'s numbers for the task_vectors (Ilharco) checkpoints "
              "(PAPER_AUDIT V1)"],
}
"""Table 1 as printed (PAPER_AUDIT.md sec. 5), rows keyed by our method ids."""

_T2_COLUMNS = ["seen avg", "eurosat", "mnist", "unseen avg"]
TABLE2: PaperTable = {
    "title": "Table 2: generalization, 6 seen tasks merged, unseen EuroSAT and MNIST, accuracy (%)",
    "columns": _T2_COLUMNS,
    "labels": dict(zip(_T2_COLUMNS, ["Seen Tasks Avg.", "Unseen EuroSAT", "Unseen MNIST", "Unseen Avg."],
                       strict=True)),
    "rows": {
        "task_arithmetic": ("Task Arithmetic [18]", [70.6, 46.2, 77.2, 61.7]),
        "ties": ("TIES-Merging [47]", [69.3, 43.3, 75.9, 59.6]),
        "adamerging_layer": ("AdaMerging [48]", [77.4, 56.1, 84.0, 70.0]),
        "adamerging_plus_layer": ("AdaMerging++ [48]", [78.0, 53.5, 83.9, 68.7]),
        "adamerging_layer_devec": ("AdaMerging+DeVec", [79.0, 60.8, 84.7, 72.8]),
    },
    # the paper does not say task- or layer-wise; layer-wise is the reading of PAPER_AUDIT V15
    "aliases": {"adamerging_plus": "adamerging_plus_layer", "adamerging": "adamerging_layer",
                "adamerging_devec": "adamerging_layer_devec", "ties_merging": "ties"},
    "notes": ["AdaMerging rows read as layer-wise (the paper does not say; PAPER_AUDIT V15)"],
}
"""Table 2 as printed, rows keyed by our method ids, columns by our column names (task ids and averages)."""

_T3_COLUMNS = ["stanford_cars", "eurosat", "gtsrb", "mnist", "resisc45", "svhn", "cifar100", "fgvc_aircraft",
               "oxford_pets", "country211", "avg"]
TABLE3: PaperTable = {
    "title": "Table 3: leave-one-out ablation on decomposed components (pairwise shared), accuracy (%) on the target",
    "columns": _T3_COLUMNS,
    "labels": dict(zip(_T3_COLUMNS, ["Cars", "EuroSAT", "GTSRB", "MNIST", "RESISC45", "SVHN", "CIFAR100",
                                     "FGVCAircraft", "Pets", "Country211", "Avg."], strict=True)),
    "rows": {
        # P4: the EuroSAT..SVHN cells of this row equal Table 1's Pre-Trained GTSRB, MNIST, SVHN, EuroSAT (~),
        # RESISC45: they look column-shifted in the paper. Stored as printed; flagged in TABLE3_FLAGGED.
        "zero_shot": ("Zero-shot", [59.58, 32.60, 48.26, 31.62, 45.77, 60.27, 64.23, 19.65, 87.46, 17.19, 46.66]),
        "task_arithmetic": ("Task Arithmetic [18]",
                            [59.86, 63.96, 42.56, 88.82, 62.90, 67.49, 72.33, 19.56, 88.49, 17.24, 58.32]),
        "tv_shared": ("TV+Shared", [60.71, 77.59, 47.15, 87.88, 64.98, 71.77, 72.83, 19.98, 89.28, 17.52, 60.97]),
        "unique_shared": ("Unique+Shared",
                          [60.40, 77.07, 46.81, 90.75, 64.84, 69.72, 71.97, 19.65, 89.23, 17.49, 60.79]),
        "unique_only": ("Unique only", [60.12, 62.33, 39.34, 81.35, 63.60, 54.53, 66.20, 20.13, 88.03, 17.23, 55.29]),
        "shared_only": ("Shared only", [60.68, 77.56, 47.00, 91.70, 65.13, 72.78, 73.23, 20.25, 89.26, 17.46, 61.51]),
    },
    # the runner's variant labels and older ids
    "aliases": {"Zero-shot": "zero_shot", "Pre-trained": "zero_shot", "pretrained": "zero_shot",
                "Task Arithmetic": "task_arithmetic", "TV+Shared": "tv_shared", "Unique+Shared": "unique_shared",
                "Unique only": "unique_only", "Shared only": "shared_only"},
    "notes": ["P4: Zero-shot cells EuroSAT, GTSRB, MNIST, RESISC45, SVHN look column-shifted relative to Table 1's "
              "Pre-Trained row; stored as printed"],
}
"""Table 3 as printed, rows keyed by variant ids, columns by target task ids."""

TABLE3_FLAGGED = {("zero_shot", c) for c in ("eurosat", "gtsrb", "mnist", "resisc45", "svhn")}
"""(row, column) cells of Table 3 the paper prints in the wrong column, most likely (PAPER_AUDIT P4)."""

VISION_TABLES: dict[str, PaperTable] = {"table1": TABLE1, "table2": TABLE2, "table3": TABLE3}
"""The paper's vision tables by our table id."""


def paper_row_id(table: PaperTable, row_id: str) -> str | None:
    """The paper row our row ``row_id`` reproduces (itself, or through the table's aliases); None if none."""
    rid = table["aliases"].get(row_id, row_id)
    return rid if rid in table["rows"] else None


def paper_value(table: PaperTable, row_id: str, column: str) -> float | None:
    """The paper's value at (our row id, our column id), or None where the paper has no such row or column."""
    rid = paper_row_id(table, row_id)
    if rid is None or column not in table["columns"]:
        return None
    return table["rows"][rid][1][table["columns"].index(column)]
