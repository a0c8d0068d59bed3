#!/usr/bin/env bash
# Start a multi-node Ray cluster on this one machine: a head and N workers, each node on its own
# loopback address (127.0.0.3, .4, ...), with its own port block and a bounded object store.
# Everything it starts is recorded in --state-dir; infra/local/stop-cluster.sh stops exactly that.
set -Eeuo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=infra/local/cluster-lib.sh
source "$HERE/cluster-lib.sh"

usage() {
    cat <<'EOF'
usage: infra/local/start-cluster.sh --state-dir DIR [options]

Start a Ray head and N worker nodes on this machine, for tests and demos of multi-node runs.

  --state-dir DIR          where cluster.env, pids and the node logs go (required)
  --workers N              worker nodes besides the head (default 1)
  --head-ip IP             head node address (default 127.0.0.3); worker k gets the k-th next one
  --gcs-port P             GCS port on the head (default 6479)
  --dashboard-port P       dashboard and job server, bound on 127.0.0.1 (default 8275)
  --port-base B            first port of this cluster's other ports (default 26000):
                           B+2 Ray client server; B+10*(k+1)+0..5 node k's fixed ports;
                           B+200+k*W .. +W-1 node k's worker ports
  --worker-ports W         worker ports per node (default 200)
  --num-cpus N             logical CPUs per node (default 1)
  --object-store-mb MB     object store per node (default 256)
  --worker-num-gpus N      logical GPUs on the first worker (default 0)
  --worker-resources JSON  custom resources on the first worker, e.g. '{"gpu_node": 1}'
  --temp-dir DIR           the cluster's temp dir, node k uses DIR/nk (default: a new
                           /tmp/gpc-XXXXXX; at most 36 characters, as Ray's socket paths
                           inside it must stay under 107)
  --ray PATH               the ray executable (default: `ray` on PATH); jobs run with the
                           python next to it
  --timeout S              seconds to wait for all nodes and the job server (default 120)

RAY_AUTH_MODE is pinned to "disabled" unless already set; head, workers and every
driver or `ray job` call must use the same value. With RAY_AUTH_MODE=token, the nodes take the
token from RAY_AUTH_TOKEN (or the file at RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token).

example:
  infra/local/start-cluster.sh --state-dir /tmp/gp-cluster --workers 2 --object-store-mb 300
  RAY_AUTH_MODE=disabled ghostnet-pipeline submit --address http://127.0.0.1:8275 -- run ...
  infra/local/stop-cluster.sh --state-dir /tmp/gp-cluster
EOF
}

die() { echo "start-cluster: $*" >&2; exit 2; }

STATE_DIR=""
WORKERS=1
HEAD_IP=127.0.0.3
GCS_PORT=6479
DASHBOARD_PORT=8275
PORT_BASE=26000
WORKER_PORTS=200
NUM_CPUS=1
OBJECT_STORE_MB=256
WORKER_GPUS=0
WORKER_RESOURCES=""
TEMP_DIR=""
RAY_BIN=""
TIMEOUT=120

while [[ $# -gt 0 ]]; do
    case "$1" in
        --state-dir) STATE_DIR="$2"; shift 2 ;;
        --workers) WORKERS="$2"; shift 2 ;;
        --head-ip) HEAD_IP="$2"; shift 2 ;;
        --gcs-port) GCS_PORT="$2"; shift 2 ;;
        --dashboard-port) DASHBOARD_PORT="$2"; shift 2 ;;
        --port-base) PORT_BASE="$2"; shift 2 ;;
        --worker-ports) WORKER_PORTS="$2"; shift 2 ;;
        --num-cpus) NUM_CPUS="$2"; shift 2 ;;
        --object-store-mb) OBJECT_STORE_MB="$2"; shift 2 ;;
        --worker-num-gpus) WORKER_GPUS="$2"; shift 2 ;;
        --worker-resources) WORKER_RESOURCES="$2"; shift 2 ;;
        --temp-dir) TEMP_DIR="$2"; shift 2 ;;
        --ray) RAY_BIN="$2"; shift 2 ;;
        --timeout) TIMEOUT="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

[[ -n "$STATE_DIR" ]] || { usage >&2; die "--state-dir is required"; }
for value in "$WORKERS" "$GCS_PORT" "$DASHBOARD_PORT" "$PORT_BASE" "$WORKER_PORTS" "$NUM_CPUS" \
             "$OBJECT_STORE_MB" "$WORKER_GPUS" "$TIMEOUT"; do
    [[ "$value" =~ ^[0-9]+$ ]] || die "expected a whole number, got '$value'"
done
[[ "$HEAD_IP" =~ ^127\.([0-9]+)\.([0-9]+)\.([0-9]+)$ ]] || die "--head-ip must be a 127.x.y.z address"
# Ray replaces 127.0.0.1 with the machine's primary address, which would take traffic off loopback.
[[ "$HEAD_IP" != 127.0.0.1 ]] || die "--head-ip 127.0.0.1 is rewritten by Ray; use 127.0.0.3 or another"
(( ${BASH_REMATCH[3]} + WORKERS <= 254 )) || die "not enough addresses after $HEAD_IP for $WORKERS workers"

RAY_BIN="${RAY_BIN:-$(command -v ray || true)}"
[[ -x "$RAY_BIN" ]] || die "no ray executable (install ray[default] or pass --ray PATH)"
RAY_BIN="$(cd "$(dirname "$RAY_BIN")" && pwd)/$(basename "$RAY_BIN")"
# The job supervisor runs entrypoints such as `python -m jobs.run` through a shell with the
# node's PATH, so the python next to this ray must come first.
export PATH="$(dirname "$RAY_BIN"):$PATH"
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}"
export RAY_USAGE_STATS_ENABLED=0

mkdir -p "$STATE_DIR"
STATE_DIR="$(cd "$STATE_DIR" && pwd)"
if [[ -s "$STATE_DIR/cluster.env" ]]; then
    die "$STATE_DIR already describes a cluster; stop it first: $HERE/stop-cluster.sh --state-dir $STATE_DIR"
fi
TEMP_DIR_CREATED=0
if [[ -z "$TEMP_DIR" ]]; then
    TEMP_DIR="$(mktemp -d /tmp/gpc-XXXXXX)"
    TEMP_DIR_CREATED=1
else
    mkdir -p "$TEMP_DIR"
    TEMP_DIR="$(cd "$TEMP_DIR" && pwd)"
fi
(( ${#TEMP_DIR} <= 36 )) || die "--temp-dir $TEMP_DIR is too long for Ray's socket paths (36 characters at most)"

node_ip() {
    local prefix="${HEAD_IP%.*}" last="${HEAD_IP##*.}"
    echo "$prefix.$(( last + $1 ))"
}

NODE_IPS=""
for (( k = 0; k <= WORKERS; k++ )); do NODE_IPS+="$(node_ip "$k") "; done
GCS_ADDRESS="$HEAD_IP:$GCS_PORT"
DASHBOARD_URL="http://127.0.0.1:$DASHBOARD_PORT"

# Written before anything starts, so that a half-started cluster can still be stopped.
{
    printf 'TEMP_DIR=%q\n' "$TEMP_DIR"
    printf 'TEMP_DIR_CREATED=%q\n' "$TEMP_DIR_CREATED"
    printf 'GCS_ADDRESS=%q\n' "$GCS_ADDRESS"
    printf 'DASHBOARD_URL=%q\n' "$DASHBOARD_URL"
    printf 'NODE_IPS=%q\n' "${NODE_IPS% }"
    printf 'RAY_AUTH_MODE=%q\n' "$RAY_AUTH_MODE"
    printf 'RAY_BIN=%q\n' "$RAY_BIN"
} >"$STATE_DIR/cluster.env"
: >"$STATE_DIR/pids"

on_error() {
    echo "start-cluster: failed; stopping what was started (node logs in $STATE_DIR)" >&2
    "$HERE/stop-cluster.sh" --state-dir "$STATE_DIR" >&2 || true
}
trap on_error ERR

node_ports() {
    local k="$1" fixed=$(( PORT_BASE + 10 * (k + 1) )) workers=$(( PORT_BASE + 200 + k * WORKER_PORTS ))
    echo --node-manager-port=$fixed --object-manager-port=$(( fixed + 1 )) \
         --metrics-export-port=$(( fixed + 2 )) --dashboard-agent-listen-port=$(( fixed + 3 )) \
         --dashboard-agent-grpc-port=$(( fixed + 4 )) --runtime-env-agent-port=$(( fixed + 5 )) \
         --min-worker-port=$workers --max-worker-port=$(( workers + WORKER_PORTS - 1 ))
}

start_node() {
    local k="$1"; shift
    local log="$STATE_DIR/node-$k.log"
    # Each node gets a temp dir of its own, as on separate machines: nodes sharing one would share
    # runtime_resources/, and one node's cleanup would delete the working_dir a job runs in on
    # another (the driver's cwd vanishes mid-run).
    # setsid gives each node's processes a session of their own; stop-cluster.sh uses it to find
    # processes that outlived their parent.
    # shellcheck disable=SC2046
    if ! setsid --wait "$RAY_BIN" start "$@" --node-ip-address="$(node_ip "$k")" \
            --num-cpus="$NUM_CPUS" --object-store-memory=$(( OBJECT_STORE_MB * 1024 * 1024 )) \
            --temp-dir="$TEMP_DIR/n$k" $(node_ports "$k") --disable-usage-stats >"$log" 2>&1; then
        tail -n 20 "$log" >&2
        echo "start-cluster: node $k ($(node_ip "$k")) did not start; log: $log" >&2
        return 1
    fi
}

record_pids() {
    # PID, its start time (to tell it from a later process that reuses the number), command.
    describe_pids $(cluster_pids "$TEMP_DIR" "$GCS_ADDRESS" "") >"$STATE_DIR/pids"
}

started=$SECONDS
start_node 0 --head --port="$GCS_PORT" --num-gpus=0 --include-dashboard=true \
    --dashboard-host=127.0.0.1 --dashboard-port="$DASHBOARD_PORT" \
    --ray-client-server-port=$(( PORT_BASE + 2 ))
record_pids
for (( k = 1; k <= WORKERS; k++ )); do
    extra=(--num-gpus="$([[ $k == 1 ]] && echo "$WORKER_GPUS" || echo 0)")
    if [[ $k == 1 && -n "$WORKER_RESOURCES" ]]; then extra+=(--resources="$WORKER_RESOURCES"); fi
    start_node "$k" --address="$GCS_ADDRESS" "${extra[@]}"
    record_pids
done

# Wait until the job server answers and every node has registered as alive.
PYTHON="$(dirname "$RAY_BIN")/python"
[[ -x "$PYTHON" ]] || PYTHON=python3
if ! "$PYTHON" - "$DASHBOARD_URL" $(( WORKERS + 1 )) "$TIMEOUT" <<'EOF'
import json, os, pathlib, sys, time, urllib.request

url, want, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
headers = {}
if os.environ.get("RAY_AUTH_MODE") == "token":  # the token from where Ray's own clients take it
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or pathlib.Path.home() / ".ray" / "auth_token"
    token = os.environ.get("RAY_AUTH_TOKEN") or pathlib.Path(path).read_text().strip()
    headers["Authorization"] = f"Bearer {token}"
deadline, alive, last_error = time.monotonic() + timeout, 0, ""
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(urllib.request.Request(url + "/api/version", headers=headers), timeout=5) as r:
            r.read()
        with urllib.request.urlopen(urllib.request.Request(url + "/nodes?view=summary", headers=headers),
                                    timeout=5) as r:
            nodes = json.load(r)["data"]["summary"]
        alive = sum(1 for n in nodes if n.get("raylet", {}).get("state") == "ALIVE")
        if alive >= want:
            sys.exit(0)
    except (OSError, ValueError, KeyError) as exc:
        last_error = str(exc)
    time.sleep(1)
print(f"start-cluster: {alive}/{want} nodes alive after {timeout:.0f} s {last_error}", file=sys.stderr)
sys.exit(1)
EOF
then
    false
fi
record_pids
trap - ERR

cat <<EOF
Ray cluster up in $(( SECONDS - started )) s: $(( WORKERS + 1 )) nodes ($NODE_IPS), $NUM_CPUS CPU and ${OBJECT_STORE_MB} MB object store each
  GCS address:  $GCS_ADDRESS        (drivers: RAY_ADDRESS=$GCS_ADDRESS)
  job server:   $DASHBOARD_URL   (ghostnet-pipeline submit --address $DASHBOARD_URL -- ...)
  auth mode:    RAY_AUTH_MODE=$RAY_AUTH_MODE (use the same for drivers and ray job)
  temp dir:     $TEMP_DIR
  stop with:    $HERE/stop-cluster.sh --state-dir $STATE_DIR
EOF
