#!/usr/bin/env bash
# Fig. 7 (App. 6): Proposition 3.1 vs Theorem 6.1, principal angles between the extracted components.
#   bash experiments/fig7.sh                          # embedded scale (offline, CPU), seeds 0,1,2
#   bash experiments/fig7.sh scale=paper device=cuda  # the paper's checkpoints and data
source "$(dirname "$0")/_reproduce.sh"
reproduce toy_alternative "$@"
