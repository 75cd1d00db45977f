#!/usr/bin/env bash
# Run jaxmedgan on every worker of a Cloud TPU VM pod slice (the same command on each worker).
#   TPU_NAME=my-pod ZONE=us-central2-b launch/tpu_pod.sh setup
#   TPU_NAME=my-pod ZONE=us-central2-b launch/tpu_pod.sh train --config configs/stylegan2_ada_spine.py --workdir gs://bucket/runs/spine
# JAX finds the pod's coordinator from TPU metadata (JAXMEDGAN_DISTRIBUTED=auto); data_dir and
# workdir should be on shared storage (GCS) so every worker reads its shard and orbax can write.
# Preemption: a spot / preemptible TPU VM (or a maintenance event) sends SIGTERM to every process ~30 s
# before stopping; jaxmedgan then finishes the step, saves a checkpoint (the stop is agreed by all
# workers) and exits 143. Rerun the same `train` command on the recreated pod to resume.
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
: "${REPO:?set REPO to the git URL the workers clone jaxmedgan from}"
ssh_all() { gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command "$1"; }
if [ "${1:-}" = "setup" ]; then
  ssh_all "git clone $REPO jaxmedgan || (cd jaxmedgan && git pull); cd jaxmedgan && pip install -e . 'jax[tpu]'"
  exit 0
fi
printf -v args '%q ' "$@"
ssh_all "cd jaxmedgan && JAXMEDGAN_DISTRIBUTED=auto python3 -m jaxmedgan.main $args"
