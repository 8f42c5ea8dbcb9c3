#!/usr/bin/env bash
# Latency of FP32 and INT8 models on segslim's oneDNN engine and on LibTorch (channels_last),
# side by side in one run; writes bench/results/engine.md and engine.json with the ratios.
#   bash bench/engine_bench.sh   (THREADS=2 by default; REPEAT scales the run count, ROUNDS=3
#                                 interleaved rounds, the median of each configuration's p50)
# Models: ESPNet-CamVid at 1x3x360x480 (FP32 from ../shared, INT8 = the compressed model in
# output/espnet_camvid_qat/ when present, else a PTQ model made here), an STDC1-like
# conv-heavy network (tools/zoo/stdc_like.py) and PP-LiteSeg-T (tools/zoo/export.py), both at
# 1x3x1024x2048 with random weights (PP-LiteSeg-T timed as deployed: ending in ArgMax), their
# INT8 forms from bench_make_qdq_model (Conv and pooling inputs quantized, as
# QuantAware.quantize_op_types [conv2d, pool2d]).
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
THREADS=${THREADS:-2}
REPEAT=${REPEAT:-1}
ROUNDS=${ROUNDS:-3}
OUT=output/bench
mkdir -p "$OUT" bench/results
bash scripts/build.sh segslim bench_make_qdq_model bench_append_argmax

ESPNET_FP32=$SHARED/models/espnet_camvid.onnx
ESPNET_INT8=output/espnet_camvid_qat/model.onnx
if [ ! -f "$ESPNET_INT8" ]; then
  ESPNET_INT8=output/espnet_camvid_ptq/model.onnx
  [ -f "$ESPNET_INT8" ] || build/segslim compress --config configs/compress/espnet_camvid_ptq.yml \
    --threads "$THREADS"
fi
STDC_FP32=$OUT/stdc_like.onnx
STDC_INT8=$OUT/stdc_like_int8.onnx
[ -f "$STDC_FP32" ] || /usr/bin/python3 tools/zoo/stdc_like.py "$STDC_FP32"
[ -f "$STDC_INT8" ] || build/bench_make_qdq_model "$STDC_FP32" "$STDC_INT8" 1x3x1024x2048
LITESEG_FP32=$OUT/pp_liteseg_t_folded.onnx
LITESEG_INT8=$OUT/pp_liteseg_t_int8.onnx
[ -f "$LITESEG_FP32" ] || /usr/bin/python3 tools/zoo/export.py pp_liteseg_t "$OUT" >&2
[ -f "$LITESEG_INT8" ] || build/bench_make_qdq_model "$LITESEG_FP32" "$LITESEG_INT8" 1x3x256x512
# PP-LiteSeg-T as deployed (benchmark_table.sh): ending in ArgMax, the class-id map as output
for form in FP32 INT8; do
  m=LITESEG_$form
  deploy="${!m%.onnx}_deploy.onnx"
  [ -f "$deploy" ] || build/bench_append_argmax "${!m}" "$deploy" >&2
  printf -v "$m" '%s' "$deploy"
done

run() {  # round name engine fp32-model int8-model shape warmup repeat
  local json="$OUT/bench_$2_$3_r$1.json"
  build/segslim bench --model "$4" --vs "$5" --shape "$6" --engine "$3" --threads "$THREADS" \
    --warmup "$7" --repeat $(( $8 * REPEAT )) --json "$json" >&2
  echo "$json"
}
# ROUNDS rounds, each running every configuration once, interleaved: a slow minute on this
# shared machine hits all of them alike; the table takes the median over rounds of each p50.
# A model's FP32 and INT8 forms on one engine share a process and alternate run by run
# (segslim bench --vs), so that their ratio compares runs under the same load; the INT8
# speed-up is the median over rounds of each round's ratio.
results=()
for round in $(seq 1 "$ROUNDS"); do
  for engine in onednn torch; do
    results+=("espnet|$engine|$(run "$round" espnet "$engine" "$ESPNET_FP32" "$ESPNET_INT8" 1x3x360x480 5 30)")
    results+=("stdc|$engine|$(run "$round" stdc "$engine" "$STDC_FP32" "$STDC_INT8" 1x3x1024x2048 2 8)")
    results+=("liteseg|$engine|$(run "$round" liteseg "$engine" "$LITESEG_FP32" "$LITESEG_INT8" 1x3x1024x2048 2 8)")
  done
done
python3 - "$THREADS" "${results[@]}" <<'PY'
import json, statistics, sys
threads, rows = sys.argv[1], [r.split("|") for r in sys.argv[2:]]
runs, ratio = {}, {}
for m, e, f in rows:  # FP32 as --model, INT8 as --vs
    j = json.load(open(f))
    runs.setdefault((m, "fp32", e), []).append(j["p50_ms"])
    runs.setdefault((m, "int8", e), []).append(j["vs"]["p50_ms"])
    ratio.setdefault((m, e), []).append(j["speedup"])  # this round's FP32 p50 / INT8 p50
p50 = {k: statistics.median(v) for k, v in runs.items()}
rounds = len(next(iter(runs.values())))
names = {"espnet": "ESPNet-CamVid 1x3x360x480", "stdc": "STDC1-like 1x3x1024x2048",
         "liteseg": "PP-LiteSeg-T 1x3x1024x2048 (ArgMax output)"}
lines = [f"p50 latency in ms (median over {rounds} interleaved rounds; a model's FP32 and INT8 "
         f"forms on one engine alternate run by run in one process), {threads} threads, this "
         "machine; ratios from the same run. INT8 speed-up: the median over the rounds of each "
         "round's FP32 p50 / INT8 p50 (measured under the same load).", "",
         "| model | oneDNN FP32 | oneDNN INT8 | INT8 speed-up | LibTorch FP32 (channels_last) | "
         "LibTorch INT8 (fake-quant) | oneDNN FP32 vs LibTorch FP32 |",
         "|---|---|---|---|---|---|---|"]
table = {}
for m in ("espnet", "stdc", "liteseg"):
    f, q = p50[(m, "fp32", "onednn")], p50[(m, "int8", "onednn")]
    tf, tq = p50[(m, "fp32", "torch")], p50[(m, "int8", "torch")]
    speedup = statistics.median(ratio[(m, "onednn")])
    lines.append(f"| {names[m]} | {f:.1f} | {q:.1f} | {speedup:.2f}x | {tf:.1f} | {tq:.1f} | "
                 f"{tf / f:.2f}x faster |")
    table[m] = {"onednn_fp32_ms": f, "onednn_int8_ms": q, "int8_speedup": speedup,
                "round_speedups": ratio[(m, "onednn")],
                "torch_fp32_ms": tf, "torch_int8_fakequant_ms": tq, "onednn_vs_torch_fp32": tf / f}
open("bench/results/engine.md", "w").write("\n".join(lines) + "\n")
json.dump({"threads": int(threads), "rounds": rounds, "models": table}, open("bench/results/engine.json", "w"), indent=2)
print("\n".join(lines))
PY
