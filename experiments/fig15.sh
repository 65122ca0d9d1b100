#!/usr/bin/env bash
# Fig. 15 (App. 11): three anime styles mixed, unique vs plain, three seeds.
#   bash experiments/fig15.sh                          # embedded scale (offline, CPU), seeds 0,1,2
#   bash experiments/fig15.sh scale=paper device=cuda  # the paper's checkpoints and data
source "$(dirname "$0")/_reproduce.sh"
reproduce fig15_style_mixing "$@"
