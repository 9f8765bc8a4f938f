#!/usr/bin/env bash
# tests/e2e/run.sh [PYTEST ARGS...] -- the end-to-end suite on a real SkyPilot backend (a local
# Slurm cluster, tests/e2e/harness/), from a clean machine state back to a clean one.
#
#   bash tests/e2e/run.sh                 # every e2e test
#   bash tests/e2e/run.sh -k train        # some of them
#
# Needs root and apt (the harness installs Slurm, creates a user, starts daemons) and the
# project venv (PYTHON, default .venv/bin/python) with the `slurm` extra; it is added here
# when missing. The pytest fixture brings the cluster up and down; this script stops it again
# on any exit -- a failure, Ctrl-C, or a SIGTERM from a CI timeout -- so nothing it started
# keeps running. VOPS_E2E_KEEP=1 keeps the cluster up for the next run (then down.sh by hand).
set -uo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-.venv/bin/python}
export VOPS_E2E=1
export VOPS_E2E_BASE=${VOPS_E2E_BASE:-/tmp/vops-e2e}
VENV=$("$PYTHON" -c 'import sys; print(sys.prefix)')
log() { printf '[e2e %s] %s\n' "$(date +%T)" "$*" >&2; }

# SkyPilot's Slurm client side (grpcio, python-hostlist): without them a cancelled allocation
# is never recovered.
missing=$("$PYTHON" -c 'import importlib.util as u; print(" ".join(m for m in ("grpc", "hostlist") if u.find_spec(m) is None))')
if [ -n "$missing" ]; then
  version=$("$PYTHON" -c 'import importlib.metadata as m; print(m.version("skypilot"))')
  log "installing skypilot[slurm]==$version (missing: $missing)"
  "$PYTHON" -m pip install -q "skypilot[slurm]==$version" || exit 1
fi

pytest_pid=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$pytest_pid" ] && kill -0 "$pytest_pid" 2>/dev/null; then
    log "stopping pytest (pid $pytest_pid)"
    kill -TERM "$pytest_pid" 2>/dev/null
    for _ in $(seq 1 20); do kill -0 "$pytest_pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$pytest_pid" 2>/dev/null
  fi
  # The fixture ran down.sh unless pytest was killed (down.sh renames BASE/pids when done).
  if [ "${VOPS_E2E_KEEP:-0}" != 1 ] && [ -f "$VOPS_E2E_BASE/pids" ]; then
    log "cluster still up: tests/e2e/harness/down.sh $VOPS_E2E_BASE"
    bash tests/e2e/harness/down.sh "$VOPS_E2E_BASE" "$VENV" || rc=1
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# In the background, so a signal to this script is handled at once (bash runs traps only
# between foreground commands).
"$PYTHON" -m pytest tests/e2e -m e2e -p no:cacheprovider "$@" &
pytest_pid=$!
wait "$pytest_pid"
rc=$?
pytest_pid=""
exit "$rc"
