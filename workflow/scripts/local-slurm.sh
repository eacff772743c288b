#!/usr/bin/env bash
# A single-node Slurm on localhost, for tests and for trying the SLURM profile on one machine.
#
#   local-slurm.sh install   apt-get install slurm-wlm munge (needs root and Debian/Ubuntu apt)
#   local-slurm.sh start     write the config, start munged, slurmctld and slurmd, wait until idle
#   local-slurm.sh stop      stop the three daemons
#   local-slurm.sh status    exit 0 if the node answers sinfo
#
# Debian's Slurm 22.05 has no CgroupPlugin=disabled, so process tracking is proctrack/linuxproc
# with TaskPlugin=task/none and no cgroup.conf; there is no accounting database (use
# --slurm-status-command squeue with Snakemake). Everything runs as root on this machine only.
set -euo pipefail

CONF_DIR=/etc/slurm
STATE_DIR=/var/spool/slurmctld
SPOOL_DIR=/var/spool/slurmd
LOG_DIR=/var/log/slurm
RUN_DIR=/run/slurm
NODE=$(hostname -s)

die() { echo "local-slurm: $*" >&2; exit 1; }

install_slurm() {
    [ "$(id -u)" -eq 0 ] || die "install needs root"
    command -v apt-get >/dev/null || die "apt-get not found (Debian/Ubuntu only)"
    if command -v slurmctld >/dev/null && command -v munged >/dev/null; then
        return 0
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
}

write_config() {
    local cpus memory_mb
    cpus=$(nproc)
    memory_mb=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
    mkdir -p "$CONF_DIR" "$STATE_DIR" "$SPOOL_DIR" "$LOG_DIR" "$RUN_DIR"
    cat >"$CONF_DIR/slurm.conf" <<CONF
ClusterName=xasflow-local
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
StateSaveLocation=$STATE_DIR
SlurmdSpoolDir=$SPOOL_DIR
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=10
Waittime=0
NodeName=$NODE CPUs=$cpus RealMemory=$memory_mb State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF
    rm -f "$CONF_DIR/cgroup.conf"
}

start_munge() {
    if pgrep -x munged >/dev/null; then return 0; fi
    mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
    if [ ! -s /etc/munge/munge.key ]; then
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
    fi
    chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge 2>/dev/null || true
    chmod 0400 /etc/munge/munge.key
    chmod 0700 /etc/munge
    if id munge >/dev/null 2>&1; then
        su -s /bin/sh munge -c "/usr/sbin/munged --force" || /usr/sbin/munged --force
    else
        /usr/sbin/munged --force
    fi
}

start() {
    [ "$(id -u)" -eq 0 ] || die "start needs root"
    command -v slurmctld >/dev/null || die "slurm is not installed (run: $0 install)"
    write_config
    start_munge
    pgrep -x slurmctld >/dev/null || /usr/sbin/slurmctld
    pgrep -x slurmd >/dev/null || /usr/sbin/slurmd
    for _ in $(seq 1 60); do
        if sinfo -h -N -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
            echo "local-slurm: node $NODE is up ($(nproc) CPUs)"
            return 0
        fi
        scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
        sleep 1
    done
    tail -n 20 "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" >&2 || true
    die "node $NODE did not become idle within 60 s"
}

stop() {
    scancel --user=root >/dev/null 2>&1 || true
    pkill -x slurmd >/dev/null 2>&1 || true
    pkill -x slurmctld >/dev/null 2>&1 || true
    for _ in $(seq 1 20); do
        pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null || break
        sleep 0.5
    done
    echo "local-slurm: stopped"
}

case "${1:-}" in
    install) install_slurm ;;
    start) start ;;
    stop) stop ;;
    status) sinfo -h >/dev/null 2>&1 ;;
    *) die "usage: $0 install|start|stop|status" ;;
esac
