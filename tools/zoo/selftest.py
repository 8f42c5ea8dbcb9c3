#!/usr/bin/python3
"""Self-test of the zoo exports (tooling only; Debian python3-torch, python3-onnx).

    /usr/bin/python3 tools/zoo/selftest.py [NAME ...] [--segslim build/segslim] [--keep DIR]

For every network, at a small size (2 x 3 x 128 x 256, and 1 x 3 x 256 x 128):
  1. the BN form and the folded form (fold_batchnorm) give the same logits (N x K x H x W)
     in torch eval mode: max |difference| <= 1e-9 x max(1, max |logits|) in float64 (the
     folding is exact) and <= 1e-3 x max(1, max |logits|) in float32 (rounding amplified by
     a deep random network; typically a few 1e-5);
  2. both exports pass onnx.checker.check_model(full_check=True) (strict shape inference),
     declare x: N x 3 x H x W and logits: N x K x H x W with N, H, W symbolic, use only the
     op types listed in ALLOWED_OPS, the folded one has no BatchNormalization, no
     initializer is shared (an exporter-merged initializer would tie weights in training),
     and their float initializers hold exactly our parameter counts (learnable + BN
     statistics, resp. folded);
  3. a fresh build (same seed) exported at the other size has the same nodes and the same
     initializers, bit for bit: the exports are deterministic and nothing depends on the
     tracing size;
  4. with --segslim, `segslim inspect --shape 1x3x256x128` runs both files (a forward pass
     at a size they were not traced at) and reports our parameter and MAC counts exactly.
Exits non-zero on the first failure. Files go to a temporary folder unless --keep.
"""
import argparse
import collections
import copy
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import onnx  # noqa: E402
import torch  # noqa: E402

import export  # noqa: E402
from common import count, fold_batchnorm  # noqa: E402

ALLOWED_OPS = {
    "Conv", "BatchNormalization", "Relu", "Clip", "Sigmoid", "HardSigmoid", "Add", "Sub", "Mul",
    "Div", "Pow", "Sqrt", "Erf", "Concat", "AveragePool", "GlobalAveragePool", "Resize",
    "Reshape", "Transpose", "MatMul", "Softmax", "ReduceMean", "ReduceMax", "Split", "Shape",
    "Slice", "Constant",
}
SHAPE_A = (2, 3, 128, 256)
SHAPE_B = (1, 3, 256, 128)
FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16}


class Failure(Exception):
    pass


def check(cond, message):
    if not cond:
        raise Failure(message)


def export_bytes(model, shape):
    buf = io.BytesIO()
    export.export_onnx(model, buf, shape)
    return buf.getvalue()


def check_onnx(data, name, num_classes, expect_params, folded):
    model = onnx.load_from_string(data)
    onnx.checker.check_model(model, full_check=True)
    g = model.graph
    dims = lambda vi: [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]  # noqa: E731
    check([i.name for i in g.input] == ["x"] and dims(g.input[0]) == ["N", 3, "H", "W"],
          f"{name}: input is {[(i.name, dims(i)) for i in g.input]}")
    check([o.name for o in g.output] == ["logits"] and dims(g.output[0]) == ["N", num_classes, "H", "W"],
          f"{name}: output is {[(o.name, dims(o)) for o in g.output]}")
    hist = collections.Counter(n.op_type for n in g.node)
    check(set(hist) <= ALLOWED_OPS, f"{name}: op types outside the allowed set: {set(hist) - ALLOWED_OPS}")
    check(not folded or "BatchNormalization" not in hist, f"{name}: folded form has BatchNormalization")
    params = sum(math.prod(t.dims) for t in g.initializer if t.data_type in FLOAT_TYPES)
    check(params == expect_params, f"{name}: initializers hold {params} values, expected {expect_params}")
    return model, hist


def same_graph(a, b):
    """Nodes (names, types, wiring, attributes incl. Constant values) and initializers equal."""
    return (list(a.graph.node) == list(b.graph.node)
            and list(a.graph.initializer) == list(b.graph.initializer))


def segslim_inspect(segslim, path, shape):
    out = path + ".inspect.json"
    subprocess.run([segslim, "inspect", path, "--shape", "x".join(map(str, shape)), "--json", out],
                   check=True, stdout=subprocess.DEVNULL)
    with open(out) as f:
        summary = json.load(f)
    os.remove(out)
    return summary


def test(name, args, out_dir):
    spec = export.MODELS[name]
    k = spec.num_classes
    t0 = time.time()
    model = export.build(name)
    c = count(model, SHAPE_A)
    x = torch.randn(SHAPE_A, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y_bn = model(x)
    check(tuple(y_bn.shape) == (SHAPE_A[0], k) + SHAPE_A[2:] and torch.isfinite(y_bn).all(),
          f"{name}: logits {tuple(y_bn.shape)}")
    bn_bytes = export_bytes(model, SHAPE_A)
    _, hist_bn = check_onnx(bn_bytes, f"{name}.onnx", k, c["params"] + c["bn_buffers"], False)

    # folding is exact algebra: in float64 the two forms agree to rounding (~1e-12)...
    with torch.no_grad():
        x64 = x[:1, :, :, :128].double()  # 1 x 3 x 128 x 128: float64 is slow
        y64 = copy.deepcopy(model).double()(x64)
        diff64 = (y64 - fold_batchnorm(copy.deepcopy(model).double())(x64)).abs().max().item()
    scale = max(1.0, y_bn.abs().max().item())
    check(diff64 <= 1e-9 * scale, f"{name}: float64 folded logits differ by {diff64:.3g}")
    # ...and in float32 (the exported precision) they differ by rounding amplified through a
    # deep random-weight network, a few 1e-5 of the logits' range
    folded = fold_batchnorm(copy.deepcopy(model))
    with torch.no_grad():
        y_folded = folded(x)
    diff = (y_bn - y_folded).abs().max().item()
    check(diff <= 1e-3 * scale, f"{name}: folded logits differ by {diff:.3g} (max |logits| {scale:.3g})")
    folded_params = sum(p.numel() for p in folded.parameters())
    folded_bytes = export_bytes(folded, SHAPE_A)
    folded_model, hist = check_onnx(folded_bytes, f"{name}_folded.onnx", k, folded_params, True)

    fresh = fold_batchnorm(export.build(name))
    with torch.no_grad():
        y_b = fresh(torch.randn(SHAPE_B))
    check(tuple(y_b.shape) == (SHAPE_B[0], k) + SHAPE_B[2:],
          f"{name}: logits {tuple(y_b.shape)} at {SHAPE_B}")
    other = onnx.load_from_string(export_bytes(fresh, SHAPE_B))
    check(same_graph(folded_model, other),
          f"{name}: a fresh export traced at {SHAPE_B} differs from the one traced at {SHAPE_A}")

    paths = []
    for suffix, data in (("", bn_bytes), ("_folded", folded_bytes)):
        paths.append(os.path.join(out_dir, f"{name}{suffix}.onnx"))
        with open(paths[-1], "wb") as f:
            f.write(data)
    note = ""
    if args.segslim:
        cb = count(model, SHAPE_B)
        for path, params in zip(paths, (cb["params"] + cb["bn_buffers"], folded_params)):
            s = segslim_inspect(args.segslim, path, SHAPE_B)
            check(s["num_parameters"] == params and s["macs"] == cb["macs"],
                  f"{os.path.basename(path)}: segslim inspect reports {s['num_parameters']} parameters, "
                  f"{s['macs']} MACs; ours {params}, {cb['macs']}")
        note = f", segslim inspect agrees ({cb['macs'] / 1e9:.3f} GMACs at {'x'.join(map(str, SHAPE_B))})"
    print(f"ok {name}: BN vs folded max |diff| {diff64:.1e} (float64), {diff:.1e} (float32), max |logits| "
          f"{scale:.1f}; {len(bn_bytes) / 1e6:.1f} MB, "
          f"{sum(hist_bn.values())} / {sum(hist.values())} nodes{note}, {time.time() - t0:.1f} s")
    print("   ops: " + ", ".join(f"{op} {n}" for op, n in sorted(hist_bn.items())))
    for p in paths:
        if not args.keep:
            os.remove(p)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="networks (default: all)")
    ap.add_argument("--segslim", help="path of a built segslim CLI to cross-check with `inspect`")
    ap.add_argument("--keep", help="keep the exported files in this folder")
    args = ap.parse_args()
    torch.set_num_threads(1)
    names = args.names or list(export.MODELS)
    for n in names:
        if n not in export.MODELS:
            ap.error(f"unknown network {n!r}; valid: {', '.join(export.MODELS)}")
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = args.keep or tmp
        os.makedirs(out_dir, exist_ok=True)
        try:
            for n in names:
                test(n, args, out_dir)
        except Failure as e:
            sys.exit(f"selftest: FAILED: {e}")
    print(f"all {len(names)} networks ok in {time.time() - start:.1f} s")


if __name__ == "__main__":
    main()
