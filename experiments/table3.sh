#!/usr/bin/env bash
# Table 3 (Sec. 4.1): leave-one-out ablation of shared and unique components.
#   bash experiments/table3.sh                          # embedded scale (offline, CPU), seeds 0,1,2
#   bash experiments/table3.sh scale=paper device=cuda  # the paper's checkpoints and data
source "$(dirname "$0")/_reproduce.sh"
reproduce table3_ablation "$@"
