#!/usr/bin/env bash
# Table 1 (Sec. 4.1): multi-task merging of 8 task vectors, each method with and without DeVec.
#   bash experiments/table1.sh                          # embedded scale (offline, CPU), seeds 0,1,2
#   bash experiments/table1.sh scale=paper device=cuda  # the paper's checkpoints and data
source "$(dirname "$0")/_reproduce.sh"
reproduce table1_multitask "$@"
