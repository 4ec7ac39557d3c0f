#!/usr/bin/env bash
# Stop what .ci/slurm_up.sh started: drain the queue first (a slurmstepd left behind ignores
# SIGTERM), then the daemons in reverse order of start.
BASE=${BASE:-/tmp/qdiff-slurm}
# every user's jobs: the tests submit as an unprivileged user
squeue -h -o %i 2>/dev/null | xargs -r scancel 2>/dev/null || true
for _ in $(seq 60); do [ -z "$(squeue -h 2>/dev/null)" ] && break; sleep 1; done
for d in slurmd slurmctld slurmdbd mariadbd munged; do
  if [ -f "$BASE/$d.bgpid" ]; then
    kill "$(cat "$BASE/$d.bgpid")" 2>/dev/null || true
    sleep 1
    kill -9 "$(cat "$BASE/$d.bgpid")" 2>/dev/null || true
    rm -f "$BASE/$d.bgpid"
  fi
done
pkill -9 slurmstepd 2>/dev/null || true
exit 0
