#!/usr/bin/env bash
# Fig. 13 (App. 10): the Studio Ghibli style LoRA alone on the base, with the paper's prompt.
#   bash experiments/fig13.sh                          # embedded scale (offline, CPU), seeds 0,1,2
#   bash experiments/fig13.sh scale=paper device=cuda  # the paper's checkpoints and data
source "$(dirname "$0")/_reproduce.sh"
reproduce fig13_style "$@"
