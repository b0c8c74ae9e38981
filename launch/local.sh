#!/usr/bin/env bash
# N processes of one run on this machine, joined by jax.distributed: for testing
# the multi-host code paths without a cluster (and for one process per GPU).
#   bash launch/local.sh 2 --config=configs/attmulroi.py:demo --workdir=runs/mp \
#       --config.data.dir=demo_out/prepared
#   MODULE=bmdjax.evaluate bash launch/local.sh 2 --config=configs/attmulroi.py:demo \
#       --workdir=runs/mp --config.data.dir=demo_out/prepared --split=test
# Environment:
#   MODULE       entry point (default bmdjax.train; bmdjax.evaluate works the same way)
#   PORT         coordinator port on 127.0.0.1 (default: a free one)
#   CPU_DEVICES  CPU devices each process simulates (default 1) when there is no GPU
#   LOG_DIR      where processes 1..N-1 write their logs (default: a new temp folder);
#                process 0 writes to this terminal
# With NVIDIA GPUs (nvidia-smi finds at least N) process i sees only GPU i.
# If any process fails, the others are stopped and the script exits non-zero.
set -euo pipefail
if [ $# -lt 1 ] || ! [[ "$1" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 NUM_PROCESSES [entry-point flags...]" >&2
  exit 2
fi
N=$1; shift
cd "$(dirname "$0")/.."
MODULE=${MODULE:-bmdjax.train}
PYTHON=${PYTHON:-python}
PORT=${PORT:-$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
LOG_DIR=${LOG_DIR:-$(mktemp -d -t bmdjax_local.XXXXXX)}
mkdir -p "$LOG_DIR"

GPUS=0
if command -v nvidia-smi >/dev/null 2>&1; then
  GPUS=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
fi
if [ "$GPUS" -ge "$N" ]; then
  echo "local.sh: $N processes, one GPU each, coordinator 127.0.0.1:$PORT, logs in $LOG_DIR"
else
  echo "local.sh: $N processes x ${CPU_DEVICES:-1} CPU device(s), coordinator 127.0.0.1:$PORT, logs in $LOG_DIR"
fi

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap 'cleanup; exit 130' INT TERM

for ((i = 0; i < N; i++)); do
  env_vars=(BMDJAX_COORDINATOR="127.0.0.1:$PORT" BMDJAX_NUM_PROCESSES="$N" BMDJAX_PROCESS_ID="$i")
  if [ "$GPUS" -ge "$N" ]; then
    env_vars+=(CUDA_VISIBLE_DEVICES="$i")
  else
    env_vars+=(JAX_PLATFORMS=cpu
               XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=${CPU_DEVICES:-1}")
  fi
  if [ "$i" -eq 0 ]; then
    env "${env_vars[@]}" "$PYTHON" -m "$MODULE" "$@" &
  else
    env "${env_vars[@]}" "$PYTHON" -m "$MODULE" "$@" >"$LOG_DIR/process_$i.log" 2>&1 &
  fi
  pids+=($!)
done

status=0
running=("${pids[@]}")
while [ ${#running[@]} -gt 0 ] && [ $status -eq 0 ]; do
  still=()
  for pid in "${running[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      still+=("$pid")
    elif ! wait "$pid"; then
      status=1
    fi
  done
  running=("${still[@]+"${still[@]}"}")
  [ ${#running[@]} -gt 0 ] && [ $status -eq 0 ] && sleep 1
done
if [ $status -ne 0 ]; then
  echo "local.sh: a process failed; stopping the others (logs in $LOG_DIR)" >&2
  cleanup
  for ((i = 1; i < N; i++)); do
    echo "--- process $i (last lines of $LOG_DIR/process_$i.log)" >&2
    tail -n 20 "$LOG_DIR/process_$i.log" >&2 || true
  done
fi
wait 2>/dev/null || true
exit $status
