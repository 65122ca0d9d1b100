#!/usr/bin/env bash
# Figs. 2, 3, 9 (Sec. 4.1, App. 9): shared vs unique components added to an unseen target.
#   bash experiments/fig2_fig3_fig9.sh                          # embedded scale (offline, CPU), seeds 0,1,2
#   bash experiments/fig2_fig3_fig9.sh scale=paper device=cuda  # the paper's checkpoints and data
source "$(dirname "$0")/_reproduce.sh"
reproduce fig2_fig3_arithmetic "$@"
