#!/usr/bin/env bash
# Data-parallel compress throughput: the bundled sample's QAT (configs/compress/
# espnet_camvid_sample.yml, 8 iterations) as 1 process x batch 2 (1 thread), 2 processes x
# batch 2 (1 thread each) and 1 process x batch 4 (2 threads), one after the other in one run.
# Writes bench/results/dist.md and dist.json from each run's compress_report.json ("qat":
# train_seconds_this_run covers the training iterations only).
#   bash bench/dist_bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=output/dist_bench
mkdir -p "$OUT" bench/results
bash scripts/build.sh segslim

config() {  # name batch
  sed -e "/^TrainConfig:/,/^[A-Z]/ s|^  batch_size: 2$|  batch_size: $2|" \
      -e "s|^  eval_iter: 4$|  eval_iter: 8|" \
      -e "s|^  model: \.\./\.\./|  model: $PWD/|" \
      -e "s|^  data: \.\./|  data: $PWD/configs/|" \
      -e "s|^  output_dir: .*|  output_dir: $PWD/$OUT/$1|" \
      configs/compress/espnet_camvid_sample.yml > "$OUT/$1.yml"
}
config p1_b2 2
config p2_b2 2
config p1_b4 4
rm -rf "$OUT/p1_b2" "$OUT/p2_b2" "$OUT/p1_b4"
build/segslim compress --config "$OUT/p1_b2.yml" --threads 1 > "$OUT/p1_b2.log" 2>&1
build/segslim compress --config "$OUT/p2_b2.yml" --nproc 2 --threads 1 > "$OUT/p2_b2.log" 2>&1
build/segslim compress --config "$OUT/p1_b4.yml" --threads 2 > "$OUT/p1_b4.log" 2>&1

/usr/bin/python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
rows = [("p1_b2", "1 process, 1 thread, batch 2"),
        ("p2_b2", "2 processes, 1 thread each, batch 2 each"),
        ("p1_b4", "1 process, 2 threads, batch 4")]
lines = ["Compress QAT on the bundled sample (480x360), 8 iterations, this machine; training "
         "iterations only.", "",
         "| run | s/iteration | images/s |", "|---|---|---|"]
table = {}
for key, label in rows:
    q = json.load(open(f"{out}/{key}/compress_report.json"))["qat"]
    per_iter = q["train_seconds_this_run"] / q["iterations"]
    lines.append(f"| {label} | {per_iter:.2f} | {q['train_images_per_s']:.2f} |")
    table[key] = {"seconds_per_iteration": per_iter, "images_per_s": q["train_images_per_s"],
                  "global_batch_size": q["global_batch_size"]}
open("bench/results/dist.md", "w").write("\n".join(lines) + "\n")
json.dump(table, open("bench/results/dist.json", "w"), indent=2)
print("\n".join(lines))
PY
