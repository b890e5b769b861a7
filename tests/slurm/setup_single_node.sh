#!/usr/bin/env bash
# Install and start a real single-node SLURM cluster (Debian's slurm-wlm + munge) with one
# count-only fake GPU, for the profile tests. Idempotent (restarts the cluster empty); run as root
# or with sudo.
#   bash tests/slurm/setup_single_node.sh
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if ! command -v slurmctld >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq slurm-wlm munge >/dev/null
fi

HOST="$(hostname -s)"
CPUS="$(nproc)"
MEM_MB="$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 2048 ))"

$SUDO mkdir -p /etc/slurm /var/spool/slurmd /var/spool/slurmctld /var/log/slurm /run/munge
$SUDO tee /etc/slurm/slurm.conf >/dev/null <<CONF
# Single-node test cluster written by tests/slurm/setup_single_node.sh
ClusterName=dnqsm-test
SlurmctldHost=${HOST}
AuthType=auth/munge
SlurmUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
GresTypes=gpu
MpiDefault=none
ReturnToService=2
MinJobAge=900
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmdSpoolDir=/var/spool/slurmd
StateSaveLocation=/var/spool/slurmctld
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=${HOST} CPUs=${CPUS} RealMemory=${MEM_MB} Gres=gpu:1 State=UNKNOWN
PartitionName=main Nodes=${HOST} Default=YES MaxTime=INFINITE State=UP
CONF
$SUDO tee /etc/slurm/gres.conf >/dev/null <<CONF
AutoDetect=off
NodeName=${HOST} Name=gpu File=/dev/null Count=1
CONF

if [ ! -s /etc/munge/munge.key ]; then
  $SUDO sh -c 'dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null'
fi
$SUDO chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
$SUDO chmod 0400 /etc/munge/munge.key
pgrep -x munged >/dev/null || $SUDO runuser -u munge -- /usr/sbin/munged
# A test cluster starts empty: stop any earlier daemons and clear their job state (-c), so jobs of
# an earlier run never mix with this one's.
$SUDO pkill -x slurmctld || true
$SUDO pkill -x slurmd || true
sleep 1
$SUDO /usr/sbin/slurmctld -c
$SUDO /usr/sbin/slurmd

for _ in $(seq 1 60); do
  state="$(sinfo -h -n "${HOST}" -o %t 2>/dev/null || true)"
  case "${state}" in
    idle*|mix*|alloc*) break ;;
    drain*|down*|inval*) $SUDO scontrol update nodename="${HOST}" state=resume || true ;;
  esac
  sleep 1
done
sinfo
scontrol show node "${HOST}" | grep -E "Gres|State" || true
