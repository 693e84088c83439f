#!/usr/bin/env bash
# End-to-end SLURM test: the tiny config run locally and through the SLURM profile on a one-node cluster on this
# machine; the tables (every file under results/tables/) must be byte-identical. Run as root (`make slurm-test`).
#
#   tools/slurm/e2e.sh [--check] [EXTRA SNAKEMAKE ARGS FOR THE SLURM RUN...]   e.g. --groups detector=d --group-components d=12
#
# Brings the cluster up (tools/slurm/local-cluster.sh, installing it with apt if missing) and, if this script started
# it, down again on exit, also on failure or interrupt. Work folder: $SLURM_TEST_DIR (default /tmp/stitchlib-slurm-
# test, emptied first). SLURM_TEST_CONFIG picks another config, SLURM_TEST_TIMEOUT bounds each run (s, default 1500),
# SLURM_TEST_LOCAL=DIR reuses the results of an earlier local run in DIR/results instead of running it again.
# PYTHON (default .venv/bin/python) and every path may be relative to where the script is started: they are made
# absolute before it changes folder. --check: without root or daemons, resolve and print the paths, write the test
# profile, and dry-run the local command (with the extra arguments) from its work folder, then stop (make test).

set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CLUSTER=$ROOT/tools/slurm/local-cluster.sh
CHECK=0
if [[ ${1:-} == --check ]]; then CHECK=1; shift; fi

say() { echo "slurm-test: $*" >&2; }
# An absolute, normalised path for a path given relative to where the script started (symlinks kept: a venv's
# python must keep its name); a bare command name is found on PATH.
abspath() { realpath -ms -- "$1"; }
command_path() { if [[ $1 == */* ]]; then abspath "$1"; else command -v -- "$1" || echo "$1"; fi; }
PY=$(command_path "${PYTHON:-$ROOT/.venv/bin/python}")
W=$(abspath "${SLURM_TEST_DIR:-/tmp/stitchlib-slurm-test}")
CONFIG=$(abspath "${SLURM_TEST_CONFIG:-$ROOT/tests/configs/tiny.yaml}")
[[ -z ${SLURM_TEST_LOCAL:-} ]] || SLURM_TEST_LOCAL=$(abspath "$SLURM_TEST_LOCAL")
LIMIT=${SLURM_TEST_TIMEOUT:-1500}
SMK=("$PY" -m snakemake --snakefile "$ROOT/Snakefile" --configfile "$CONFIG")

[[ -x $PY ]] || { say "PYTHON: $PY is not an executable (make venv, or set PYTHON)"; exit 2; }
[[ -f $CONFIG ]] || { say "SLURM_TEST_CONFIG: $CONFIG is not a file"; exit 2; }
# The work folder is emptied first: never / or a folder that holds the repository, however it is spelled.
real_w=$(realpath -m -- "$W")
if [[ $real_w == / || "$(cd "$ROOT" && pwd -P)/" == "$real_w"/* ]]; then
    say "SLURM_TEST_DIR: $W holds the repository; it is emptied first, so pick another"; exit 2
fi

if ((CHECK)); then  # deletes nothing
    mkdir -p "$W/local"
    say "python $PY; config $CONFIG; work folder $W; snakefile $ROOT/Snakefile"
    "$PY" "$ROOT/tools/slurm/test_profile.py" "$W/profile" >/dev/null
    (cd "$W/local" && "${SMK[@]}" --cores 2 -n --quiet rules "$@" >"$W/check.log" 2>&1) \
        || { tail -20 "$W/check.log" >&2; say "the local command's dry run failed (log: $W/check.log)"; exit 1; }
    say "check OK: the profile written, the local command dry-runs from its work folder"
    exit 0
fi

[[ $(id -u) == 0 ]] || { say "needs root (it installs and starts SLURM daemons)"; exit 2; }

started=0
cleanup() {
    local rc=$?
    if ((started)); then "$CLUSTER" down || rc=1; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

rm -rf "$W"
mkdir -p "$W/slurm"
t0=$SECONDS
"$CLUSTER" status >/dev/null 2>&1 || started=1
"$CLUSTER" up
eval "$("$CLUSTER" env)"
say "cluster ready in $((SECONDS - t0)) s"

"$PY" "$ROOT/tools/slurm/test_profile.py" "$W/profile"

if [[ -n ${SLURM_TEST_LOCAL:-} ]]; then
    LOCAL=$SLURM_TEST_LOCAL
else
    LOCAL=$W/local
    mkdir -p "$LOCAL"
    t=$SECONDS
    (cd "$LOCAL" && timeout -s INT -k 60 "$LIMIT" "${SMK[@]}" --cores 2 >"$W/local.log" 2>&1) \
        || { tail -40 "$W/local.log" >&2; say "local run failed (log: $W/local.log)"; exit 1; }
    say "local run: $((SECONDS - t)) s"
fi

# SIGINT, not SIGTERM, stops a Snakemake that waits on SLURM jobs (and cancels them).
t=$SECONDS
(cd "$W/slurm" && timeout -s INT -k 60 "$LIMIT" "${SMK[@]}" --profile "$W/profile" "$@" >"$W/slurm.log" 2>&1) \
    || { tail -60 "$W/slurm.log" >&2; say "SLURM run failed (log: $W/slurm.log)"; exit 1; }
submitted=$(grep -c "submitted with SLURM jobid" "$W/slurm.log" || true)
say "SLURM run: $((SECONDS - t)) s, $submitted sbatch submissions"

# The same tables, byte for byte.
mapfile -t tables < <(cd "$LOCAL/results" && find tables -type f -name '*.csv' | sort)
((${#tables[@]})) || { say "the local run wrote no tables"; exit 1; }
diff <(cd "$LOCAL/results" && find tables -type f | sort) <(cd "$W/slurm/results" && find tables -type f | sort) \
    || { say "the two runs wrote different table files"; exit 1; }
bad=0
for f in $(cd "$LOCAL/results" && find tables -type f | sort); do
    cmp -s "$LOCAL/results/$f" "$W/slurm/results/$f" || { say "differs: results/$f"; bad=1; }
done
((!bad)) || exit 1
say "OK: ${#tables[@]} tables (CSV, and their Markdown) identical; total $((SECONDS - t0)) s"
