#!/usr/bin/env bash
# Cross-check in a second, independent runtime: ONNX Runtime (Node package, CPU) evaluates the
# FP32 input model and segslim's exported INT8 QDQ model on CamVid val, fed exactly the tensors
# segslim evaluates, and the table compares its mIoU with `segslim eval`.
#   bash bench/ort_crosscheck.sh [INT8_MODEL]   (default: output/espnet_camvid_qat/model.onnx)
# Needs ../shared and the npm registry (onnxruntime-node is installed into bench/.ort with
# --ignore-scripts: its CPU binaries ship in the package; the skipped script fetches CUDA parts).
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
FP32=$SHARED/models/espnet_camvid.onnx
INT8=${1:-output/espnet_camvid_qat/model.onnx}
DATA=configs/camvid_espnet.yml
ROOT=$SHARED/data/camvid
[ -f "$INT8" ] || { echo "no INT8 model at $INT8: run segslim compress first" >&2; exit 1; }
bash scripts/build.sh segslim bench_dump_eval_inputs
if [ ! -d bench/.ort/node_modules/onnxruntime-node ]; then
  mkdir -p bench/.ort
  (cd bench/.ort && npm install --no-audit --no-fund --ignore-scripts onnxruntime-node@1.30.0 >/dev/null)
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
build/bench_dump_eval_inputs "$DATA" "$ROOT" "$TMP/val"
N=$(ls "$TMP/val" | grep -c '\.x$')
export NODE_PATH=$PWD/bench/.ort/node_modules
row() {  # name model
  local ort ours
  ort=$(node bench/ort_miou.js "$2" "$TMP/val" "$N" 11 11 360 480)
  build/segslim eval --model "$2" --data "$DATA" --data-root "$ROOT" --batch 4 --threads 2 \
    --json "$TMP/ours.json" >/dev/null 2>&1
  python3 - "$1" "$ort" "$TMP/ours.json" <<'PY'
import json, sys
name, ort, ours = sys.argv[1], json.loads(sys.argv[2]), json.load(open(sys.argv[3]))
diff = max(abs(a - b) for a, b in zip(ort["class_iou"], ours["class_iou"]))
print(f"| {name} | {ours['miou']:.4f} | {ort['miou']:.4f} | {100 * (ort['miou'] - ours['miou']):+.3f} "
      f"| {100 * diff:.3f} | {ort['runtime']} |")
PY
}
{
  echo "| model | segslim eval mIoU | ONNX Runtime mIoU | difference (points) | largest per-class IoU difference (points) | runtime |"
  echo "|---|---|---|---|---|---|"
  row "FP32 (input)" "$FP32"
  row "INT8 QDQ (segslim compress)" "$INT8"
} | tee bench/results/ort_crosscheck.md
