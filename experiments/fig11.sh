#!/usr/bin/env bash
# Fig. 11 (App. 10): the pixel art style LoRA alone on the base, with the paper's prompt.
#   bash experiments/fig11.sh                          # embedded scale (offline, CPU), seeds 0,1,2
#   bash experiments/fig11.sh scale=paper device=cuda  # the paper's checkpoints and data
source "$(dirname "$0")/_reproduce.sh"
reproduce fig11_style "$@"
