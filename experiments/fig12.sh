#!/usr/bin/env bash
# Fig. 12 (App. 10): the generic anime style LoRA alone on the base, with the paper's prompt.
#   bash experiments/fig12.sh                          # embedded scale (offline, CPU), seeds 0,1,2
#   bash experiments/fig12.sh scale=paper device=cuda  # the paper's checkpoints and data
source "$(dirname "$0")/_reproduce.sh"
reproduce fig12_style "$@"
