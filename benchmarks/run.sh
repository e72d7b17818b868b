#!/usr/bin/env bash
# The benchmarks: make benchmarks/.venv, install onepass and its peers, write the data sets as CSV into
# benchmarks/data/ and run every system on them; k-means rewrites benchmarks/RESULTS.md, PCA RESULTS_PCA.md.
#
#   bash benchmarks/run.sh            # k-means, full run (about an hour on 2 cores, ~5 GB of CSV)
#   bash benchmarks/run.sh --quick    # smoke run, a few minutes (report in benchmarks/data/runs/QUICK.md)
#   bash benchmarks/run.sh --help     # sizes, systems, k values, time limits
#   bash benchmarks/run.sh pca [--quick | --help]   # the PCA benchmark (run_pca.py)
#   bash benchmarks/run.sh distributed [--quick | --help]   # 1 and 2 processes (run_distributed.py)
#   bash benchmarks/run.sh linear [--quick | --help]   # the linear learner benchmark (run_linear.py)
#   bash benchmarks/run.sh data [--quick | --help]   # the data-layer benchmark, every format (run_data.py)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
venv="$here/.venv"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
if [ ! -f "$venv/.installed" ] || [ "$here/requirements.txt" -nt "$venv/.installed" ]; then
    "$venv/bin/pip" install -q torch==2.13.0          # the CPU build, before anything can pull another
    "$venv/bin/pip" install -q -r "$here/requirements.txt"
    "$venv/bin/pip" install -q --no-deps -r "$here/requirements-nodeps.txt"
    "$venv/bin/pip" install -q -e "$root"
    touch "$venv/.installed"
fi
export SPARK_LOCAL_IP=127.0.0.1
script=run_kmeans.py
if [ "${1:-}" = "pca" ]; then
    script=run_pca.py
    shift
elif [ "${1:-}" = "distributed" ]; then
    script=run_distributed.py
    shift
elif [ "${1:-}" = "data" ]; then
    script=run_data.py
    shift
elif [ "${1:-}" = "linear" ]; then
    script=run_linear.py
    shift
    # LetterRecognition ships in Debian's r-cran-mlbench (its .rda is read with pyreadr, without R)
    if [ ! -f /usr/lib/R/site-library/mlbench/data/LetterRecognition.rda ] && [ "$(id -u)" = 0 ]; then
        apt-get update -qq && apt-get install -y -qq r-cran-mlbench
    fi
fi
exec "$venv/bin/python" "$here/$script" "$@"
