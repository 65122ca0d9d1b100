#!/usr/bin/env bash
# Fig. 16 (App. 11): generic anime and Studio Ghibli styles mixed.
#   bash experiments/fig16.sh                          # embedded scale (offline, CPU), seeds 0,1,2
#   bash experiments/fig16.sh scale=paper device=cuda  # the paper's checkpoints and data
source "$(dirname "$0")/_reproduce.sh"
reproduce fig16_style_mixing "$@"
