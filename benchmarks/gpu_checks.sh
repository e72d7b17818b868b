#!/usr/bin/env bash
# The GPU checks, in one go and under about 8 minutes, on a machine with a CUDA device and torch already installed
# (no network needed): 1. the CUDA tests; 2. the GPU benchmark (benchmarks/run_gpu.py: k-means k = 10 and 100, PCA
# regular and randomized, the linear learner dense and on the 10^6-wide sparse stream, FM; update alone, reader
# alone and end to end, GPU against the CPU cores, quality; host reads a batch; torch.profiler tables); 3. two
# processes on the GPUs (NCCL where each has one, else gloo); 4. only with SUITE=1, the whole suite on CUDA.
# Logs and results go to ${OUT:-gpu-checks}/ (results_gpu.json, RESULTS_GPU.md, profiles.txt, logs).
#   bash benchmarks/gpu_checks.sh
# On a lent machine whose Python lacks zstandard, carry its wheel (`pip download --no-deps --only-binary=:all:
# --python-version 3.12 ... -d .whl zstandard==0.25.0`) and start with
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-checks}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONDONTWRITEBYTECODE=1
PY=${PYTHON:-python3}
nvidia-smi -L | tee "$OUT/machine.txt"
$PY -c "import torch, numpy, pyarrow, safetensors, sklearn; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'numpy', numpy.__version__, 'pyarrow', pyarrow.__version__, 'sklearn', sklearn.__version__, torch.cuda.get_device_name(0))" \
    | tee -a "$OUT/machine.txt"
xdist=$($PY -c "import xdist" 2>/dev/null && echo "-n ${WORKERS:-12}")

echo "== 1. CUDA tests"
timeout 120 $PY -m pytest -q -p no:cacheprovider $xdist tests/test_cuda.py "tests/test_properties.py::test_run_killed_and_resumed_equals_uninterrupted_run" \
    -k "cuda" 2>&1 | tee "$OUT/cuda_tests.log" | tail -40

echo "== 2. GPU benchmark"
timeout "${BENCH_TIMEOUT:-330}" $PY benchmarks/run_gpu.py --n "${BENCH_N:-2000000}" --timeout 60 \
    --results "$OUT/results_gpu.json" --report "$OUT/RESULTS_GPU.md" --profile "$OUT" 2>&1 | tee "$OUT/bench.log" | tail -40

echo "== 3. two processes on the GPUs here: NCCL (a GPU each) and gloo (sharing)"
d=$(mktemp -d)
$PY -m onepass datasets blobs --n 200000 --d 20 --no-label --out "$d/x.csv"
for backend in nccl gloo; do
    timeout 45 $PY -m onepass train kmeans --data "$d/x.csv" --out "$d/$backend" --k 10 --device cuda --nproc 2 \
        --dist-backend $backend --dist-timeout 30 2>&1 | tail -8 | tee -a "$OUT/nproc2.log"
    echo "$backend: exit ${PIPESTATUS[0]}" | tee -a "$OUT/nproc2.log"
done

if [ "${SUITE:-0}" = 1 ]; then
echo "== 4. the whole suite on CUDA (ONEPASS_TEST_DEVICE=cuda: train runs that name no device; bit-for-bit checks may fail there)"
# -v: each test's outcome is in the log as it finishes, so a run stopped by its time limit still names its failures
ONEPASS_TEST_DEVICE=cuda timeout "${SUITE_TIMEOUT:-240}" $PY -m pytest -v -p no:cacheprovider -p no:benchmark $xdist --maxfail=40 \
    -k "not cuda" --ignore=tests/test_cuda.py > "$OUT/suite.log" 2>&1
echo "suite: exit $?"; grep -E "(FAILED|ERROR) " "$OUT/suite.log" | sed 's/^\[gw[0-9]*\] *\[ *[0-9]*%\] *//' | sort -u | head -40
tail -3 "$OUT/suite.log"
fi
exit 0
