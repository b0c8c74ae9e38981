#!/usr/bin/env bash
# Issue 7's benchmark on one GPU: the one command to run there.
#   bash launch/gpu_benchmark.sh [more bmdjax.benchmark flags]   # env: OUT BATCH BATCH_F32 SWEEP
# Full-size AttMulRoi (VGG16, 15 crops of 256x256) in bfloat16: training step,
# input pipeline, data prep on all cores, screening latency and the bf16-vs-f32
# prediction difference; then the float32 step (batch BATCH_F32) for comparison, and with
# SWEEP="16 64" the bf16 step at other batch sizes. One JSON per run in $OUT
# (default bench_out), the BENCHMARKS.md tables on stdout.
# Packages a bare GPU image lacks (grain, pydicom, ml-collections, tfds, ...)
# are installed from .whl/ when missing: make it beforehand where PyPI can be
# reached, in the repo root, with `pip download -d .whl grain array-record pydicom
# ml-collections tensorflow-datasets importlib-resources` for the GPU machine's
# Python (add --python-version/--platform), or on a machine of your own
# `pip install -e .[cuda]` instead.
# Extra flags go to every run: a CPU dry run of this script is
#   bash launch/gpu_benchmark.sh --size=32 --config.model.width=0.0625 --steps=2 --prep_studies=8
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench_out}
BATCH=${BATCH:-32}
BATCH_F32=${BATCH_F32:-16}
SWEEP=${SWEEP:-}
if ! python3 -c "import grain, pydicom, ml_collections, tensorflow_datasets" 2>/dev/null; then
  if ! ls .whl/*.whl >/dev/null 2>&1; then
    echo "grain, pydicom, ml-collections or tensorflow-datasets missing and no .whl/:" \
         "make the wheel house first: pip download -d .whl grain array-record pydicom ml-collections tensorflow-datasets importlib-resources" >&2
    exit 1
  fi
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$OUT"
cores=$(nproc)
bench() {  # CONFIG FLAGS...
  python3 -m bmdjax.benchmark --config="$1" --config.input.read_threads="$cores" --markdown "${@:2}"
}

echo "== bfloat16, batch $BATCH: train, input, prep, predict, precision"
bench configs/attmulroi.py:dtype=bfloat16 --config.batch_size="$BATCH" \
  --what=train,input,prep,predict,precision --steps=50 --warmup=5 \
  --prep_studies=$((8 * cores)) --json="$OUT/bf16_b$BATCH.json" "$@"
# float32 activations take twice the memory: XLA's CPU plan is ~3.7 GB per sample
# in float32, so batch 32 may not fit in 80 GB; compare at BATCH_F32.
echo "== float32, batch $BATCH_F32: train"
bench configs/attmulroi.py --config.batch_size="$BATCH_F32" --what=train --steps=20 \
  --json="$OUT/f32_b$BATCH_F32.json" "$@" || echo "float32 run failed (out of memory?)"
for b in $SWEEP; do
  echo "== bfloat16, batch $b: train"
  bench configs/attmulroi.py:dtype=bfloat16 --config.batch_size="$b" --what=train \
    --steps=30 --json="$OUT/bf16_b$b.json" "$@" || echo "batch $b failed (out of memory?)"
done
