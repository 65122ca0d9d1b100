#!/usr/bin/env bash
# Fig. 5 (Sec. 4.3): % toxic and control tasks over the negation coefficient, per sub-pool.
#   bash experiments/fig5.sh                          # embedded scale (offline, CPU), seeds 0,1,2
#   bash experiments/fig5.sh scale=paper device=cuda  # the paper's checkpoints and data
source "$(dirname "$0")/_reproduce.sh"
reproduce fig5_negation_coefficient "$@"
