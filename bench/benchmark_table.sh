#!/usr/bin/env bash
# The original's benchmark table for this machine: per architecture of tools/zoo, FP32 and INT8
# rows with mIoU (where a trained model and its evaluation exist, else "-"), CPU latency on
# segslim's oneDNN engine at the original's input shapes, and a GPU column ("-": this build has
# no CUDA). Writes bench/results/benchmark_table.md and .json.
#   bash bench/benchmark_table.sh      THREADS (default: all cores), ROUNDS (default 3), MODELS
# The timed models are the deployed forms: each ends in ArgMax over the classes, as PaddleSeg
# exports them (tools/export.py appends argmax by default) and as the original's table timed
# them; the class-id map is the output (bench_append_argmax).
# Latency needs no trained weights (random ones, exported by tools/zoo/export.py); INT8 models
# are the FP32 ones with Q/DQ from bench_make_qdq_model (calibrated on random inputs; scales do
# not change the latency). A model's accuracy comes from output/zoo/NAME/eval_fp32.json and
# eval_int8.json, written by `segslim eval --json` for a model trained with `segslim train`
# and compressed with `segslim compress` (README, "Model zoo").
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-$(nproc)}
ROUNDS=${ROUNDS:-3}
MODELS=${MODELS:-"ocrnet_hrnetw48 segformer_b0 pp_liteseg_t pp_mobileseg_base"}
OUT=output/zoo
mkdir -p "$OUT" bench/results
bash scripts/build.sh segslim bench_make_qdq_model bench_append_argmax

shape_of() {  # the original's input shape
  case "$1" in
    pp_mobileseg_base) echo 1x3x512x512 ;;  # ADE20K
    *) echo 1x3x1024x2048 ;;                # Cityscapes
  esac
}
calib_shape_of() {  # small calibration input the network accepts (multiples of 128)
  case "$1" in
    pp_mobileseg_base) echo 1x3x256x256 ;;
    *) echo 1x3x256x512 ;;
  esac
}

for m in $MODELS; do
  [ -f "$OUT/${m}_folded.onnx" ] || /usr/bin/python3 tools/zoo/export.py "$m" "$OUT" >&2
  [ -f "$OUT/${m}_int8.onnx" ] ||
    build/bench_make_qdq_model "$OUT/${m}_folded.onnx" "$OUT/${m}_int8.onnx" "$(calib_shape_of "$m")" \
      Conv,ConvTranspose,AveragePool,MaxPool,MatMul >&2
  for form in folded int8; do
    [ -f "$OUT/${m}_${form}_deploy.onnx" ] ||
      build/bench_append_argmax "$OUT/${m}_${form}.onnx" "$OUT/${m}_${form}_deploy.onnx" >&2
  done
done

results=()
for round in $(seq 1 "$ROUNDS"); do
  for m in $MODELS; do
    for p in fp32 int8; do
      model="$OUT/${m}_folded_deploy.onnx"
      [ "$p" = int8 ] && model="$OUT/${m}_int8_deploy.onnx"
      json="$OUT/bench_${m}_${p}_r${round}.json"
      prof=()
      [ "$round" = 1 ] && [ "$p" = int8 ] && prof=(--profile 6)
      build/segslim bench --model "$model" --shape "$(shape_of "$m")" --threads "$THREADS" \
        --warmup 1 --repeat 3 --json "$json" "${prof[@]}" > "$OUT/bench_${m}_${p}_r${round}.txt"
      results+=("$m|$p|$json")
    done
  done
done

/usr/bin/python3 - "$THREADS" "$ROUNDS" "$OUT" "${results[@]}" <<'PY'
import json, os, re, statistics, sys
threads, rounds, out = sys.argv[1], sys.argv[2], sys.argv[3]
rows = [r.split("|") for r in sys.argv[4:]]
names = {"ocrnet_hrnetw48": "OCRNet-HRNetW48", "segformer_b0": "SegFormer-B0",
         "pp_liteseg_t": "PP-LiteSeg-Tiny", "pp_liteseg_b": "PP-LiteSeg-Base",
         "pp_mobileseg_base": "PP-MobileSeg-Base"}
bars = {"pp_liteseg_t": 3.5}
p50, shape = {}, {}
for m, p, f in rows:
    j = json.load(open(f))
    p50.setdefault((m, p), []).append(j["p50_ms"])
    shape[m] = "x".join(str(d) for d in j["shape"])
p50 = {k: statistics.median(v) for k, v in p50.items()}
models = list(dict.fromkeys(m for m, _, _ in rows))

def evaluation(m, p):
    f = os.path.join(out, m, f"eval_{p}.json")
    return json.load(open(f)) if os.path.exists(f) else None

def miou(m, p):
    e = evaluation(m, p)
    return f"{100 * e['miou']:.2f}" if e else "-"

def miou_source(m):  # what the mIoU was measured on, from the evaluations themselves
    for p in ("fp32", "int8"):
        e = evaluation(m, p)
        if e:
            yield (f"{names.get(m, m)} {p.upper()}: {e['model']} on {e['data']} "
                   f"({e['num_images']} val images, {e['engine']} engine)")

def slow_steps(m):  # the non-convolution steps that cost most in INT8 (from --profile)
    txt = open(os.path.join(out, f"bench_{m}_int8_r1.txt")).read()
    steps = re.findall(r"^\s+([\d.]+)\s+([\d.]+)%\s+(\S+)", txt, re.M)
    return ", ".join(f"{op} {share}%" for _, share, op in steps if op != "Conv")[:200]

lines = [f"CPU: segslim's oneDNN engine, p50 ms (median of {rounds} interleaved rounds), "
         f"{threads} threads, this machine; GPU: this build has no CUDA. "
         "mIoU in %, where a trained model exists. The models are timed as deployed: ending "
         "in ArgMax over the classes (PaddleSeg's export default, what the original timed), "
         "the class-id map as output.", "",
         "| model | input | precision | mIoU | CPU latency (ms) | INT8 speed-up | GPU latency (ms) |",
         "|---|---|---|---|---|---|---|"]
notes, table = [], {}
for m in models:
    f, q = p50[(m, "fp32")], p50[(m, "int8")]
    speedup = f / q
    lines.append(f"| {names.get(m, m)} | {shape[m]} | FP32 | {miou(m, 'fp32')} | {f:.1f} | | - |")
    lines.append(f"| {names.get(m, m)} | {shape[m]} | INT8 | {miou(m, 'int8')} | {q:.1f} | "
                 f"{speedup:.2f}x | - |")
    bar = bars.get(m, 2.5)
    if speedup < bar:
        notes.append(f"- {names.get(m, m)}: {speedup:.2f}x, below the {bar}x bar; largest "
                     f"non-convolution INT8 steps: {slow_steps(m)}")
    table[m] = {"shape": shape[m], "fp32_ms": f, "int8_ms": q, "int8_speedup": speedup,
                "miou_fp32": miou(m, "fp32"), "miou_int8": miou(m, "int8")}
sources = [f"- {line}" for m in models for line in miou_source(m)]
if sources:
    lines += ["", "mIoU measured by `segslim eval --json` (output/zoo/NAME/eval_*.json):"] + sources
if notes:
    lines += ["", "Notes:"] + notes
open("bench/results/benchmark_table.md", "w").write("\n".join(lines) + "\n")
json.dump({"threads": int(threads), "models": table},
          open("bench/results/benchmark_table.json", "w"), indent=2)
print("\n".join(lines))
PY
