#!/usr/bin/env bash
# End to end on a synthetic cohort, CPU-sized: cohort -> ArrayRecord shards ->
# AttMulRoi training -> test-set report. Steps already done are skipped, so an
# interrupted demo picks up where it stopped.
#   bash launch/demo.sh            # OUT=demo_out PATIENTS=1000 TARGET=L1
#   PLAIN_CHECK=1 bash launch/demo.sh   # then also score the trained model on the same
#                                       # patients rendered with --plain (no lead
#                                       # markers, burned-in text or collimation)
set -euo pipefail
OUT=${OUT:-demo_out}
PATIENTS=${PATIENTS:-1000}
PLAIN_CHECK=${PLAIN_CHECK:-0}
TARGET=${TARGET:-L1}
CONFIG="attmulroi:demo,target=${TARGET}"
start=$(date +%s)
cd "$(dirname "$0")/.."

if [ ! -f "$OUT/cohort/cohort.json" ]; then
  echo "== 1/4 synthesising $PATIENTS patients into $OUT/cohort"
  bmdjax synthesize --out="$OUT/cohort" --patients="$PATIENTS" --seed=0 \
    --spacing_mm=1.0,1.2
fi
if [ ! -f "$OUT/prepared/prep.json" ]; then
  echo "== 2/4 preparing crops into $OUT/prepared"
  rm -rf "$OUT/prepared"
  bmdjax prepare --dicom_dir="$OUT/cohort/dicom" --labels="$OUT/cohort/labels.csv" \
    --landmarks="$OUT/cohort/landmarks.csv" --out="$OUT/prepared" --size=32 --grids=3
fi
echo "== 3/4 training $CONFIG (TensorBoard: tensorboard --logdir $OUT/run/tb)"
bmdjax train --config="$CONFIG" --workdir="$OUT/run" --config.data.dir="$OUT/prepared"
echo "== 4/4 evaluating on the test split"
bmdjax evaluate --workdir="$OUT/run" --split=test
python - "$OUT" "$TARGET" <<'PY'
import json, sys
out, target = sys.argv[1], sys.argv[2]
m = json.load(open(f"{out}/run/report/metrics.json"))
c = json.load(open(f"{out}/cohort/cohort.json"))
v, b = m[target], m.get("age_sex_baseline", {}).get(target, {})
ceiling = c["ceiling_r"][target]
fmt = lambda x: "n/a" if x is None else f"{x:.3f}"
print(f"\nDEMO {target} test (n={v['n']}): r={fmt(v['r'])} rmse={fmt(v['rmse'])} g/cm2 "
      f"auc={fmt(v['auc'])} | age+sex baseline r={fmt(b.get('r'))} "
      f"rmse={fmt(b.get('rmse'))} | cohort ceiling r={ceiling:.3f}")
PY
echo "== done in $(( $(date +%s) - start )) s; report in $OUT/run/report"
if [ "$PLAIN_CHECK" = 1 ]; then
  echo "== transfer check: the same model on the same patients rendered with --plain"
  if [ ! -f "$OUT/plain/cohort/cohort.json" ]; then
    bmdjax synthesize --out="$OUT/plain/cohort" --patients="$PATIENTS" --seed=0 \
      --spacing_mm=1.0,1.2 --plain
  fi
  if [ ! -f "$OUT/plain/prepared/prep.json" ]; then
    rm -rf "$OUT/plain/prepared"
    # The same patients in the same splits as the trained model's data: its
    # manifest's split column wins over any split drawn again.
    python - "$OUT" <<'PY'
import sys
import pandas as pd
out = sys.argv[1]
labels = pd.read_csv(f"{out}/plain/cohort/labels.csv", dtype=str, keep_default_na=False)
split = pd.read_csv(f"{out}/prepared/manifest.csv", dtype=str).set_index("image")["split"]
labels["split"] = labels["image"].map(split)
assert labels["split"].notna().all(), "plain cohort has studies the default one lacks"
labels.to_csv(f"{out}/plain/labels_split.csv", index=False)
PY
    bmdjax prepare --dicom_dir="$OUT/plain/cohort/dicom" \
      --labels="$OUT/plain/labels_split.csv" --landmarks="$OUT/plain/cohort/landmarks.csv" \
      --out="$OUT/plain/prepared" --size=32 --grids=3
  fi
  # evaluate writes into <workdir>/report: score a copy of the run.
  rm -rf "$OUT/plain/run" && cp -r "$OUT/run" "$OUT/plain/run"
  bmdjax evaluate --config="$CONFIG" --workdir="$OUT/plain/run" \
    --config.data.dir="$OUT/plain/prepared" --split=test
  python - "$OUT/plain/run/report/metrics.json" "$TARGET" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))[sys.argv[2]]
fmt = lambda x: "n/a" if x is None else f"{x:.3f}"
print(f"PLAIN {sys.argv[2]} test (n={m['n']}): r={fmt(m['r'])} rmse={fmt(m['rmse'])} g/cm2 "
      f"auc={fmt(m['auc'])}")
PY
fi
