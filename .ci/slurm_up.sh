#!/usr/bin/env bash
# Start a single-node Slurm (Debian's slurm-wlm, munge, slurmdbd on MariaDB so that sacct works)
# for CI, as root. Daemons run in the foreground as background jobs; PIDs under $BASE for
# .ci/slurm_down.sh. slurm.conf must be at /etc/slurm/slurm.conf (the jobstep plugin strips SLURM_CONF).
# Shaped like a real site, on one node: two partitions, `cpu` (the default) and `gpu` (a stand-in
# for a GPU partition: no GRES, so nothing may ask it for GPUs), and accounting that is enforced,
# with the unprivileged user $QDIFF_SLURM_USER (default nobody) in two accounts: `ci-default`
# (its default) and `qdiff` (the one a qdiff site setting names), so sacct shows which one was used.
set -euo pipefail
BASE=${BASE:-/tmp/qdiff-slurm}
CPUS=$(nproc)
MEM=${MEM_MB:-8000}
USER_NAME=${QDIFF_SLURM_USER:-nobody}
export DEBIAN_FRONTEND=noninteractive
if ! command -v slurmctld >/dev/null || ! command -v mariadbd >/dev/null; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge slurmdbd mariadb-server >/dev/null
fi
mkdir -p "$BASE"/{state,spool,log} /run/munge /etc/slurm
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=ci
SlurmctldHost=localhost
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool
SlurmctldPidFile=$BASE/slurmctld.pid
SlurmdPidFile=$BASE/slurmd.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
MpiDefault=none
ReturnToService=2
MinJobAge=600
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageEnforce=associations
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/linux
NodeName=localhost CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=cpu Nodes=localhost Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=localhost MaxTime=INFINITE State=UP
CONF
cat > /etc/slurm/slurmdbd.conf <<CONF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=3306
StorageUser=slurm
StoragePass=slurmpw
StorageLoc=slurm_acct_db
PidFile=$BASE/slurmdbd.pid
CONF
chmod 600 /etc/slurm/slurmdbd.conf
wait_for() { local what=$1; shift; for _ in $(seq 150); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done; echo "slurm_up: $what did not come up" >&2; return 1; }
munged -F --force --pid-file="$BASE/munged.pid" --log-file="$BASE/log/munged.log" --seed-file="$BASE/munged.seed" >"$BASE/log/munged.out" 2>&1 &
echo $! > "$BASE/munged.bgpid"
wait_for munge test -S /run/munge/munge.socket.2
[ -d "$BASE/db/mysql" ] || mariadb-install-db --user=root --datadir="$BASE/db" --auth-root-authentication-method=normal >"$BASE/log/db-install.log" 2>&1
mariadbd --user=root --datadir="$BASE/db" --socket="$BASE/mysqld.sock" --pid-file="$BASE/mysqld.pid" --bind-address=127.0.0.1 --port=3306 --log-error="$BASE/log/mariadb.log" >/dev/null 2>&1 &
echo $! > "$BASE/mariadbd.bgpid"
wait_for mariadb mariadb --socket="$BASE/mysqld.sock" -uroot -e 'select 1'
mariadb --socket="$BASE/mysqld.sock" -uroot -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db; CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurmpw'; CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmpw'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
slurmdbd -D >"$BASE/log/slurmdbd.out" 2>&1 &
echo $! > "$BASE/slurmdbd.bgpid"
wait_for slurmdbd sacctmgr -n list cluster
sacctmgr -i add cluster ci >/dev/null 2>&1 || true
# Accounts and the non-root user's associations (idempotent: "Nothing new added" on a restart).
sacctmgr -i add account ci-default,qdiff Cluster=ci Description=qdiff-ci Organization=qdiff >/dev/null 2>&1 || true
sacctmgr -i add user "$USER_NAME" Account=ci-default,qdiff DefaultAccount=ci-default Cluster=ci >/dev/null 2>&1 || true
sacctmgr -n -P list assoc user="$USER_NAME" format=account | grep -qx qdiff || { echo "slurm_up: no association $USER_NAME/qdiff" >&2; exit 1; }
slurmctld -D -i >"$BASE/log/slurmctld.out" 2>&1 &
echo $! > "$BASE/slurmctld.bgpid"
wait_for slurmctld sh -c 'scontrol ping | grep -q UP'
slurmd -D -N localhost >"$BASE/log/slurmd.out" 2>&1 &
echo $! > "$BASE/slurmd.bgpid"
wait_for slurmd sh -c 'sinfo -h -o %t | grep -q idle'
sinfo
