#!/usr/bin/env bash
# Fig. 14 (App. 10): the flat colour anime style LoRA alone on the base, with the paper's prompt.
#   bash experiments/fig14.sh                          # embedded scale (offline, CPU), seeds 0,1,2
#   bash experiments/fig14.sh scale=paper device=cuda  # the paper's checkpoints and data
source "$(dirname "$0")/_reproduce.sh"
reproduce fig14_style "$@"
