# Sourced by every recipe in experiments/: run one experiment as a multirun over seeds, then gather the runs
# into the paper's table or figure with devec-report (mean and spread over seeds).
#   SEEDS=0,1,2 (default)  seeds of the multirun; each seed changes pre-training, fine-tuning and data order
#   "$@"                   Hydra overrides passed through: scale=paper device=cuda hydra/launcher=slurm ...
#   REPORT_ARGS            extra devec-report arguments (e.g. "--no-wandb")
# The report gives each table over seeds (mean ± 95 % interval) and DeVec's effects with their verdicts; then
# `devec-docs NAME=EXPERIMENT` writes them into the docs' <!-- devec:numbers NAME --> blocks.
set -euo pipefail

reproduce() {  # reproduce EXPERIMENT [hydra overrides...]
  local experiment=$1
  shift
  devec -m "experiment=${experiment}" "seed=${SEEDS:-0,1,2}" "$@"
  # shellcheck disable=SC2086  # REPORT_ARGS is a list of words
  devec-report "${experiment}" ${REPORT_ARGS:-}
}
