#!/usr/bin/env bash
# Run on every worker of a Cloud TPU VM slice (v4-32, v5e-64, ...): one process per host.
#
#   launch/tpu_vm.sh setup TPU_NAME ZONE                 # copy this checkout, install '.[tpu]' on all workers
#   launch/tpu_vm.sh run TPU_NAME ZONE --config=configs/imagenet_supcon.py --workdir=gs://BUCKET/runs/x \
#       [--config.KEY=VALUE ...]
#
# `run` starts `jax-supcon --distributed_auto` on all workers at once (gcloud ... ssh --worker=all);
# JAX finds the coordinator and process ids from the TPU metadata. The workdir must be shared by
# all hosts (a gs:// bucket): every host writes its part of each checkpoint. Extra gcloud options
# (for example --project=P) go in GCLOUD_FLAGS.
set -euo pipefail
if [[ $# -lt 3 || ! "$1" =~ ^(setup|run)$ ]]; then
  echo "usage: launch/tpu_vm.sh setup|run TPU_NAME ZONE [jax-supcon args...]" >&2
  exit 2
fi
action=$1 tpu=$2 zone=$3
shift 3
remote_dir=${REMOTE_DIR:-jax_supcon}
read -r -a gcloud_flags <<< "${GCLOUD_FLAGS:-}"
ssh_all() {
  gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all "${gcloud_flags[@]}" --command="$1"
}
case "$action" in
  setup)
    here=$(cd "$(dirname "$0")/.." && pwd)
    ssh_all "mkdir -p $remote_dir"
    gcloud compute tpus tpu-vm scp --recurse --zone="$zone" --worker=all "${gcloud_flags[@]}" \
      "$here"/pyproject.toml "$here"/README.md "$here"/Makefile "$here"/jax_supcon "$here"/configs \
      "$tpu:$remote_dir/"
    ssh_all "cd $remote_dir && python3 -m venv .venv && .venv/bin/pip install --quiet -e '.[tpu]'"
    ;;
  run)
    ssh_all "cd $remote_dir && .venv/bin/jax-supcon --distributed_auto $(printf '%q ' "$@")"
    ;;
esac
