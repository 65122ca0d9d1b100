#!/usr/bin/env bash
# Fig. 4 (Sec. 4.2): style mixing with unique components vs plain LoRA mixing.
#   bash experiments/fig4.sh                          # embedded scale (offline, CPU), seeds 0,1,2
#   bash experiments/fig4.sh scale=paper device=cuda  # the paper's checkpoints and data
source "$(dirname "$0")/_reproduce.sh"
reproduce fig4_style_mixing "$@"
