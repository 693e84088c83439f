#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for testing the workflow's SLURM profile end to end.
#
#   tools/slurm/local-cluster.sh up       install (if missing), configure and start; waits until the node is idle
#   tools/slurm/local-cluster.sh down     cancel its jobs and stop exactly the daemons `up` started
#   tools/slurm/local-cluster.sh status   which daemons run, and sinfo
#   tools/slurm/local-cluster.sh env      the line to source so sbatch/sinfo/snakemake talk to this cluster
#   tools/slurm/local-cluster.sh purge    down, remove its state folder and the packages `up` installed
#
# Run as root (Debian/Ubuntu with apt; no systemd needed: the daemons are started directly). Everything lives in
# one state folder ($STITCHLIB_SLURM_STATE, default /var/lib/stitchlib-slurm): its own slurm.conf, slurmdbd.conf,
# cgroup.conf and gres.conf, its own munge key and munged socket, its own MariaDB data folder and socket (no TCP),
# and SLURM ports 16817-16819 on 127.0.0.1; a system munge or MariaDB is left alone. Clients find the cluster through
# SLURM_CONF (see `env`), except the `srun` that the SLURM executor runs inside each job: its plugin strips every
# SLURM_* variable first, so `up` also links /etc/slurm/slurm.conf to this cluster's (refusing if another
# slurm.conf is there) and `down` removes that link.
#
# The node is named after the host (hostname -s) with the CPUs and memory `slurmd -C` reports, in partition
# "debug" (the default), with accounting through slurmdbd + MariaDB, so sacct works (the SLURM executor plugin
# reads job states with sacct). It declares $STITCHLIB_SLURM_GPUS (default: one per CPU) GPUs as a generic resource
# without devices, so that jobs asking `--gpus=1` (the profile's `gpu: 1`) are scheduled as on a real GPU cluster;
# no CUDA device exists, and stitchlib then runs those jobs on the CPU. STITCHLIB_SLURM_GPUS=0 declares none.
# `up` is idempotent: when every daemon already runs it only waits for the node.

set -euo pipefail

STATE=${STITCHLIB_SLURM_STATE:-/var/lib/stitchlib-slurm}
ETC=$STATE/etc
RUN=$STATE/run
LOG=$STATE/log
CLUSTER=stitchlib
PARTITION=debug
NODE=$(hostname -s)
PACKAGES=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server)
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)   # start order; stopped in reverse
export SLURM_CONF=$ETC/slurm.conf
export MYSQL_UNIX_PORT=$RUN/mysql/mysqld.sock          # libmariadb's default socket: slurmdbd connects here

say() { echo "local-cluster: $*" >&2; }
die() { say "error: $*"; exit 1; }

pidfile() {
    case $1 in
        munged) echo "$RUN/munge/munged.pid" ;;
        mariadbd) echo "$RUN/mysql/mysqld.pid" ;;
        *) echo "$RUN/$1.pid" ;;
    esac
}

# The PID of a daemon this script started, if that process still runs (and is the same program).
running_pid() {
    local f pid
    f=$(pidfile "$1")
    [[ -s $f ]] || return 1
    pid=$(tr -dc 0-9 <"$f")
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$1"* ]] || return 1
    echo "$pid"
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local limit=$1 what=$2 t0=$SECONDS
    shift 2
    until "$@" >/dev/null 2>&1; do
        ((SECONDS - t0 < limit)) || return 1
        sleep 0.5
    done
}

install_packages() {
    local missing=()
    command -v munged >/dev/null || missing+=(munge)
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v sbatch >/dev/null && command -v sacct >/dev/null || missing+=(slurm-client)
    command -v slurmdbd >/dev/null || missing+=(slurmdbd)
    command -v mariadbd >/dev/null && command -v mariadb-install-db >/dev/null || missing+=(mariadb-server)
    ((${#missing[@]})) || return 0
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
    say "installing ${missing[*]} with apt-get"
    mkdir -p "$STATE"
    export DEBIAN_FRONTEND=noninteractive
    # Package scripts must not start the system's own munge/MariaDB/SLURM services: a policy-rc.d that says no,
    # for the length of the install, unless the machine already has one.
    local policy=/usr/sbin/policy-rc.d ours=0
    if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && ours=1; fi
    local ok=0
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$STATE/apt.log" 2>&1 && ok=1
    if ((!ok)); then  # package lists missing or stale on a fresh machine
        apt-get update -qq >>"$STATE/apt.log" 2>&1 || true
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$STATE/apt.log" 2>&1 && ok=1
    fi
    ((ours)) && rm -f "$policy"
    ((ok)) || { tail -20 "$STATE/apt.log" >&2; die "apt-get install failed (log: $STATE/apt.log)"; }
    printf '%s\n' "${missing[@]}" >>"$STATE/installed-packages"
}

write_configs() {
    mkdir -p "$ETC" "$RUN" "$LOG" "$STATE/spool/ctld" "$STATE/spool/d"
    # The node's hardware as slurmd sees it; memory rounded down a little so the node never drains as too small.
    local hw cpus boards sockets cores threads mem gpus
    hw=$(slurmd -C | head -1)
    field() { sed -n "s/.*\b$1=\([0-9]*\).*/\1/p" <<<"$hw"; }
    cpus=$(field CPUs) boards=$(field Boards) sockets=$(field SocketsPerBoard) cores=$(field CoresPerSocket)
    threads=$(field ThreadsPerCore) mem=$(field RealMemory)
    mem=$((mem * 95 / 100))
    gpus=${STITCHLIB_SLURM_GPUS:-$cpus}
    local gres_types="" node_gres=""
    if ((gpus > 0)); then
        gres_types="GresTypes=gpu"
        node_gres="Gres=gpu:$gpus"
        # SLURM 22.05 counts a GPU only with a device file: empty placeholder files stand in for /dev/nvidia*.
        mkdir -p "$STATE/dev"
        for ((i = 0; i < gpus; i++)); do : >"$STATE/dev/gpu$i"; done
        printf 'AutoDetect=off\nNodeName=%s Name=gpu File=%s/dev/gpu[0-%d]\n' "$NODE" "$STATE" $((gpus - 1)) \
            >"$ETC/gres.conf"
    else
        : >"$ETC/gres.conf"
    fi
    cat >"$ETC/slurm.conf" <<EOF
# Written by tools/slurm/local-cluster.sh: a one-node test cluster on loopback.
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$RUN/munge/munge.socket
# (clients reach slurmdbd through AccountingStoragePass below: for slurmdbd it names the munged socket)
CredType=cred/munge
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/d
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=16819
AccountingStoragePass=$RUN/munge/munge.socket
EnforcePartLimits=ALL
ReturnToService=2
MpiDefault=none
SchedulerParameters=batch_sched_delay=0,sched_min_interval=100000
MaxArraySize=10001
$gres_types
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus Boards=$boards SocketsPerBoard=$sockets CoresPerSocket=$cores ThreadsPerCore=$threads RealMemory=$mem $node_gres State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    cat >"$ETC/cgroup.conf" <<EOF
# Nothing is confined (proctrack/linuxproc, task/none), but slurmd 22.05 loads a cgroup plugin regardless.
CgroupPlugin=cgroup/v1
IgnoreSystemd=yes
EOF
    cat >"$ETC/slurmdbd.conf" <<EOF
# Written by tools/slurm/local-cluster.sh.
AuthType=auth/munge
AuthInfo=socket=$RUN/munge/munge.socket
DbdHost=$NODE
DbdAddr=127.0.0.1
DbdPort=16819
CommunicationParameters=NoInAddrAny
SlurmUser=root
PidFile=$RUN/slurmdbd.pid
LogFile=$LOG/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=stitchlib_slurm_acct_db
EOF
    chmod 600 "$ETC/slurmdbd.conf"
    chmod 644 "$ETC/slurm.conf" "$ETC/cgroup.conf" "$ETC/gres.conf"
}

start_munged() {
    install -d -o munge -g munge -m 0700 "$STATE/munge"
    install -d -o munge -g munge -m 0755 "$RUN/munge"
    if [[ ! -s $STATE/munge/munge.key ]]; then
        dd if=/dev/urandom bs=1024 count=1 status=none >"$STATE/munge/munge.key"
        chown munge:munge "$STATE/munge/munge.key"
        chmod 0400 "$STATE/munge/munge.key"
    fi
    runuser -u munge -- munged --key-file="$STATE/munge/munge.key" --socket="$RUN/munge/munge.socket" \
        --pid-file="$RUN/munge/munged.pid" --log-file="$RUN/munge/munged.log" --seed-file="$STATE/munge/munged.seed"
    wait_for 15 munged test -S "$RUN/munge/munge.socket" || die "munged did not start ($RUN/munge/munged.log)"
}

start_mariadbd() {
    install -d -o mysql -g mysql -m 0755 "$RUN/mysql"
    if [[ ! -d $STATE/mysql/mysql ]]; then
        install -d -o mysql -g mysql -m 0750 "$STATE/mysql"
        mariadb-install-db --no-defaults --datadir="$STATE/mysql" --user=mysql \
            --auth-root-authentication-method=socket --skip-test-db >"$LOG/mariadb-install.log" 2>&1 \
            || { tail -20 "$LOG/mariadb-install.log" >&2; die "mariadb-install-db failed"; }
    fi
    setsid mariadbd --no-defaults --datadir="$STATE/mysql" --socket="$RUN/mysql/mysqld.sock" \
        --pid-file="$RUN/mysql/mysqld.pid" --skip-networking --user=mysql --log-error="$LOG/mariadb.log" \
        </dev/null >/dev/null 2>&1 &
    wait_for 60 mariadbd mariadb-admin --no-defaults --socket="$RUN/mysql/mysqld.sock" ping \
        || die "mariadbd did not start ($LOG/mariadb.log)"
    wait_for 10 mariadbd running_pid mariadbd || die "mariadbd wrote no pid file"
}

start_slurmdbd() {
    slurmdbd
    wait_for 60 slurmdbd sacctmgr -n show cluster || die "slurmdbd did not answer ($LOG/slurmdbd.log)"
    if ! sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER"; then
        sacctmgr -i add cluster "$CLUSTER" >/dev/null
    fi
}

start_daemon() {
    case $1 in
        munged) start_munged ;;
        mariadbd) start_mariadbd ;;
        slurmdbd) start_slurmdbd ;;
        slurmctld)
            rm -f "$RUN/slurmctld.pid"  # slurmctld leaves a stale one behind
            slurmctld
            wait_for 30 slurmctld scontrol ping || die "slurmctld did not answer ($LOG/slurmctld.log)"
            ;;
        slurmd) slurmd ;;
    esac
    wait_for 10 "$1" running_pid "$1" || die "$1 did not stay up (logs in $LOG)"
    say "$1 running (pid $(running_pid "$1"))"
}

SYSTEM_CONF=/etc/slurm/slurm.conf

link_system_conf() {
    if [[ -L $SYSTEM_CONF && $(readlink "$SYSTEM_CONF") == "$ETC/slurm.conf" ]]; then return 0; fi
    [[ ! -e $SYSTEM_CONF && ! -L $SYSTEM_CONF ]] \
        || die "$SYSTEM_CONF exists: this machine has its own SLURM; the test cluster would need that path"
    mkdir -p "$(dirname "$SYSTEM_CONF")"
    ln -s "$ETC/slurm.conf" "$SYSTEM_CONF"
}

unlink_system_conf() {
    if [[ -L $SYSTEM_CONF && $(readlink "$SYSTEM_CONF") == "$ETC/slurm.conf" ]]; then rm -f "$SYSTEM_CONF"; fi
}

node_state() { sinfo -h -n "$NODE" -o %t 2>/dev/null; }

wait_idle() {
    local t0=$SECONDS st
    while :; do
        st=$(node_state || true)
        [[ $st == idle || $st == mix || $st == alloc ]] && return 0
        if [[ $st == down* || $st == drain* ]]; then scontrol update nodename="$NODE" state=resume 2>/dev/null || true; fi
        ((SECONDS - t0 < 60)) || die "node $NODE is '$st', not idle after 60 s (logs in $LOG)"
        sleep 0.5
    done
}

cmd_up() {
    [[ $(id -u) == 0 ]] || die "run as root"
    local all=1 d
    for d in "${DAEMONS[@]}"; do running_pid "$d" >/dev/null || all=0; done
    if ((all)); then
        say "already up"
    else
        install_packages
        cmd_down quiet  # a partial cluster (one daemon died): start again from nothing
        write_configs
        link_system_conf
        for d in "${DAEMONS[@]}"; do start_daemon "$d"; done
    fi
    wait_idle
    say "node $NODE idle; clients need: export SLURM_CONF=$SLURM_CONF"
}

stop_daemon() {
    local pid t0=$SECONDS
    pid=$(running_pid "$1") || { rm -f "$(pidfile "$1")"; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS - t0 > 30)); then kill -KILL "$pid" 2>/dev/null || true; break; fi
        sleep 0.2
    done
    rm -f "$(pidfile "$1")"
    [[ ${2:-} == quiet ]] || say "$1 stopped (pid $pid)"
}

cmd_down() {
    local d jobs
    # Jobs first, so no slurmstepd outlives its daemons.
    if running_pid slurmctld >/dev/null; then
        jobs=$(squeue -h -o %i 2>/dev/null || true)
        if [[ -n $jobs ]]; then
            # shellcheck disable=SC2086
            scancel $jobs 2>/dev/null || true
            wait_for 30 jobs test -z "$(squeue -h -o %i 2>/dev/null)" || say "jobs still listed after scancel"
        fi
    fi
    for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do stop_daemon "${DAEMONS[i]}" "${1:-}"; done
    rm -f "$RUN/munge/munge.socket" "$RUN/munge/munge.socket.lock" "$RUN/mysql/mysqld.sock"
    unlink_system_conf
}

cmd_status() {
    local d pid rc=0
    for d in "${DAEMONS[@]}"; do
        if pid=$(running_pid "$d"); then echo "$d: running (pid $pid)"; else echo "$d: stopped"; rc=3; fi
    done
    if running_pid slurmctld >/dev/null; then sinfo; fi
    return $rc
}

cmd_purge() {
    [[ $(id -u) == 0 ]] || die "run as root"
    cmd_down
    if [[ -s $STATE/installed-packages ]]; then
        # shellcheck disable=SC2046
        DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq $(sort -u "$STATE/installed-packages") >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get autoremove --purge -y -qq >/dev/null
    fi
    rm -rf "$STATE"
    say "purged $STATE"
}

case ${1:-} in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) echo "export SLURM_CONF=$SLURM_CONF" ;;
    purge) cmd_purge ;;
    *) sed -n '2,9p' "$0" >&2; exit 2 ;;
esac
