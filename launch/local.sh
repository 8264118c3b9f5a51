#!/usr/bin/env bash
# Start N processes of one multi-process JAX job on this host and wait for them.
#
#   launch/local.sh N jax-supcon --config=configs/x.py --workdir=DIR [--config.KEY=VALUE ...]
#   launch/local.sh N COMMAND [ARGS...]        # any command; it sees the variables below
#
# Each process gets JAX_COORDINATOR_ADDRESS=127.0.0.1:PORT (a free port), JAX_NUM_PROCESSES=N and
# JAX_PROCESS_ID=i, which `jax-supcon` reads to call jax.distributed.initialize. On a machine with
# NVIDIA GPUs process i sees GPU i only (N must not exceed the GPU count); without GPUs each process
# gets DEVICES_PER_PROCESS fake CPU devices (default 2) and gloo collectives. Output lines are
# prefixed with "[i] ". If a process fails, the others are stopped (SIGTERM, then SIGKILL after
# KILL_AFTER seconds, default 10) and this script exits with that process's status.
set -u

if [[ $# -lt 2 || ! "$1" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: launch/local.sh N COMMAND [ARGS...]   (N >= 1 processes; got: ${1:-nothing})" >&2
  exit 2
fi
num_processes=$1
shift
kill_after=${KILL_AFTER:-10}
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

gpus=0
if command -v nvidia-smi >/dev/null 2>&1; then
  gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
fi
if (( gpus > 0 && num_processes > gpus )); then
  echo "launch/local.sh: $num_processes processes but $gpus GPUs: one process per GPU" >&2
  exit 2
fi

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null; done
  local deadline=$((SECONDS + kill_after))
  for pid in "${pids[@]}"; do
    while kill -0 -- "-$pid" 2>/dev/null && (( SECONDS < deadline )); do sleep 0.2; done
    kill -KILL -- "-$pid" 2>/dev/null
  done
}
trap 'cleanup; exit 130' INT TERM

for ((i = 0; i < num_processes; i++)); do
  if (( gpus > 0 )); then
    device_env=(CUDA_VISIBLE_DEVICES="$i")
  else
    device_env=(JAX_PLATFORMS=cpu JAX_NUM_CPU_DEVICES="${DEVICES_PER_PROCESS:-2}")
  fi
  # setsid: each process and its output filter form one process group, stopped together.
  setsid env "${device_env[@]}" JAX_COORDINATOR_ADDRESS="127.0.0.1:$port" JAX_NUM_PROCESSES="$num_processes" \
    JAX_PROCESS_ID="$i" bash -c 'set -o pipefail; "$@" 2>&1 | sed -u "s/^/[$JAX_PROCESS_ID] /"' _ "$@" &
  pids+=($!)
done

status=0
running=("${pids[@]}")
while (( ${#running[@]} > 0 )); do
  wait -n -p finished "${running[@]}"
  code=$?
  still=()
  for pid in "${running[@]}"; do [[ "$pid" != "$finished" ]] && still+=("$pid"); done
  running=("${still[@]}")
  if (( code != 0 )); then
    index=0
    for ((k = 0; k < num_processes; k++)); do [[ "${pids[$k]}" == "$finished" ]] && index=$k; done
    echo "launch/local.sh: process $index exited with status $code; stopping the others" >&2
    status=$code
    cleanup
    break
  fi
done
exit "$status"
