#!/usr/bin/env bash
# End-to-end SLURM test: the tiny config run locally and through the SLURM profile on a one-node cluster on this
# machine; the tables (every file under results/tables/) must be byte-identical. Run as root (`make slurm-test`).
#
#   tools/slurm/e2e.sh [EXTRA SNAKEMAKE ARGS FOR THE SLURM RUN...]     e.g. --groups detector=d --group-components d=12
#
# Brings the cluster up (tools/slurm/local-cluster.sh, installing it with apt if missing) and, if this script started
# it, down again on exit, also on failure or interrupt. Work folder: $SLURM_TEST_DIR (default /tmp/stitchlib-slurm-
# test, emptied first). SLURM_TEST_CONFIG picks another config, SLURM_TEST_TIMEOUT bounds each run (s, default 1500),
# SLURM_TEST_LOCAL=DIR reuses the results of an earlier local run in DIR/results instead of running it again.

set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CLUSTER=$ROOT/tools/slurm/local-cluster.sh
PY=${PYTHON:-$ROOT/.venv/bin/python}
W=${SLURM_TEST_DIR:-/tmp/stitchlib-slurm-test}
CONFIG=${SLURM_TEST_CONFIG:-$ROOT/tests/configs/tiny.yaml}
LIMIT=${SLURM_TEST_TIMEOUT:-1500}
SMK=("$PY" -m snakemake --snakefile "$ROOT/Snakefile" --configfile "$CONFIG")

say() { echo "slurm-test: $*" >&2; }
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
