"""Building blocks shared by the zoo networks (tooling only; Debian python3-torch 1.13).

Every BatchNorm of a zoo network sits in a ConvBN right after its convolution, so that
fold_batchnorm() can turn the training form (BatchNormalization kept) into the inference
form (BN folded into the convolution weights) without a graph pass.

Shapes stay dynamic in N, H and W without data-dependent shape arithmetic where a static
formula exists: reshape() emits an ONNX Reshape with a constant shape that uses ONNX's 0
(copy this dimension) and -1 (infer) codes, and upsample() a Resize with constant scales.
Only resizes whose factor depends on the input size (pyramid-pooling bins, PP-MobileSeg's
positional embeddings and strided attention) read sizes through Shape.
"""
import contextlib
import math
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

# torch 1.13 announces that g.op() (which our symbolic() functions use) leaves in 1.14
warnings.filterwarnings("ignore", ".*_graph_op.*", FutureWarning)


class ConvBN(nn.Module):
    """Conv2d -> BatchNorm2d -> activation (any of them optional except the conv)."""

    def __init__(self, cin, cout, k=1, stride=1, padding=None, groups=1, bias=False,
                 act=None, bn=True, dilation=1):
        super().__init__()
        if padding is None:
            padding = (k // 2) * dilation
        self.conv = nn.Conv2d(cin, cout, k, stride, padding, dilation, groups, bias=bias)
        self.bn = nn.BatchNorm2d(cout) if bn else nn.Identity()
        self.act = act if act is not None else nn.Identity()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))

    @torch.no_grad()
    def fold(self):
        """BN(conv(x)) = gamma * (W x + b - mean) / sqrt(var + eps) + beta, so with
        s = gamma / sqrt(var + eps) per output channel: W' = s W, b' = s (b - mean) + beta."""
        if not isinstance(self.bn, nn.BatchNorm2d):
            return
        bn, conv = self.bn, self.conv
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                           conv.padding, conv.dilation, conv.groups, bias=True,
                           device=conv.weight.device, dtype=conv.weight.dtype)
        folded.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
        folded.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
        self.conv = folded
        self.bn = nn.Identity()


def relu():
    return nn.ReLU()


def fold_batchnorm(model):
    """Folds every ConvBN in place; fails if a BatchNorm is left (the inference form has none)."""
    for m in model.modules():
        if isinstance(m, ConvBN):
            m.fold()
    left = [n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert not left, f"BatchNorm outside a ConvBN: {left}"
    return model


def _onnx_reshape_target(in_shape, spec):
    """ONNX Reshape semantics (allowzero=0): 0 copies the input dimension, -1 is inferred."""
    out = [in_shape[i] if d == 0 else d for i, d in enumerate(spec)]
    if -1 in out:
        known = math.prod(d for d in out if d != -1)
        total = math.prod(in_shape)
        assert known > 0 and total % known == 0, f"cannot reshape {tuple(in_shape)} to {spec}"
        out[out.index(-1)] = total // known
    assert math.prod(out) == math.prod(in_shape), f"cannot reshape {tuple(in_shape)} to {spec}"
    return out


@contextlib.contextmanager
def _untraced():
    """Inside an autograd.Function whose symbolic() defines the exported node, keeps the
    ONNX tracer from recording the eager computation (shape arithmetic on plain ints)."""
    state = torch._C._get_tracing_state()
    torch._C._set_tracing_state(None)
    try:
        yield
    finally:
        torch._C._set_tracing_state(state)


class _StaticReshape(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, spec):
        with _untraced():
            ctx.in_shape = tuple(int(d) for d in x.shape)
            return x.reshape(_onnx_reshape_target(list(ctx.in_shape), spec))

    @staticmethod
    def backward(ctx, grad):
        return grad.reshape(ctx.in_shape), None

    @staticmethod
    def symbolic(g, x, spec):
        return g.op("Reshape", x, g.op("Constant", value_t=torch.tensor(spec, dtype=torch.int64)))


def reshape(x, spec):
    """Reshape to `spec` with ONNX's 0/-1 codes, exported as Reshape with a constant shape
    (no Shape/Gather/Concat chain), so the graph stays valid for any N, H, W."""
    spec = [int(d) for d in spec]
    if -1 not in spec and 0 in spec:
        # same result (the inferred size is the copied one); torch's exporter-side shape
        # inference cannot handle a 0 without a -1
        spec[len(spec) - 1 - spec[::-1].index(0)] = -1
    return _StaticReshape.apply(x, tuple(spec))


class _HardSigmoid(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, alpha, beta):
        ctx.save_for_backward(x)
        ctx.alpha, ctx.beta = alpha, beta
        with _untraced():
            return torch.clamp(alpha * x + beta, 0.0, 1.0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        y = ctx.alpha * x + ctx.beta
        return grad * ctx.alpha * ((y > 0) & (y < 1)).to(grad.dtype), None, None

    @staticmethod
    def symbolic(g, x, alpha, beta):
        return g.op("HardSigmoid", x, alpha_f=alpha, beta_f=beta)


class HardSigmoid(nn.Module):
    """clip(alpha * x + beta, 0, 1) as one ONNX HardSigmoid (Paddle's slope/offset form)."""

    def __init__(self, alpha=0.2, beta=0.5):
        super().__init__()
        self.alpha, self.beta = float(alpha), float(beta)

    def forward(self, x):
        return _HardSigmoid.apply(x, self.alpha, self.beta)


class _Resize(torch.autograd.Function):
    """Bilinear resize (align_corners=False, ONNX half_pixel) either by a constant factor or
    to the H, W of a reference tensor, exported as one Resize whose scales are a Constant
    (factor) or whose sizes are Concat(Shape(x)[0:2], Shape(ref)[2:4]) (reference)."""

    @staticmethod
    def forward(ctx, x, ref, factor):
        with _untraced():
            ctx.in_size = tuple(int(d) for d in x.shape)
            if factor is not None:
                y = F.interpolate(x, scale_factor=float(factor), mode="bilinear", align_corners=False)
            else:
                y = F.interpolate(x, size=tuple(int(d) for d in ref.shape[-2:]), mode="bilinear",
                                  align_corners=False)
            ctx.out_size = tuple(int(d) for d in y.shape[-2:])
            ctx.factor = factor
            return y

    @staticmethod
    def backward(ctx, grad):
        scale = float(ctx.factor) if ctx.factor is not None else None
        gx = torch.ops.aten.upsample_bilinear2d_backward(grad.contiguous(), list(ctx.out_size),
                                                        list(ctx.in_size), False, scale, scale)
        return gx, None, None

    @staticmethod
    def symbolic(g, x, ref, factor):
        from torch.onnx import symbolic_helper
        empty = symbolic_helper._optional_input_placeholder_tensor(g)
        attrs = dict(coordinate_transformation_mode_s="half_pixel", mode_s="linear",
                     nearest_mode_s="floor", cubic_coeff_a_f=-0.75)
        if factor is not None:
            scales = g.op("Constant", value_t=torch.tensor([1.0, 1.0, factor, factor], dtype=torch.float32))
            return g.op("Resize", x, empty, scales, **attrs)

        def dims(t, lo, hi):
            const = lambda v: g.op("Constant", value_t=torch.tensor([v], dtype=torch.int64))  # noqa: E731
            return g.op("Slice", g.op("Shape", t), const(lo), const(hi), const(0))

        sizes = g.op("Concat", dims(x, 0, 2), dims(ref, 2, 4), axis_i=0)
        return g.op("Resize", x, empty, empty, sizes, **attrs)


def upsample(x, factor):
    """Bilinear (align_corners=False) by a constant factor: Resize with constant scales.
    Exact when the feature sizes are the input size divided by powers of two."""
    if factor == 1:
        return x
    return _Resize.apply(x, None, float(factor))


def resize_to(x, ref):
    """Bilinear (align_corners=False) to ref's H, W, read through Shape (only where the factor
    depends on the input size)."""
    return _Resize.apply(x, ref, None)


def avg_pool_bins(x, bins):
    """AdaptiveAvgPool2d(bins) for H and W divisible by `bins` (bin means of equal blocks),
    as Reshape/ReduceMean/Transpose with constant shapes, so no kernel size depends on the
    input size. bins == 1 is GlobalAveragePool."""
    if bins == 1:
        return F.adaptive_avg_pool2d(x, 1)
    y = reshape(x, (0, 0, 0, bins, -1)).mean(-1)   # N, C, H, bins_w
    y = y.transpose(2, 3)                           # N, C, bins_w, H
    y = reshape(y, (0, 0, 0, bins, -1)).mean(-1)   # N, C, bins_w, bins_h
    return y.transpose(2, 3)                        # N, C, bins_h, bins_w


@torch.no_grad()
def init_weights(model, seed, calib_shape=(2, 3, 64, 128)):
    """Deterministic random weights with realistic BatchNorm statistics: He-normal convs,
    truncated-normal linears (std 0.02), random biases and norm affine parameters (all
    distinct: torch's exporter would merge equal initializers into one shared tensor,
    which would tie them in training), then the running
    statistics of every BN set to the statistics of one random batch (train-mode forward
    with cumulative averaging), so activations stay O(1) in eval mode and folding is
    exercised with non-trivial mean/var."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1] // m.groups
            m.weight.normal_(0.0, math.sqrt(2.0 / fan_out), generator=gen)
            if m.bias is not None:
                m.bias.uniform_(-0.05, 0.05, generator=gen)
        elif isinstance(m, nn.Linear):
            m.weight.normal_(0.0, 0.02, generator=gen).clamp_(-0.04, 0.04)
            if m.bias is not None:
                m.bias.uniform_(-0.02, 0.02, generator=gen)
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.uniform_(0.5, 1.5, generator=gen)
            m.bias.uniform_(-0.1, 0.1, generator=gen)
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batch
        elif isinstance(m, nn.LayerNorm):
            m.weight.uniform_(0.8, 1.2, generator=gen)
            m.bias.uniform_(-0.05, 0.05, generator=gen)
    for name, p in model.named_parameters(recurse=True):
        if name.endswith("pos_embed"):
            p.normal_(0.0, 1.0, generator=gen)
    x = torch.randn(calib_shape, generator=gen)
    model.train()
    model(x)
    model.eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1
    return model


class _MacCounter(TorchDispatchMode):
    """Counts multiply-accumulates at the ATen level, the same quantities segslim inspect
    counts on the ONNX graph: convolution (every output element needs C_in/groups * k_h * k_w
    MACs; transposed: every input element C_out/groups * k_h * k_w), matrix products (output
    elements times the contracted dimension: Linear layers and attention's Q K^T and A V)."""

    def __init__(self):
        super().__init__()
        self.macs = {"conv": 0, "linear": 0, "attention": 0}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if name == "convolution":
            x, w, transposed = args[0], args[1], args[6]
            per = math.prod(w.shape[1:])
            self.macs["conv"] += (x.numel() if transposed else out.numel()) * per
        elif name == "mm":  # Linear layers (weights)
            self.macs["linear"] += out.numel() * args[0].shape[-1]
        elif name == "addmm":
            self.macs["linear"] += out.numel() * args[1].shape[-1]
        elif name == "bmm":  # products of two activations: attention maps, OCR's gather
            self.macs["attention"] += out.numel() * args[0].shape[-1]
        return out


def count(model, shape):
    """Parameters and MACs of `model` (eval mode) at input `shape`, without computing
    anything: the forward runs on meta tensors.

    Returns a dict: params (learnable parameters, the papers' convention), bn_buffers
    (running mean + var elements), conv_macs, linear_macs, attention_macs (products of two
    activations) and macs (their sum)."""
    params = sum(p.numel() for p in model.parameters())
    bn_buffers = sum(m.running_mean.numel() + m.running_var.numel()
                     for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    meta = _to_meta(model)
    counter = _MacCounter()
    with torch.no_grad(), counter:
        meta(torch.empty(shape, device="meta"))
    macs = counter.macs
    return {"params": params, "bn_buffers": bn_buffers, "conv_macs": macs["conv"],
            "linear_macs": macs["linear"], "attention_macs": macs["attention"],
            "macs": sum(macs.values())}


def _to_meta(model):
    import copy
    meta = copy.deepcopy(model).to("meta")
    return meta.eval()
