#!/usr/bin/env bash
# A throw-away SLURM cluster on this machine: one node for tests/test_slurm.py, or two nodes (two
# slurmd on this one host) for tests/test_slurm_multinode.py.
#
#   tests/slurm/cluster.sh up     [DIR] [NODES]   start munged (unless one answers), slurmctld, slurmd(s)
#   tests/slurm/cluster.sh status [DIR]           exit 0 when the cluster answers and its nodes are usable
#   tests/slurm/cluster.sh down   [DIR]           cancel our jobs, stop the daemons we started
#
# DIR (argument, else $CROSSDIFF_SLURM_DIR, else /tmp/crossdiff-slurm) holds everything: configs,
# state, spool, logs, pid files, the munge key. NODES (argument, else $CROSSDIFF_SLURM_NODES, else 1):
# 1 = one node named after this host; N > 1 = nodes n1..nN, each a slurmd of Debian's
# multiple-slurmd build (`slurmd -N nK`) at 127.0.0.1 with its own port (17001, ...) and %n-named
# spool/pid/log files, each with this host's CPUs, 1/N of its memory and two fake GPUs.
# Idempotent: `up` on a running cluster of the same layout and `down` on a stopped one do nothing;
# `up` with another node count restarts the cluster in DIR with the new layout. Processes are ended
# through the pid files in DIR only.
#
# Needs root (or passwordless sudo: it re-runs itself through `sudo -n`) and Debian's packages:
# apt-get install -y slurm-wlm munge (SLURM 22.05).
# Design (measured, see /work/shared/SLURM-LOCAL.md):
#   - no accounting database: AccountingStorageType=none, so snakemake's SLURM plugin must query job
#     states with `slurm-status-command: squeue`; MinJobAge=300 keeps finished jobs in squeue/scontrol
#     for 5 minutes (the plugin falls back to sacct, and hangs, if MinJobAge < 3 x its initial wait).
#   - what a job asked for (TresPerJob=gres:gpu:N, Comment=rule_<rule>...) is in `scontrol show job`
#     while the job is known (MinJobAge); finished jobs are also logged by jobcomp/filetxt to
#     DIR/log/jobcomp.txt (without slurmdbd, gres/gpu cannot be a tracked TRES, so not GPUs there).
#   - two fake GPUs (gres type "fake"): character devices /dev/null and /dev/zero, AutoDetect=off.
#     Only CUDA_VISIBLE_DEVICES is faked; CUDA code finds no GPU.
#   - slurm.conf and gres.conf are linked from /etc/slurm/ (the plugin clears SLURM_CONF before its
#     inner srun, so the default path must work).
set -euo pipefail

cmd=${1:-}
DIR=${2:-${CROSSDIFF_SLURM_DIR:-/tmp/crossdiff-slurm}}
NODES=${3:-${CROSSDIFF_SLURM_NODES:-1}}
case "$cmd" in up|down|status) ;; *)
    echo "usage: $0 up|down|status [DIR] [NODES]   (DIR defaults to \$CROSSDIFF_SLURM_DIR or /tmp/crossdiff-slurm)" >&2
    exit 2 ;;
esac
[[ $NODES =~ ^[1-9][0-9]*$ ]] || { echo "cluster.sh: NODES must be a positive integer, got '$NODES'" >&2; exit 2; }
# the daemons run as root (slurmd starts each job as its user): a user with passwordless sudo (a CI runner
# that is not root) gets the same cluster through `sudo -n`; its jobs then run as that user
if [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    exec sudo -n CROSSDIFF_SLURM_PARTITION="${CROSSDIFF_SLURM_PARTITION:-debug}" bash "$0" "$cmd" "$DIR" "$NODES"
fi
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd -P)
HOST=$(hostname -s)
PARTITION=${CROSSDIFF_SLURM_PARTITION:-debug}
ETC=/etc/slurm
MUNGE_SOCKET=/run/munge/munge.socket.2

log() { echo "cluster.sh: $*" >&2; }

alive() {  # alive PIDFILE: the process named in PIDFILE runs
    [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

stop_pidfile() {  # stop_pidfile NAME PIDFILE: TERM, wait up to 15 s, then KILL
    local name=$1 pidfile=$2 pid i
    if ! alive "$pidfile"; then rm -f "$pidfile"; return 0; fi
    pid=$(cat "$pidfile")
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        log "$name (pid $pid) ignored SIGTERM, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
    log "stopped $name (pid $pid)"
}

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

controller_ok() { timeout 10 scontrol ping 2>/dev/null | grep -q "is UP"; }

node_names() {  # the node names of NODES
    if [[ $NODES -eq 1 ]]; then echo "$HOST"; else seq -f "n%g" 1 "$NODES"; fi
}

node_state() { timeout 10 sinfo -h -n "$1" -o %T 2>/dev/null | head -n1; }

slurmd_pidfile() {  # slurmd_pidfile NODE
    if [[ $NODES -eq 1 ]]; then echo "$DIR/run/slurmd.pid"; else echo "$DIR/run/slurmd-$1.pid"; fi
}

usable() { case "$1" in idle*|mixed*|allocated*|completing*) return 0 ;; *) return 1 ;; esac; }

# the node count of the cluster configured in DIR (0: none)
configured_nodes() { grep -c '^NodeName=' "$DIR/etc/slurm.conf" 2>/dev/null || true; }

# a link in /etc/slurm that we may (re)place: absent, ours, or left by a cluster that no longer runs
link_free() {
    local link=$1 target pidfile
    [[ -e "$link" || -L "$link" ]] || return 0
    if [[ ! -L "$link" ]]; then
        log "$link is a regular file (a real SLURM configuration?): not touching it"; return 1
    fi
    target=$(readlink "$link")
    [[ "$target" == "$DIR/etc/"* ]] && return 0
    [[ -e "$target" ]] || return 0
    pidfile=$(sed -n 's/^SlurmctldPidFile=//p' "$(dirname "$target")/slurm.conf" 2>/dev/null || true)
    if [[ -n "$pidfile" ]] && alive "$pidfile"; then
        log "$link points to $target, a cluster that is running: stop it first ($0 down $(dirname "$(dirname "$target")"))"
        return 1
    fi
    return 0
}

write_configs() {
    local mem spool=spool slurmd_pid=slurmd.pid slurmd_log=slurmd.log n k=0
    # what slurmd will find, less 1 GiB for the system (slurmd drains a node that promises more),
    # shared by the nodes
    mem=$(( ($(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo) - 1024) / NODES ))
    if [[ $NODES -gt 1 ]]; then spool=spool/%n slurmd_pid=slurmd-%n.pid slurmd_log=slurmd-%n.log; fi
    mkdir -p "$DIR"/{etc,state,spool,log,run,munge}
    cat > "$DIR/etc/slurm.conf" <<EOF
# generated by tests/slurm/cluster.sh: $NODES-node test cluster in $DIR
ClusterName=crossdiff-test
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/$spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/$slurmd_pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/$slurmd_log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
# finished jobs stay visible to squeue/scontrol for 5 minutes (the snakemake plugin's squeue
# status check depends on it)
MinJobAge=300
KillWait=5
InactiveLimit=0
MailProg=/bin/true
# no accounting database: job states come from squeue; finished jobs are logged to a text file
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.txt
# without a default, a job with no --mem takes the whole node and jobs run one at a time
DefMemPerCPU=1024
GresTypes=gpu
EOF
    for n in $(node_names); do
        k=$((k + 1))
        if [[ $NODES -eq 1 ]]; then
            echo "NodeName=$HOST CPUs=$(nproc) RealMemory=$mem Gres=gpu:fake:2 State=UNKNOWN"
        else  # multiple-slurmd mode: every node is this host, with its own port
            echo "NodeName=$n NodeHostname=$HOST NodeAddr=127.0.0.1 Port=$((17000 + k)) CPUs=$(nproc) RealMemory=$mem Gres=gpu:fake:2 State=UNKNOWN"
        fi
    done >> "$DIR/etc/slurm.conf"
    echo "PartitionName=$PARTITION Nodes=$(node_names | paste -sd, -) Default=YES MaxTime=INFINITE State=UP" >> "$DIR/etc/slurm.conf"
    {
        echo "# two fake GPUs per node: SLURM needs a character device per GPU; nothing here is a real GPU"
        echo "AutoDetect=off"
        for n in $(node_names); do
            echo "NodeName=$n Name=gpu Type=fake File=/dev/null"
            echo "NodeName=$n Name=gpu Type=fake File=/dev/zero"
        done
    } > "$DIR/etc/gres.conf"
}

up() {
    [[ $(id -u) -eq 0 ]] || { log "must run as root, or as a user with passwordless sudo (slurmd runs jobs as their users)"; exit 1; }
    for exe in munged munge slurmctld slurmd sbatch; do
        command -v "$exe" >/dev/null || { log "$exe not found: apt-get install -y slurm-wlm munge"; exit 1; }
    done
    if ! getent hosts "$HOST" >/dev/null; then
        echo "127.0.0.1 $HOST" >> /etc/hosts
        log "added '127.0.0.1 $HOST' to /etc/hosts"
    fi
    link_free "$ETC/slurm.conf" && link_free "$ETC/gres.conf" || exit 1
    local had want=$NODES
    had=$(configured_nodes)
    if [[ ${had:-0} -ne 0 && $had -ne $want ]] && alive "$DIR/run/slurmctld.pid"; then
        log "the cluster in $DIR runs $had node(s): restarting it with $want"
        NODES=$had; down; NODES=$want
        rm -rf "$DIR/state" "$DIR/spool"
    fi
    write_configs
    mkdir -p "$ETC"
    ln -sfn "$DIR/etc/slurm.conf" "$ETC/slurm.conf"
    ln -sfn "$DIR/etc/gres.conf" "$ETC/gres.conf"

    # munge: reuse one that answers on the default socket (slurmdbd and the clients use that socket)
    if ! munge_ok; then
        if [[ ! -s "$DIR/munge/munge.key" ]]; then
            dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
        fi
        chmod 700 "$DIR/munge"; chmod 600 "$DIR/munge/munge.key"
        mkdir -p "$(dirname "$MUNGE_SOCKET")"
        munged --force --key-file="$DIR/munge/munge.key" --pid-file="$DIR/run/munged.pid" \
            --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed"
        for _ in $(seq 50); do munge_ok && break; sleep 0.1; done
        munge_ok || { log "munged did not answer; see $DIR/log/munged.log"; exit 1; }
        log "started munged (pid $(cat "$DIR/run/munged.pid"))"
    fi

    if ! alive "$DIR/run/slurmctld.pid"; then
        slurmctld
        log "started slurmctld"
    fi
    for _ in $(seq 100); do controller_ok && break; sleep 0.2; done
    controller_ok || { log "slurmctld does not answer; see $DIR/log/slurmctld.log"; exit 1; }
    local n state ok=0
    for n in $(node_names); do
        if ! alive "$(slurmd_pidfile "$n")"; then
            if [[ $NODES -eq 1 ]]; then slurmd; else slurmd -N "$n"; fi
            log "started slurmd ($n)"
        fi
    done
    for _ in $(seq 150); do
        ok=1
        for n in $(node_names); do
            state=$(node_state "$n")
            usable "$state" && continue
            ok=0
            case "$state" in down*|drain*|fail*) scontrol update NodeName="$n" State=RESUME 2>/dev/null || true ;; esac
        done
        [[ $ok -eq 1 ]] && break
        sleep 0.2
    done
    if [[ $ok -eq 1 ]]; then
        log "up: $NODES node(s) ($(node_names | paste -sd' ' -)), partition $PARTITION, 2 fake GPUs each, dir $DIR"
    else
        log "node(s) not usable: $(timeout 10 sinfo -h -N -o '%N=%T' 2>/dev/null | paste -sd' ' -); see $DIR/log"
        exit 1
    fi
}

down() {
    if alive "$DIR/run/slurmctld.pid"; then
        # our own jobs first, so that no job step outlives its slurmd
        scancel --user="$(id -un)" 2>/dev/null || true
        [[ -z ${SUDO_USER:-} ]] || scancel --user="$SUDO_USER" 2>/dev/null || true
        for _ in $(seq 100); do
            [[ -z "$(squeue -h -t RUNNING,PENDING,COMPLETING,CONFIGURING -o %i 2>/dev/null)" ]] && break
            sleep 0.2
        done
    fi
    local pidfile
    for pidfile in "$DIR"/run/slurmd.pid "$DIR"/run/slurmd-*.pid; do
        [[ -e $pidfile ]] && stop_pidfile "$(basename "$pidfile" .pid)" "$pidfile"
    done
    stop_pidfile slurmctld "$DIR/run/slurmctld.pid"
    stop_pidfile munged "$DIR/run/munged.pid"
    local link
    for link in "$ETC/slurm.conf" "$ETC/gres.conf"; do
        if [[ -L "$link" && $(readlink "$link") == "$DIR/etc/"* ]]; then rm -f "$link"; fi
    done
    log "down ($DIR kept: logs in $DIR/log)"
}

status() {
    local rc=0 name n daemons="munged slurmctld"
    NODES=$(configured_nodes); [[ ${NODES:-0} -ge 1 ]] || NODES=1
    if [[ $NODES -eq 1 ]]; then daemons+=" slurmd"; else for n in $(node_names); do daemons+=" slurmd-$n"; done; fi
    for name in $daemons; do
        if alive "$DIR/run/$name.pid"; then
            echo "$name: running (pid $(cat "$DIR/run/$name.pid"))"
        elif [[ $name == munged ]] && munge_ok; then
            echo "munged: not ours, but one answers on $MUNGE_SOCKET"
        else
            echo "$name: not running"; rc=1
        fi
    done
    if [[ $rc -eq 0 ]]; then
        local state
        for n in $(node_names); do
            state=$(node_state "$n")
            echo "node $n: ${state:-unknown}"
            usable "$state" || rc=1
        done
        timeout 10 squeue 2>/dev/null || true
    fi
    return $rc
}

"$cmd"
