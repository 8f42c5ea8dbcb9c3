// Evaluates an ONNX model in ONNX Runtime (Node) on tensors written by bench_dump_eval_inputs,
// with segslim's metric conventions (ignore_index skipped, predictions >= num_classes are
// misses), and prints one JSON line.
//   node bench/ort_miou.js MODEL DIR N NUM_CLASSES IGNORE_INDEX H W
const ort = require('onnxruntime-node');
const fs = require('fs');

(async () => {
  const [model, dir] = process.argv.slice(2, 4);
  const [n, K, ignore, H, W] = process.argv.slice(4, 9).map(Number);
  const session = await ort.InferenceSession.create(model, {intraOpNumThreads: 2});
  const input = session.inputNames[0];
  const cm = new Float64Array(K * (K + 1));
  const HW = H * W;
  const started = Date.now();
  for (let i = 0; i < n; i++) {
    const xb = fs.readFileSync(`${dir}/${i}.x`);
    const label = fs.readFileSync(`${dir}/${i}.y`);
    const x = new ort.Tensor('float32', new Float32Array(xb.buffer, xb.byteOffset, xb.length / 4),
                             [1, 3, H, W]);
    const out = await session.run({[input]: x});
    const y = out[session.outputNames[0]];
    const C = y.dims[1];
    for (let p = 0; p < HW; p++) {
      const t = label[p];
      if (t === ignore) continue;
      let best = 0;
      for (let c = 1; c < C; c++) if (y.data[c * HW + p] > y.data[best * HW + p]) best = c;
      cm[t * (K + 1) + Math.min(best, K)]++;
    }
  }
  const classIou = [];
  let correct = 0, total = 0;
  for (let c = 0; c < K; c++) {
    let row = 0, col = 0;
    for (let j = 0; j <= K; j++) row += cm[c * (K + 1) + j];
    for (let t = 0; t < K; t++) col += cm[t * (K + 1) + c];
    const tp = cm[c * (K + 1) + c];
    classIou.push(row + col - tp > 0 ? tp / (row + col - tp) : 0);
    correct += tp;
    total += row;
  }
  const miou = classIou.reduce((a, b) => a + b, 0) / K;
  console.log(JSON.stringify({runtime: `onnxruntime-node ${ort.env.versions.common}`, model,
                              num_images: n, miou, acc: correct / total, class_iou: classIou,
                              seconds: (Date.now() - started) / 1000}));
})();
