#!/usr/bin/env bash
# Stop the cluster that start-cluster.sh recorded in --state-dir, and nothing else: SIGTERM to
# each of its processes by PID (raylets, then the rest, then the GCS), a grace period for each,
# then SIGKILL to what is left. Never Ray's own stop-all command, which would stop every Ray on the machine.
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
  --grace S          seconds each wave of SIGTERM may take before SIGKILL (default 10)
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

RECORDED="$(verified_pids | tr '\n' ' ')"

members() {
    cluster_pids "$TEMP_DIR" "$GCS_ADDRESS" "$RECORDED"
}

# Those of the given PIDs still alive (a zombie is dead already, only not yet reaped).
still_running() {
    [[ $# -gt 0 ]] || return 0
    ps -o pid=,stat= -p "$(IFS=,; echo "$*")" 2>/dev/null | awk '$2 !~ /^Z/ { print $1 }'
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

# The members whose program (argv[0]) ends with /$1, or with -v, all the others.
select_program() {
    local invert=0
    if [[ "$1" == -v ]]; then invert=1; shift; fi
    local name="$1"; shift
    [[ $# -gt 0 ]] || return 0
    ps -ww -o pid=,args= -p "$(IFS=,; echo "$*")" 2>/dev/null | NAME="/$name" INVERT="$invert" awk '{
        n = length(ENVIRON["NAME"]); hit = substr($2, length($2) - n + 1) == ENVIRON["NAME"]
        if (hit != (ENVIRON["INVERT"] == 1)) print $1 }'
}

# SIGTERM to the given PIDs, then wait up to the grace period; prints those still alive.
terminate() {
    [[ $# -gt 0 ]] || return 0
    kill -TERM "$@" 2>/dev/null
    wait_for_exit "$GRACE" "$@"
}

# Three waves, so that everything can leave cleanly while the GCS still answers: the raylets
# (which stop their own workers), then the other processes (dashboard, monitor, log monitors),
# then the GCS. Sent all at once, the raylets and the autoscaler monitor wait on a GCS that is
# going away, and need SIGKILL.
mapfile -t pids < <(members)
echo "stop-cluster: SIGTERM to ${#pids[@]} processes of the cluster at $GCS_ADDRESS" >&2
mapfile -t left < <(terminate $(select_program raylet "${pids[@]}"))
mapfile -t pids < <(members)
mapfile -t left < <( { printf '%s\n' "${left[@]}"; terminate $(select_program -v gcs_server "${pids[@]}"); } | grep .)
mapfile -t pids < <(members)
mapfile -t left < <( { printf '%s\n' "${left[@]}"; terminate "${pids[@]}"; } | grep .)
# Whatever is left, plus anything started meanwhile (a worker a raylet forked while stopping).
mapfile -t left < <( { printf '%s\n' "${left[@]}"; members; } | grep . | sort -u)
if [[ ${#left[@]} -gt 0 ]]; then
    echo "stop-cluster: SIGKILL to ${#left[@]} processes still running after SIGTERM:" \
        "$(ps -o comm= -p "$(IFS=,; echo "${left[*]}")" | sort | uniq -c | xargs)" >&2
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
