#!/usr/bin/env bash
# Stop the cluster that start-cluster.sh recorded in --state-dir, and nothing else: SIGTERM to
# each of its processes by PID, a grace period, then SIGKILL to what is left. Never `ray stop`,
# which would stop every Ray on the machine.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=infra/local/cluster-lib.sh
source "$HERE/cluster-lib.sh"

usage() {
    cat <<'EOF'
usage: infra/local/stop-cluster.sh --state-dir DIR [--grace S] [--keep-temp-dir]

Stop the processes of the cluster described by DIR/cluster.env (written by start-cluster.sh):
those whose command line names its temp dir or GCS address, the PIDs recorded in DIR/pids
(when their start time still matches), their children, and orphans left in their sessions.

  --state-dir DIR    the folder given to start-cluster.sh (required)
  --grace S          seconds between SIGTERM and SIGKILL (default 10)
  --keep-temp-dir    keep Ray's temp dir (session logs) instead of removing it

example:
  infra/local/stop-cluster.sh --state-dir /tmp/gp-cluster
EOF
}

STATE_DIR=""
GRACE=10
KEEP_TEMP=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --state-dir) STATE_DIR="$2"; shift 2 ;;
        --grace) GRACE="$2"; shift 2 ;;
        --keep-temp-dir) KEEP_TEMP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; echo "stop-cluster: unknown argument: $1" >&2; exit 2 ;;
    esac
done
[[ -n "$STATE_DIR" ]] || { usage >&2; echo "stop-cluster: --state-dir is required" >&2; exit 2; }
[[ "$GRACE" =~ ^[0-9]+$ ]] || { echo "stop-cluster: --grace takes whole seconds" >&2; exit 2; }
if [[ ! -s "$STATE_DIR/cluster.env" ]]; then
    echo "stop-cluster: no cluster recorded in $STATE_DIR (nothing to stop)" >&2
    exit 0
fi

TEMP_DIR="" GCS_ADDRESS="" TEMP_DIR_CREATED=0
# The file holds only NAME=value lines quoted by start-cluster.sh with printf %q.
# shellcheck disable=SC1091
source "$STATE_DIR/cluster.env"
[[ -n "$TEMP_DIR" && -n "$GCS_ADDRESS" ]] || { echo "stop-cluster: $STATE_DIR/cluster.env is incomplete" >&2; exit 1; }

# Recorded PIDs count only while the process with that PID is the one recorded.
verified_pids() {
    [[ -f "$STATE_DIR/pids" ]] || return 0
    local pid w1 w2 w3 w4 w5 rest n1 n2 n3 n4 n5
    while read -r pid w1 w2 w3 w4 w5 rest; do
        [[ "$pid" =~ ^[0-9]+$ ]] || continue
        read -r n1 n2 n3 n4 n5 < <(ps -o lstart= -p "$pid" 2>/dev/null) || continue
        [[ "$n1 $n2 $n3 $n4 $n5" == "$w1 $w2 $w3 $w4 $w5" ]] && echo "$pid"
    done <"$STATE_DIR/pids"
}

members() {
    cluster_pids "$TEMP_DIR" "$GCS_ADDRESS" "$(verified_pids | tr '\n' ' ')"
}

# Those of the given PIDs still alive (a zombie is dead already, only not yet reaped).
still_running() {
    local pid
    for pid in "$@"; do
        [[ "$(ps -o stat= -p "$pid" 2>/dev/null)" =~ ^[^Z] ]] && echo "$pid"
    done
}

# Wait up to $1 seconds for the PIDs that follow to end; prints those still alive.
wait_for_exit() {
    local seconds="$1" tick; shift
    local alive=("$@")
    for (( tick = 0; tick < seconds * 2 && ${#alive[@]} > 0; tick++ )); do
        sleep 0.5
        mapfile -t alive < <(still_running "${alive[@]}")
    done
    [[ ${#alive[@]} -eq 0 ]] || printf '%s\n' "${alive[@]}"
}

mapfile -t pids < <(members)
if [[ ${#pids[@]} -gt 0 ]]; then
    echo "stop-cluster: SIGTERM to ${#pids[@]} processes of the cluster at $GCS_ADDRESS" >&2
    kill -TERM "${pids[@]}" 2>/dev/null
    mapfile -t pids < <(wait_for_exit "$GRACE" "${pids[@]}")
fi
# Whatever is left, plus anything started meanwhile (a worker the raylet forked during shutdown).
mapfile -t left < <( { printf '%s\n' "${pids[@]}"; members; } | grep . | sort -u)
if [[ ${#left[@]} -gt 0 ]]; then
    echo "stop-cluster: SIGKILL to ${#left[@]} processes still running after ${GRACE} s" >&2
    kill -KILL "${left[@]}" 2>/dev/null
    mapfile -t left < <(wait_for_exit 10 "${left[@]}")
fi
mapfile -t survivors < <( { printf '%s\n' "${left[@]}"; members; } | grep . | sort -u)
if [[ ${#survivors[@]} -gt 0 ]]; then
    echo "stop-cluster: still running: ${survivors[*]}" >&2
    exit 1
fi

if [[ "$KEEP_TEMP" == 0 && "$TEMP_DIR_CREATED" == 1 ]]; then rm -rf -- "$TEMP_DIR"; fi
rm -f -- "$STATE_DIR/cluster.env" "$STATE_DIR/pids"
echo "stop-cluster: stopped the cluster at $GCS_ADDRESS" >&2
