#!/usr/bin/env bash
# slurm/testcluster.sh - a real multi-node Slurm cluster on this one machine, for tests.
#
#   slurm/testcluster.sh up [--nodes N]   start (or health-check) a cluster of N nodes (default 4)
#   slurm/testcluster.sh down             stop everything and delete all state (safe when down)
#   slurm/testcluster.sh status           print daemon health and sinfo; exit 0 if healthy
#   slurm/testcluster.sh env              print the export line for a running cluster
#   slurm/testcluster.sh revive N         bring node nN back after a test took it down
#
# Each node nX is a slurmd in its own network namespace (own veth + address on a bridge),
# its own UTS namespace (hostname nX) and a private copy of the mount namespace in which
# /etc/hosts is a bind mount of our hosts file. The filesystem is shared, so jobs see /work,
# /tmp and the project's venv. slurmctld runs in the host's network namespace on the bridge
# address with hostname "ctl" (own UTS namespace). All state lives under $SFT_CLUSTER_DIR.
#
# Only addresses on the bridge this script creates (10.77.0.0/24) are used. One cluster per
# machine: bridge and namespace names are fixed. Needs root. See slurm/README.md.
set -euo pipefail

CLUSTER_DIR="${SFT_CLUSTER_DIR:-/tmp/sft-launch-cluster}"
MARKER="$CLUSTER_DIR/.sft-launch-cluster"   # proves the folder is ours before we delete it
CONF="$CLUSTER_DIR/slurm.conf"
HOSTS_FILE="$CLUSTER_DIR/hosts"
MUNGE_DIR="$CLUSTER_DIR/munge"
MUNGE_SOCKET="$MUNGE_DIR/sock/munge.socket"
RUN_DIR="$CLUSTER_DIR/run"
LOG_DIR="$CLUSTER_DIR/log"

BRIDGE=sftbr0                 # host side bridge
NS_PREFIX=sft-                # network namespaces: sft-n1, sft-n2, ...
VETH_PREFIX=sftv-             # host end of each node's veth: sftv-n1, ... (<= 15 chars)
NET=10.77.0                   # /24 that exists only on our bridge
CTL_NAME=ctl
CTL_ADDR="$NET.1"             # controller = bridge address
NODE_ADDR_OFFSET=10           # nX -> $NET.(10+X)
MAX_NODES=32

UP_TIMEOUT_PING=30            # seconds to wait for `scontrol ping`
UP_TIMEOUT_NODES=60           # seconds to wait for all nodes idle

log() { printf '[testcluster] %s\n' "$*" >&2; }
die() { printf '[testcluster] ERROR: %s\n' "$*" >&2; exit 1; }

node_addr() { echo "$NET.$((NODE_ADDR_OFFSET + $1))"; }

# Slurm commands must use our config, whatever the caller's environment says.
export SLURM_CONF="$CONF"

# ---------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------

# pid_alive PIDFILE NAME: the pid in PIDFILE is running and its command is NAME.
pid_alive() {
    local pidfile=$1 name=$2 pid
    [[ -s $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$name" ]] || return 1
    # a zombie (state Z, exited but not yet reaped) is not alive
    [[ "$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)" != Z ]]
}

# stop_pidfile PIDFILE NAME: SIGTERM the daemon, wait up to 10 s, then SIGKILL.
stop_pidfile() {
    local pidfile=$1 name=$2 pid i
    pid_alive "$pidfile" "$name" || return 0
    pid=$(<"$pidfile")
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        pid_alive "$pidfile" "$name" || return 0
        sleep 0.1
    done
    log "$name (pid $pid) ignored SIGTERM; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
}

# Number of nodes of the cluster described by the marker file (empty if none).
recorded_nodes() { if [[ -f $MARKER ]]; then sed -n 's/^nodes=//p' "$MARKER"; fi; }

env_line() { echo "export SLURM_CONF=$CONF SFT_CLUSTER_DIR=$CLUSTER_DIR"; }

# ---------------------------------------------------------------------------------------------
# health
# ---------------------------------------------------------------------------------------------

# health [quiet]: 0 when munged, slurmctld and every slurmd run, the controller answers and
# every node is usable (idle, mixed, allocated or completing; not down/drained/unresponsive).
health() {
    local quiet=${1:-} n nodes ok=0 states bad
    say() { [[ -n $quiet ]] || echo "$*"; }
    nodes=$(recorded_nodes)
    if [[ -z $nodes ]]; then say "no cluster recorded in $CLUSTER_DIR"; return 1; fi
    if pid_alive "$RUN_DIR/munged.pid" munged; then say "munged      ok  (pid $(<"$RUN_DIR/munged.pid"))"
    else say "munged      NOT RUNNING"; ok=1; fi
    if pid_alive "$RUN_DIR/slurmctld.pid" slurmctld; then
        say "slurmctld   ok  (pid $(<"$RUN_DIR/slurmctld.pid"), $CTL_NAME $CTL_ADDR)"
    else say "slurmctld   NOT RUNNING"; ok=1; fi
    for ((n = 1; n <= nodes; n++)); do
        if pid_alive "$RUN_DIR/slurmd-n$n.pid" slurmd; then
            say "slurmd n$n  ok  (pid $(<"$RUN_DIR/slurmd-n$n.pid"), $(node_addr "$n"))"
        else say "slurmd n$n  NOT RUNNING"; ok=1; fi
    done
    if ! timeout 5 scontrol ping 2>/dev/null | grep -q 'is UP'; then say "scontrol ping: controller not answering"; return 1; fi
    states=$(timeout 10 sinfo -h -N -o '%N %t' 2>/dev/null | sort -u) || { say "sinfo failed"; return 1; }
    say "--- sinfo -N"
    say "$states"
    # usable states; a trailing * (not responding), ~, #, ! etc. makes it unhealthy
    bad=$(awk '$2 !~ /^(idle|mix|alloc|comp)$/' <<<"$states")
    if [[ -n $bad ]]; then say "unhealthy nodes: $(echo "$bad" | tr '\n' ' ')"; ok=1; fi
    [[ $(wc -l <<<"$states") -eq $nodes ]] || { say "sinfo shows a different node count"; ok=1; }
    return $ok
}

# The steps of `up` (packages, config files, network, daemons) live next door.
# shellcheck source=slurm/testcluster-up.sh
source "$(dirname "$0")/testcluster-up.sh"

cmd_up() {
    local nodes=4 t0=$EPOCHREALTIME have tool
    while (($#)); do
        case $1 in
            --nodes) [[ $# -ge 2 ]] || die "--nodes needs a value"; nodes=$2; shift 2 ;;
            --nodes=*) nodes=${1#--nodes=}; shift ;;
            *) die "up: unknown argument '$1' (usage: up [--nodes N])" ;;
        esac
    done
    if ! [[ $nodes =~ ^[0-9]+$ ]] || ((nodes < 1 || nodes > MAX_NODES)); then
        die "--nodes must be 1..$MAX_NODES, got '$nodes'"
    fi
    [[ $EUID -eq 0 ]] || die "must run as root (network namespaces, bridge, daemons)"
    [[ $CLUSTER_DIR == /* && $CLUSTER_DIR != *[[:space:]]* ]] \
        || die "SFT_CLUSTER_DIR must be an absolute path without spaces, got '$CLUSTER_DIR'"

    # Already up? Then only check health.
    have=$(recorded_nodes)
    if [[ -n $have ]]; then
        if health quiet; then
            [[ $have -eq $nodes ]] || die "a $have-node cluster is already up in $CLUSTER_DIR; run 'down' first"
            log "already up and healthy ($have nodes)"
            env_line
            return 0
        fi
        log "found an unhealthy cluster in $CLUSTER_DIR; tearing it down and starting fresh"
        cmd_down
    elif [[ -e $CLUSTER_DIR ]] && [[ -n "$(ls -A "$CLUSTER_DIR")" ]]; then
        die "$CLUSTER_DIR exists, is not empty and is not a test cluster folder; remove it or set SFT_CLUSTER_DIR"
    fi
    # Leftover bridge/namespaces (e.g. state folder deleted by hand)?
    teardown_network

    install_packages
    for tool in nsenter unshare ip; do
        command -v "$tool" >/dev/null || die "needs nsenter, unshare (util-linux) and ip (iproute2)"
    done

    log "starting a $nodes-node cluster in $CLUSTER_DIR"
    # On failure keep everything for inspection, and say how to clean up.
    trap 'rc=$?; ((rc == 0)) || log "start failed; logs in $LOG_DIR; clean up with: $0 down"' EXIT
    write_files "$nodes"
    setup_network "$nodes"
    start_munged
    start_slurmctld
    start_slurmds "$nodes"
    wait_nodes_idle "$nodes"
    log "up in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f", b - a}') s: nodes n1..n$nodes = $(node_addr 1)..$(node_addr "$nodes"), $CTL_NAME = $CTL_ADDR"
    log "env also in $CLUSTER_DIR/env.sh"
    env_line
}

# ---------------------------------------------------------------------------------------------
# down
# ---------------------------------------------------------------------------------------------

# ns_live_pids NS: processes in a node's network namespace, except zombies (which cannot be
# killed and wait for PID 1 to reap them).
ns_live_pids() {
    local pid
    for pid in $(ip netns pids "$1" 2>/dev/null || true); do
        [[ "$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)" =~ ^[^Z]$ ]] && echo "$pid"
    done
    return 0
}

our_namespaces() { ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^${NS_PREFIX}n[0-9]+$" || true; }

teardown_network() {
    local ns
    for ns in $(our_namespaces); do ip netns del "$ns" 2>/dev/null || true; done  # veths go too
    if ip link show "$BRIDGE" >/dev/null 2>&1; then ip link del "$BRIDGE"; fi
}

cmd_down() {
    local f i
    local -a pids
    [[ $EUID -eq 0 ]] || die "must run as root"
    # 1. node daemons and controller, by their pid files
    for f in "$RUN_DIR"/slurmd-*.pid; do [[ -e $f ]] && stop_pidfile "$f" slurmd; done
    stop_pidfile "$RUN_DIR/slurmctld.pid" slurmctld
    # 2. anything still running inside our node namespaces (slurmstepd, job processes):
    #    SIGTERM, 1 s grace, then SIGKILL (slurmstepd ignores SIGTERM).
    all_ns_pids() { local n; for n in $(our_namespaces); do ns_live_pids "$n"; done; }
    mapfile -t pids < <(all_ns_pids)
    if ((${#pids[@]})); then
        kill -TERM "${pids[@]}" 2>/dev/null || true
        for ((i = 0; i < 10; i++)); do
            [[ -n "$(all_ns_pids)" ]] || break
            sleep 0.1
        done
        mapfile -t pids < <(all_ns_pids)
        ((${#pids[@]} == 0)) || kill -KILL "${pids[@]}" 2>/dev/null || true
    fi
    stop_pidfile "$RUN_DIR/munged.pid" munged
    # 3. network, then state
    teardown_network
    if [[ -f $MARKER ]]; then
        rm -rf "$CLUSTER_DIR"
    elif [[ -d $CLUSTER_DIR ]] && [[ -n "$(ls -A "$CLUSTER_DIR")" ]]; then
        log "not deleting $CLUSTER_DIR: it is not a test cluster folder (no marker)"
    else
        rmdir "$CLUSTER_DIR" 2>/dev/null || true
    fi
    log "down"
}

# ---------------------------------------------------------------------------------------------

cmd_status() {
    if health; then echo "healthy"; env_line; return 0; fi
    echo "NOT healthy (logs: $LOG_DIR)"
    return 1
}

cmd_env() {
    [[ -n "$(recorded_nodes)" ]] || die "no cluster in $CLUSTER_DIR; run 'up' first"
    env_line
}

# revive N: node nN's slurmd started again if it is gone, the node returned to service, idle.
cmd_revive() {
    local n=${1:-} deadline=$((SECONDS + UP_TIMEOUT_NODES))
    [[ $n =~ ^[0-9]+$ ]] && ((n >= 1 && n <= $(recorded_nodes))) || die "revive: no node n$n"
    pid_alive "$RUN_DIR/slurmd-n$n.pid" slurmd || start_slurmd "$n"
    while ((SECONDS < deadline)); do
        case $(timeout 10 sinfo -h -n "n$n" -o '%t' 2>/dev/null) in
            idle) log "n$n is back"; return 0 ;;
            down* | drain* | drng* | fail*) scontrol update nodename="n$n" state=resume 2>/dev/null || true ;;
        esac
        sleep 1
    done
    die "n$n did not come back within ${UP_TIMEOUT_NODES}s; see $LOG_DIR/slurmd-n$n.log"
}

usage() { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; }

case ${1:-} in
    up) shift; cmd_up "$@" ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) cmd_env ;;
    revive) shift; cmd_revive "$@" ;;
    -h | --help | help) usage ;;
    *) usage >&2; exit 2 ;;
esac
