#!/usr/bin/env bash
# The main job on the bundled sample (no ../shared needed): installs what is missing, builds,
# inspects the bundled ESPNet-CamVid model, compresses it to INT8 (PTQ-initialised QAT with
# distillation, a short run on the 4 bundled train images), then evaluates FP32 and INT8 on
# the 4 bundled val images side by side and writes predictions and per-class IoU charts to
# out/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh segslim
OUT=out/demo
mkdir -p "$OUT"
MODEL=sample/models/espnet_camvid.onnx
DATA=configs/sample_camvid.yml
THREADS=${THREADS:-$(nproc)}

build/segslim inspect "$MODEL" --json "$OUT/inspect.json"
build/segslim compress --config configs/compress/espnet_camvid_sample.yml --out "$OUT/int8" \
  --threads "$THREADS"
INT8="$OUT/int8/model.onnx"
build/segslim eval --model "$MODEL" --data "$DATA" --threads "$THREADS" \
  --json "$OUT/eval_fp32.json" --plot "$OUT/class_iou_fp32.png"
build/segslim eval --model "$INT8" --data "$DATA" --threads "$THREADS" \
  --json "$OUT/eval_int8.json" --plot "$OUT/class_iou_int8.png"
for img in sample/camvid/val/*.png; do
  name=$(basename "$img" .png)
  build/segslim predict --model "$INT8" --data "$DATA" --image "$img" --threads "$THREADS" \
    --out "$OUT/$name.int8.overlay.png" --overlay --raw "$OUT/$name.int8.ids.png"
done
# latency of one 360x480 image on the inference engine, FP32 and INT8 side by side
for k in fp32 int8; do
  m=$MODEL; [ "$k" = int8 ] && m=$INT8
  build/segslim bench --model "$m" --shape 1x3x360x480 --threads "$THREADS" --warmup 5 \
    --repeat 30 --json "$OUT/bench_$k.json" > /dev/null
done
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
f, q = (json.load(open(f"{out}/eval_{k}.json")) for k in ("fp32", "int8"))
bf, bq = (json.load(open(f"{out}/bench_{k}.json")) for k in ("fp32", "int8"))
print(f"\n{'':6}{'mIoU':>8}{'acc':>8}{'p50 ms':>9}   ({f['engine']} engine, {f['threads']} threads, "
      "latency at 1x3x360x480)")
for name, r, b in (("FP32", f, bf), ("INT8", q, bq)):
    print(f"{name:6}{r['miou']:8.4f}{r['acc']:8.4f}{b['p50_ms']:9.2f}")
print(f"INT8 - FP32: {100 * (q['miou'] - f['miou']):+.2f} mIoU points, "
      f"{bf['p50_ms'] / bq['p50_ms']:.2f}x faster")
PY
echo "demo outputs in $OUT/"
