#!/usr/bin/env bash
# Table 2 (Sec. 4.1): merging the seen tasks, accuracy on seen and held-out tasks.
#   bash experiments/table2.sh                          # embedded scale (offline, CPU), seeds 0,1,2
#   bash experiments/table2.sh scale=paper device=cuda  # the paper's checkpoints and data
source "$(dirname "$0")/_reproduce.sh"
reproduce table2_generalization "$@"
