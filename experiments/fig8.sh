#!/usr/bin/env bash
# Fig. 8 (App. 7): recovering a planted shared subspace under noise.
#   bash experiments/fig8.sh                          # embedded scale (offline, CPU), seeds 0,1,2
#   bash experiments/fig8.sh scale=paper device=cuda  # the paper's checkpoints and data
source "$(dirname "$0")/_reproduce.sh"
reproduce toy_recovery "$@"
