"""What the paper prints, as data: Table 4 (with the baseline rows it copies from ref. [44]) and App. 13's pool.

Numbers are verbatim from arXiv 2512.22511 (Table 4; transcribed in design/PAPER_AUDIT.md sec. 5); reports put
them beside ours, marked as the paper's, and never compute anything from them.
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
