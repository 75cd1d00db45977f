#!/usr/bin/env bash
# N jaxmedgan processes on this machine, each with D simulated CPU devices, coordinator on localhost.
#   NUM_PROCESSES=2 DEVICES_PER_PROCESS=4 launch/local_multiprocess.sh train --config configs/acgan_liver.py --workdir runs/mp
# Every process runs the same command; process 0 writes logs, samples and metrics; all of them
# take part in checkpointing. Exits non-zero if any process fails (and stops the others).
set -euo pipefail
N=${NUM_PROCESSES:-2}
D=${DEVICES_PER_PROCESS:-4}
PORT=${COORDINATOR_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
PYTHON=${PYTHON:-python3}
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
for ((i = 0; i < N; i++)); do
  XLA_FLAGS="--xla_force_host_platform_device_count=$D ${XLA_FLAGS_EXTRA:-}" JAX_PLATFORMS=cpu \
    "$PYTHON" -m jaxmedgan.main "$@" --coordinator "127.0.0.1:$PORT" --num-processes "$N" --process-id "$i" &
  pids+=($!)
done
status=0
for p in "${pids[@]}"; do
  if ! wait "$p"; then status=1; cleanup; fi
done
trap - EXIT
exit $status
