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
runs_of() {  # warm-up and timed runs of each form per round: more where a run is short,
  # so that a p50 is not one noisy sample of three (this machine is shared)
  case "$1" in
    ocrnet_hrnetw48 | segformer_b0) echo "1 3" ;;  # seconds a run
    pp_mobileseg_base) echo "5 30" ;;             # tens of ms
    *) echo "2 10" ;;                             # PP-LiteSeg: a few hundred ms
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

# Each round times every model's FP32 and INT8 forms in one process, alternating run by run
# (segslim bench --vs): on this shared machine the load changes within seconds, and two
# separate processes can each meet a different load. The table gives the median over rounds
# of each form's p50, and of each round's FP32 p50 / INT8 p50 as the speed-up.
results=()
for round in $(seq 1 "$ROUNDS"); do
  for m in $MODELS; do
    json="$OUT/bench_${m}_r${round}.json"
    read -r warmup repeat < <(runs_of "$m")
    build/segslim bench --model "$OUT/${m}_folded_deploy.onnx" --vs "$OUT/${m}_int8_deploy.onnx" \
      --shape "$(shape_of "$m")" --threads "$THREADS" --warmup "$warmup" --repeat "$repeat" \
      --json "$json" > "$OUT/bench_${m}_r${round}.txt"
    results+=("$m|$json")
  done
done
# Where the time goes, per step, for the notes: separate runs (profiling drains the stream
# after every step, so it stays out of the timed rounds), one or a few per configuration.
for m in $MODELS; do
  for p in fp32 int8; do
    model="$OUT/${m}_folded_deploy.onnx"
    [ "$p" = int8 ] && model="$OUT/${m}_int8_deploy.onnx"
    read -r warmup repeat < <(runs_of "$m")
    build/segslim bench --model "$model" --shape "$(shape_of "$m")" --threads "$THREADS" \
      --warmup 1 --repeat $(( (repeat + 2) / 3 )) --profile 100000 > "$OUT/profile_${m}_${p}.txt"
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
p50, ratio, pair, shape, repeat = {}, {}, {}, {}, {}
for m, f in rows:  # FP32 as --model, INT8 as --vs
    j = json.load(open(f))
    p50.setdefault((m, "fp32"), []).append(j["p50_ms"])
    p50.setdefault((m, "int8"), []).append(j["vs"]["p50_ms"])
    ratio.setdefault(m, []).append(j["speedup"])  # this round's FP32 p50 / INT8 p50
    pair.setdefault(m, []).append(j["pair_speedup_median"])
    shape[m] = "x".join(str(d) for d in j["shape"])
    repeat[m] = j["repeat"]
p50 = {k: statistics.median(v) for k, v in p50.items()}
models = list(dict.fromkeys(m for m, _ in rows))

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

def op_times(m, p):  # ms per run by op type, from the profile run (steps drained one by one)
    txt = open(os.path.join(out, f"profile_{m}_{p}.txt")).read()
    ms = {}
    for t, op in re.findall(r"^\s+([\d.]+)\s+[\d.]+%\s+(\S+)", txt, re.M):
        ms[op] = ms.get(op, 0.0) + float(t)
    return ms

def holding_back(m):  # op types by INT8 time, each with its FP32 time and own speed-up
    f, q = op_times(m, "fp32"), op_times(m, "int8")
    total = sum(q.values())
    parts = []
    for op in sorted(q, key=q.get, reverse=True)[:6]:
        share = f"{op} {q[op]:.1f} ms ({100 * q[op] / total:.0f}% of INT8"
        if op in f:
            parts.append(f"{share}; FP32 {f[op]:.1f} ms, {f[op] / max(q[op], 1e-9):.1f}x)")
        else:
            parts.append(f"{share}; not in FP32)")
    return ", ".join(parts)

runs = ", ".join(f"{names.get(m, m)} {repeat[m]}" for m in models)
lines = [f"CPU: segslim's oneDNN engine, p50 ms (median over {rounds} rounds of each form's "
         f"p50; a round times a model's FP32 and INT8 forms in one process, alternating run "
         f"by run; timed runs of each a round: {runs}; INT8 speed-up: the median over the "
         f"rounds of each round's FP32 p50 / INT8 p50, the two measured under the same load), "
         f"{threads} threads, this machine; GPU: this build has no CUDA. "
         "mIoU in %, where a trained model exists. The models are timed as deployed: ending "
         "in ArgMax over the classes (PaddleSeg's export default, what the original timed), "
         "the class-id map as output.", "",
         "| model | input | precision | mIoU | CPU latency (ms) | INT8 speed-up | GPU latency (ms) |",
         "|---|---|---|---|---|---|---|"]
notes, table = [], {}
for m in models:
    f, q = p50[(m, "fp32")], p50[(m, "int8")]
    speedup = statistics.median(ratio[m])
    lines.append(f"| {names.get(m, m)} | {shape[m]} | FP32 | {miou(m, 'fp32')} | {f:.1f} | | - |")
    lines.append(f"| {names.get(m, m)} | {shape[m]} | INT8 | {miou(m, 'int8')} | {q:.1f} | "
                 f"{speedup:.2f}x | - |")
    bar = bars.get(m, 2.5)
    if speedup < bar:
        notes.append(f"- {names.get(m, m)}: {speedup:.2f}x, below the {bar}x bar. INT8 time by "
                     f"op type (profile run, per run), largest first: {holding_back(m)}")
    table[m] = {"shape": shape[m], "fp32_ms": f, "int8_ms": q, "int8_speedup": speedup,
                "round_speedups": ratio[m], "ratio_of_median_p50s": f / q,
                # the median over rounds of each round's median run-by-run FP32 / INT8 ratio
                "pair_speedup_median": statistics.median(pair[m]),
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
