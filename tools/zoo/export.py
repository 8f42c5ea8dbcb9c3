#!/usr/bin/python3
"""Export the zoo networks to ONNX and count their parameters and MACs.

Tooling only (Debian python3-torch 1.13, python3-onnx):

    /usr/bin/python3 tools/zoo/export.py --list
    /usr/bin/python3 tools/zoo/export.py NAME OUT_DIR [--shape NxCxHxW] [--classes K]
    /usr/bin/python3 tools/zoo/export.py count [NAME ...]

Export writes OUT_DIR/NAME.onnx (BatchNormalization kept: the training form, for QAT and
fine-tuning) and OUT_DIR/NAME_folded.onnx (every BN folded into its convolution: the
inference form), opset 13, input "x" (N x 3 x H x W), output "logits" (N x K x H x W), N, H
and W dynamic. --shape is only the tracing shape (default 1x3x256x512); the graph does not
depend on it. Weights are random but deterministic (seeded), with BN statistics taken from
one random batch. Exports can be large (OCRNet-HRNetW48: ~280 MB each): use a git-ignored
OUT_DIR such as build/zoo or out/zoo.

count prints, per network, the parameters (learnable; plus BN running statistics, which is
what NAME.onnx stores and PaddleSeg counts; and the folded form's), the MACs at the original
input shape, and ours against each published number at that number's own input shape.
What counts as a MAC: one multiply-accumulate of a Conv (output elements x C_in/groups x
k_h x k_w), a Linear layer (output elements x in_features) or a product of two activations
(attention maps: output elements x the contracted dimension), exactly what `segslim inspect`
counts on the ONNX graph (Conv, ConvTranspose, MatMul, Gemm). Nothing else (BN, activations,
pooling, resize, softmax, LayerNorm, element-wise ops) is counted.
"""
import argparse
import collections
import os
import sys
import time
import warnings

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

import ocrnet_hrnet  # noqa: E402
import pp_liteseg  # noqa: E402
import pp_mobileseg  # noqa: E402
import segformer  # noqa: E402
from common import count, fold_batchnorm, init_weights  # noqa: E402

Spec = collections.namedtuple("Spec", "builder num_classes shape seed about min_multiple")
Ref = collections.namedtuple("Ref", "source shape num_classes params macs params_kind macs_kind note")

# params_kind: which of our counts the source's parameter count corresponds to:
#   "learnable" (nn.Parameter elements; mmcv, PyTorch) or "with_bn_stats" (plus BN running
#   mean/var: Paddle registers them as parameters and paddle.flops/summary count them).
# macs_kind: "all" (conv + linear + attention), or "layers" (conv + linear only: hook-based
#   counters such as paddle.flops and mmcv's see layers, not functional matmuls).
MODELS = collections.OrderedDict([
    ("pp_liteseg_t", Spec(pp_liteseg.pp_liteseg_t, 19, (1, 3, 1024, 2048), 11,
                          "PP-LiteSeg-T (STDC1 encoder, SPPM, UAFM decoder 32/64/128), Cityscapes", 128)),
    ("pp_liteseg_b", Spec(pp_liteseg.pp_liteseg_b, 19, (1, 3, 1024, 2048), 12,
                          "PP-LiteSeg-B (STDC2 encoder, SPPM, UAFM decoder 64/96/128), Cityscapes", 128)),
    ("segformer_b0", Spec(segformer.segformer_b0, 19, (1, 3, 1024, 2048), 13,
                          "SegFormer-B0 (MiT-B0 encoder, all-MLP decoder 256), Cityscapes", 32)),
    ("pp_mobileseg_base", Spec(pp_mobileseg.pp_mobileseg_base, 150, (1, 3, 512, 512), 14,
                               "PP-MobileSeg-Base (StrideFormer-Base, AAM), ADE20K 150 classes", 32)),
    ("ocrnet_hrnetw48", Spec(ocrnet_hrnet.ocrnet_hrnetw48, 19, (1, 3, 1024, 2048), 15,
                             "OCRNet (OCR head 512/256) on HRNetV2-W48, Cityscapes", 32)),
])

PADDLE_ZOO = "PaddleSeg docs/model_zoo_overview.md, summary table (paddle.flops, 1024x512)"
REFERENCES = {
    "pp_liteseg_t": [],
    "pp_liteseg_b": [],
    "segformer_b0": [
        Ref("SegFormer paper, Table 1 (ADE20K)", (1, 3, 512, 512), 150, 3.8e6, 8.4e9, "learnable", "all",
            "mmcv get_model_complexity_info (MACs) + attention MACs (tools/get_flops.py sra_flops)"),
        Ref("SegFormer paper, Table 1 and real-time table (Cityscapes)", (1, 3, 1024, 2048), 19, 3.8e6, 125.5e9,
            "learnable", "all", "same counter; the table's 3.8M is the ADE20K model's"),
        Ref("SegFormer paper, real-time table (Cityscapes 768x1536)", (1, 3, 768, 1536), 19, 3.8e6, 51.7e9,
            "learnable", "all", "recalled, not re-checked here"),
        Ref("SegFormer paper, real-time table (Cityscapes 640x1280)", (1, 3, 640, 1280), 19, 3.8e6, 31.5e9,
            "learnable", "all", "recalled, not re-checked here"),
        Ref("SegFormer paper, real-time table (Cityscapes 512x1024)", (1, 3, 512, 1024), 19, 3.8e6, 17.7e9,
            "learnable", "all", "recalled, not re-checked here"),
        Ref(PADDLE_ZOO, (1, 3, 512, 1024), 19, 3.72e6, 13.63e9, "with_bn_stats", "layers",
            "paddle.flops hooks layers: attention matmuls not counted"),
    ],
    "pp_mobileseg_base": [
        Ref("PaddleSeg configs/pp_mobileseg/README.md (ADE20K table)", (1, 3, 512, 512), 150, 5.62e6, None,
            "learnable", None, "no FLOPs published; see tools/zoo/README.md on the 5.62M"),
        Ref("PP-MobileSeg abstract: 32.9 % fewer than SeaFormer-Base's 8.6M", (1, 3, 512, 512), 150,
            8.6e6 * (1 - 0.329), None, "learnable", None, "derived: 8.6M x 0.671 = 5.77M"),
    ],
    "ocrnet_hrnetw48": [
        Ref(PADDLE_ZOO, (1, 3, 512, 1024), 19, 70.47e6, 324.66e9, "with_bn_stats", "layers",
            "the 1024x2048 cost is 4x this (1298.6 G) up to the tiny OCR attention term"),
    ],
}
# Encoder-level checks (networks that are not zoo members but share our backbone code).
BACKBONE_REFERENCES = {
    "pp_liteseg_t": [("STDC1 + ImageNet head vs STDC paper / checkpoint STDCNet813M (813M FLOPs)",
                      lambda: pp_liteseg.STDCClassifier([2, 2, 2]), (1, 3, 224, 224), None, 813e6)],
    "pp_liteseg_b": [("STDC2 + ImageNet head vs STDC paper / checkpoint STDCNet1446 (1446M FLOPs)",
                      lambda: pp_liteseg.STDCClassifier([4, 5, 3]), (1, 3, 224, 224), None, 1446e6)],
    "ocrnet_hrnetw48": [("FCN-HRNetW48 vs " + PADDLE_ZOO + ": 65.94M (with BN stats), 187.50G",
                         lambda: ocrnet_hrnet.FCNHRNet(19), (1, 3, 512, 1024), 65.94e6, 187.50e9)],
}


def parse_shape(text):
    dims = tuple(int(d) for d in text.lower().split("x"))
    if len(dims) != 4:
        raise argparse.ArgumentTypeError(f"shape must be NxCxHxW, got {text!r}")
    return dims


def build(name, num_classes=None, calib_shape=(2, 3, 128, 256)):
    """The network `name` in eval mode, random deterministic weights (BN statistics from one
    random batch of calib_shape)."""
    spec = MODELS[name]
    torch.manual_seed(spec.seed)
    model = spec.builder(num_classes or spec.num_classes)
    return init_weights(model, spec.seed, calib_shape)


def export_onnx(model, dst, shape):
    """Traces `model` at `shape` and writes ONNX opset 13 to `dst` (a path or a file object)."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    dynamic = {"x": {0: "N", 2: "H", 3: "W"}, "logits": {0: "N", 2: "H", 3: "W"}}
    with torch.no_grad(), warnings.catch_warnings():
        # the empty optional roi/scales inputs of our Resize nodes have no type for torch's
        # own shape inference; onnx's strict checker (selftest.py) validates the result
        warnings.filterwarnings("ignore", "The shape inference of prim::Constant type is missing")
        torch.onnx.export(model, (x,), dst, opset_version=13, input_names=["x"],
                          output_names=["logits"], dynamic_axes=dynamic,
                          training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)


def export(name, out_dir, shape=(1, 3, 256, 512), num_classes=None):
    os.makedirs(out_dir, exist_ok=True)
    model = build(name, num_classes)
    paths = []
    for suffix in ("", "_folded"):
        if suffix:
            fold_batchnorm(model)
        path = os.path.join(out_dir, f"{name}{suffix}.onnx")
        tmp = path + ".tmp.onnx"
        export_onnx(model, tmp, shape)
        os.replace(tmp, path)  # never leave a half-written model under the final name
        paths.append(path)
    return paths


def counts(name, shape=None, num_classes=None):
    """count() of the network plus the folded form's parameters (no weights are computed)."""
    spec = MODELS[name]
    torch.manual_seed(spec.seed)
    model = spec.builder(num_classes or spec.num_classes).eval()
    c = count(model, shape or spec.shape)
    c["params_with_bn_stats"] = c["params"] + c["bn_buffers"]
    c["params_folded"] = sum(p.numel() for p in fold_batchnorm(model).parameters())
    return c


def rel(ours, ref):
    return f"{100.0 * (ours - ref) / ref:+.1f} %"


def print_counts(names):
    for name in names:
        spec = MODELS[name]
        c = counts(name)
        shape = "x".join(map(str, spec.shape))
        print(f"{name}: {spec.about}")
        print(f"  parameters: {c['params'] / 1e6:.3f} M learnable, "
              f"{c['params_with_bn_stats'] / 1e6:.3f} M with BN statistics ({name}.onnx), "
              f"{c['params_folded'] / 1e6:.3f} M folded ({name}_folded.onnx)")
        print(f"  MACs at {shape}: {c['macs'] / 1e9:.2f} G (conv {c['conv_macs'] / 1e9:.2f}, linear "
              f"{c['linear_macs'] / 1e9:.2f}, attention {c['attention_macs'] / 1e9:.2f})")
        for ref in REFERENCES[name]:
            r = counts(name, ref.shape, ref.num_classes)
            p = r["params"] if ref.params_kind == "learnable" else r["params_with_bn_stats"]
            line = f"  vs {ref.source} at {'x'.join(map(str, ref.shape))}, {ref.num_classes} classes: "
            line += f"params {p / 1e6:.3f} M vs {ref.params / 1e6:.2f} M ({rel(p, ref.params)})"
            if ref.macs:
                m = r["macs"] if ref.macs_kind == "all" else r["conv_macs"] + r["linear_macs"]
                line += f"; MACs {m / 1e9:.2f} G vs {ref.macs / 1e9:.2f} G ({rel(m, ref.macs)})"
            print(line + f"  [{ref.note}]")
        for label, make, bshape, bparams, bmacs in BACKBONE_REFERENCES.get(name, []):
            net = make().eval()
            r = count(net, bshape)
            line = f"  encoder check, {label}: "
            if bparams:
                p = r["params"] + r["bn_buffers"]
                line += f"params {p / 1e6:.3f} M ({rel(p, bparams)}); "
            else:
                line += f"params {r['params'] / 1e6:.3f} M; "
            print(line + f"MACs {r['macs'] / 1e9:.3f} G ({rel(r['macs'], bmacs)})")
        if not REFERENCES[name]:
            print("  no published parameter or FLOP count (see tools/zoo/README.md)")


def main(argv=None):
    torch.set_num_threads(1)
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["count"]:
        names = argv[1:] or list(MODELS)
        unknown = [n for n in names if n not in MODELS]
        if unknown:
            sys.exit(f"export.py: error: unknown network {unknown[0]!r}; valid: {', '.join(MODELS)}")
        print_counts(names)
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--list", action="store_true", help="list the networks and exit")
    ap.add_argument("name", nargs="?", help="network (see --list), or 'count'")
    ap.add_argument("out_dir", nargs="?", help="where NAME.onnx and NAME_folded.onnx go")
    ap.add_argument("--shape", type=parse_shape, default=(1, 3, 256, 512),
                    help="tracing shape NxCxHxW (the graph is dynamic in N, H, W)")
    ap.add_argument("--classes", type=int, default=None, help="number of classes (default: the original's)")
    args = ap.parse_args(argv)
    if args.list:
        for name, spec in MODELS.items():
            print(f"{name:18s} {spec.about}; original input {'x'.join(map(str, spec.shape))}; "
                  f"H, W multiples of {spec.min_multiple}")
        return
    if args.name is None or not args.out_dir:
        ap.error(f"give a network ({', '.join(MODELS)}) and an output folder, or --list, or count")
    if args.name not in MODELS:
        ap.error(f"unknown network {args.name!r}; valid: {', '.join(MODELS)}")
    m = MODELS[args.name].min_multiple
    if args.shape[2] % m or args.shape[3] % m:
        ap.error(f"{args.name} needs H and W multiples of {m}, got --shape {'x'.join(map(str, args.shape))}")
    start = time.time()
    for path in export(args.name, args.out_dir, args.shape, args.classes):
        print(f"wrote {path} ({os.path.getsize(path) / 1e6:.1f} MB)")
    print(f"{time.time() - start:.1f} s")


if __name__ == "__main__":
    main()
