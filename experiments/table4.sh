#!/usr/bin/env bash
# Table 4 (Sec. 4.3): toxicity removal by negating the unique toxic component.
#   bash experiments/table4.sh                          # embedded scale (offline, CPU), seeds 0,1,2
#   bash experiments/table4.sh scale=paper device=cuda  # the paper's checkpoints and data
source "$(dirname "$0")/_reproduce.sh"
reproduce table4_toxicity "$@"
