#!/usr/bin/env bash
# Fig. 10 (App. 10): the black-and-white photography style LoRA alone on the base, with the paper's prompt.
#   bash experiments/fig10.sh                          # embedded scale (offline, CPU), seeds 0,1,2
#   bash experiments/fig10.sh scale=paper device=cuda  # the paper's checkpoints and data
source "$(dirname "$0")/_reproduce.sh"
reproduce fig10_style "$@"
