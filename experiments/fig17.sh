#!/usr/bin/env bash
# Fig. 17 (App. 11): black-and-white and pixel-art styles mixed.
#   bash experiments/fig17.sh                          # embedded scale (offline, CPU), seeds 0,1,2
#   bash experiments/fig17.sh scale=paper device=cuda  # the paper's checkpoints and data
source "$(dirname "$0")/_reproduce.sh"
reproduce fig17_style_mixing "$@"
