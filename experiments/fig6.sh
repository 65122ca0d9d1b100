#!/usr/bin/env bash
# Fig. 6 (Sec. 4.3): the eigenvalue threshold tau against toxicity and control tasks.
#   bash experiments/fig6.sh                          # embedded scale (offline, CPU), seeds 0,1,2
#   bash experiments/fig6.sh scale=paper device=cuda  # the paper's checkpoints and data
source "$(dirname "$0")/_reproduce.sh"
reproduce fig6_tau "$@"
