#!/usr/bin/env bash
# What a new user waits for: wall times of `make install`, `make demo` and `make test` on a fresh
# clone (committed files only, no results/, no .snakemake/), printed as a table with the machine and
# its load, so README's numbers can be re-measured after any change. Not a test.
#
#   benchmarks/time_first_run.sh [--skip-test] [--skip-demo] [--keep] [REPO]
#
# REPO: the repository to clone (default: this checkout; a clone of a commit, so commit first).
# QDIFF_VENV=/path/to/.venv reuses an installed venv instead of `make install` (offline machines,
# or to time the demo and tests alone); the clone's code then comes first on PYTHONPATH.
# NICE=10 runs the make commands under `nice -n 10` (when the machine is shared).
# The load average is printed before and after: above the core count, other work was running and
# the times are inflated.
set -euo pipefail

skip_test=0 skip_demo=0 keep=0 repo=""
for arg in "$@"; do
  case "$arg" in
    --skip-test) skip_test=1 ;;
    --skip-demo) skip_demo=1 ;;
    --keep) keep=1 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) repo="$arg" ;;
  esac
done
repo=${repo:-$(git -C "$(dirname "$0")" rev-parse --show-toplevel)}
work=$(mktemp -d "${TMPDIR:-/tmp}/qdiff-first-run.XXXXXX")
[ "$keep" = 1 ] || trap 'rm -rf "$work"' EXIT
git clone --quiet "$repo" "$work/qdiff"
cd "$work/qdiff"
commit=$(git rev-parse --short HEAD)
prefix=()
[ -n "${NICE:-}" ] && prefix=(nice -n "$NICE")

make_args=()
if [ -n "${QDIFF_VENV:-}" ]; then
  QDIFF_VENV=$(cd "$QDIFF_VENV" && pwd)
  # -o: treat the venv's qdiff as up to date (the clone's pyproject.toml is newer), never reinstall into it
  make_args=("VENV=$QDIFF_VENV" -o "$QDIFF_VENV/bin/qdiff")
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi

declare -A seconds status
timed() {  # timed NAME COMMAND...: wall seconds and exit status of COMMAND, its output in NAME.log
  local name=$1 start rc
  shift
  echo "== $name: $*  (log: $work/qdiff/$name.log)" >&2
  start=$SECONDS
  set +e
  "$@" > "$name.log" 2>&1
  rc=$?
  set -e
  seconds[$name]=$(( SECONDS - start ))
  status[$name]=$rc
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
if [ -z "${QDIFF_VENV:-}" ]; then timed install "${prefix[@]}" make install; fi
if [ "$skip_demo" = 0 ]; then timed demo "${prefix[@]}" make demo "${make_args[@]}"; fi
if [ "$skip_test" = 0 ]; then timed test "${prefix[@]}" make test "${make_args[@]}"; fi
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
echo
echo "qdiff first run, commit $commit, $(date -u +%Y-%m-%d)"
echo "machine: $(nproc) cores ($cpu), $(free -g | awk '/Mem:/{print $2}') GB RAM; make -> snakemake --cores 2"
echo "load average (1/5/15 min) before: $load_before; after: $load_after"
[ -n "${QDIFF_VENV:-}" ] && echo "install: skipped (QDIFF_VENV=$QDIFF_VENV)"
for name in install demo test; do
  [ -n "${seconds[$name]:-}" ] || continue
  printf '%-8s %5d s  (%d min %02d s)  exit %d\n' "make $name" "${seconds[$name]}" \
    $(( seconds[$name] / 60 )) $(( seconds[$name] % 60 )) "${status[$name]}"
done
if [ -n "${seconds[demo]:-}" ]; then
  echo "demo jobs: $(grep -c '^Finished jobid' demo.log || true); its last lines:"
  tail -n 6 demo.log | sed 's/^/  /'
fi
if [ -n "${seconds[demo]:-}" ] && [ -d logs/benchmarks ]; then
  echo "where the demo's time went (Snakemake benchmark files):"
  "${QDIFF_VENV:-.venv}/bin/python" benchmarks/demo_time_breakdown.py logs/benchmarks | sed 's/^/  /'
fi
if [ -n "${seconds[test]:-}" ]; then
  echo "tests: $(grep -E '[0-9]+ (passed|failed)' test.log | tail -1)"
fi
exit $(( ${status[install]:-0} | ${status[demo]:-0} | ${status[test]:-0} ))
