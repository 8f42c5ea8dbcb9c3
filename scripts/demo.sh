#!/usr/bin/env bash
# The main job on the bundled sample (no ../shared needed): installs what is missing, builds,
# then inspects the bundled ESPNet-CamVid model, evaluates it on the 4 bundled CamVid val
# images and writes predictions and a per-class IoU chart to out/demo/.
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
build/segslim eval --model "$MODEL" --data "$DATA" --threads "$THREADS" \
  --json "$OUT/eval.json" --plot "$OUT/class_iou.png"
for img in sample/camvid/val/*.png; do
  name=$(basename "$img" .png)
  build/segslim predict --model "$MODEL" --data "$DATA" --image "$img" --threads "$THREADS" \
    --out "$OUT/$name.overlay.png" --overlay --raw "$OUT/$name.ids.png"
done
echo "demo outputs in $OUT/"
