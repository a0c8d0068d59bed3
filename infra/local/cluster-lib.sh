# Sourced by start-cluster.sh and stop-cluster.sh: which processes belong to one local cluster.
#
# A process is the cluster's when its command line names the cluster's private temp dir or its
# GCS address, when start-cluster.sh recorded its PID (and the start time still matches), when
# it descends from such a process, or when it shares the session of one whose session leader is
# gone (the `ray start` that setsid made a leader has exited; its orphans keep the session id).
# Never by process name. This shell and its ancestors are never included.

# "PID PPID SID STAT ARGS" for every process except this shell and its ancestors. The patterns reach
# awk through its environment, so awk's own command line never matches them.
process_table() {
    local exclude=" " p=$$
    while [[ -n "$p" && "$p" -gt 1 ]]; do
        exclude+="$p "
        p="$(ps -o ppid= -p "$p" 2>/dev/null | tr -d ' ')"
    done
    ps -ww -eo pid=,ppid=,sid=,stat=,args= | EXCLUDE="$exclude" awk '
        index(ENVIRON["EXCLUDE"], " " $1 " ") == 0 { print }'
}

# "PID START ARGS" (START as ps lstart) for each PID given, one per line.
describe_pids() {
    local list
    list="$(echo "$@" | tr -s ' \n' ',')"
    list="${list#,}"
    [[ -n "${list%,}" ]] || return 0
    ps -ww -o pid=,lstart=,args= -p "${list%,}" 2>/dev/null || true
}

# PIDs of every process of the cluster with temp dir $1, GCS address $2, recorded PIDs $3
# (a space-separated list already checked against their start times).
cluster_pids() {
    process_table | CLUSTER_TEMP_DIR="$1" CLUSTER_GCS="$2" RECORDED=" $3 " MY_SID="$(ps -o sid= -p $$ | tr -d ' ')" \
        awk "$NAMES_CLUSTER_AWK"'
        {
            pid = $1; ppid[pid] = $2; sid[pid] = $3; alive[pid] = 1
            if ($4 ~ /^Z/) zombie[pid] = 1  # already dead, waiting to be reaped
            if (names_cluster($0) || index(ENVIRON["RECORDED"], " " pid " ")) ours[pid] = 1
        }
        END {
            for (p in ours) if (sid[p] != ENVIRON["MY_SID"]) session[sid[p]] = 1
            # A session whose leader still runs and is not ours (a login shell, a test runner)
            # belongs to somebody else: leave it alone.
            for (s in session) if ((s in alive) && !(s in ours)) delete session[s]
            for (p in alive) if (sid[p] in session) ours[p] = 1
            do {
                grew = 0
                for (p in alive) if (!(p in ours) && (ppid[p] in ours)) { ours[p] = 1; grew = 1 }
            } while (grew)
            for (p in ours) if (!(p in zombie)) print p
        }'
}

# awk: names_cluster(line) is true when the line holds the temp dir ENVIRON["CLUSTER_TEMP_DIR"]
# or the GCS address ENVIRON["CLUSTER_GCS"] as a whole word: /tmp/gpc-ab1 is not /tmp/gpc-ab12,
# and 127.0.0.3:6479 is not 127.0.0.3:64790.
NAMES_CLUSTER_AWK='
function holds(s, a, bad_next,   i, c) {
    if (a == "") return 0
    while ((i = index(s, a)) > 0) {
        c = substr(s, i + length(a), 1)
        if (c !~ bad_next) return 1
        s = substr(s, i + length(a))
    }
    return 0
}
function names_cluster(s) {
    return holds(s, ENVIRON["CLUSTER_TEMP_DIR"], "[A-Za-z0-9._-]") || holds(s, ENVIRON["CLUSTER_GCS"], "[0-9]")
}
'
