#!/usr/bin/env bash
# The checks a lent GPU machine runs, in one time-boxed call (docs/results/README.md, "The
# paper budget"): the GPU throughput rows of the performance suite, and the study's paper
# budget in parallel lanes, started beside it at a lower CPU priority.
#
#     bash bench/gpu_check.sh                        # writes into $OUT (default /tmp/gpu_check)
#     BUDGET=smoke SUITE="--quick --device cpu" STUDY_MIN=3 JOBS=2 bash bench/gpu_check.sh
#
# Wheels in .whl/ (jsonargparse, higher and their needs, and au-lightning's own, for its
# entry points) are installed into /tmp/site first where python3 lacks them; the code itself
# is read from this tree. Make them here (the folder is not committed: list it in
# .git/info/exclude, and carry it to the machine):
#
#     pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl \
#         jsonargparse==4.53.0 higher==0.2.1 docstring_parser==0.18.0 typeshed_client==2.15.0
#     pip wheel --no-deps --no-build-isolation -w .whl .
#
# What comes back: machine.txt, suite.log and performance_gpu.md, study.log and
# study_paper.md (claims, runs and every job's state), runs.tgz (each run's metrics.json,
# log and result tables).
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check}
BUDGET=${BUDGET:-paper}
JOBS=${JOBS:-8}
STUDY_MIN=${STUDY_MIN:-8.4}   # the study stops its runs after this many minutes
SUITE=${SUITE:---device cuda}
RUNS=${RUNS:-/tmp/study_runs}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 AU_LIGHTNING_CACHE=${AU_LIGHTNING_CACHE:-/tmp/au_cache}
if [ -d .whl ] && ! python3 -c "import jsonargparse, higher" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="$PWD:$PWD/plugins:/tmp/site"
fi
{
    date -u
    nvidia-smi -L 2>&1
    python3 -c "import torch, lightning; print('torch', torch.__version__, 'lightning',
lightning.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name())"
    nproc
} >"$OUT/machine.txt" 2>&1
start_until=$(python3 -c "print(max(0.5, $STUDY_MIN - 1.9))")
nice -n 10 python3 bench/study.py --budget "$BUDGET" --jobs "$JOBS" --runs "$RUNS" \
    --claims baseline renet mal maml hybrid transfer imbalance \
    --start-until "$start_until" --stop-at "$STUDY_MIN" --out "$OUT/study_$BUDGET.md" \
    >"$OUT/study.log" 2>&1 &
study=$!
# shellcheck disable=SC2086
python3 bench/suite.py $SUITE --out "$OUT/performance_gpu.md" >"$OUT/suite.log" 2>&1
wait "$study"
echo "study exit $?" >>"$OUT/study.log"
(cd "$RUNS" && find . \( -name metrics.json -o -name log.txt -o -name '*.log' \
    -o -name test_results.csv -o -name adaptation.csv \) -print0 |
    tar czf "$OUT/runs.tgz" --null -T -)
ls -la "$OUT"
