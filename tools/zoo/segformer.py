"""SegFormer-B0 (Xie et al., "SegFormer: Simple and Efficient Design for Semantic Segmentation
with Transformers", NeurIPS 2021; NVlabs/SegFormer mmseg/models/backbones/mix_transformer.py
and decode_heads/segformer_head.py):

* MiT-B0 encoder: 4 stages, embed dims 32/64/160/256, depths 2/2/2/2, heads 1/2/5/8,
  spatial-reduction ratios 8/4/2/1, MLP ratio 4, qkv bias, LayerNorm eps 1e-6;
  overlapping patch embeddings (7x7 stride 4 pad 3, then 3x3 stride 2 pad 1) + LayerNorm;
  efficient self-attention (K, V from a k=s=sr conv + LayerNorm of the tokens);
  Mix-FFN (Linear, 3x3 depthwise conv, GELU, Linear); a LayerNorm after each stage;
* all-MLP decoder: a Linear to 256 channels per stage, bilinear upsampling to /4, concat
  (1024), 1x1 ConvBNReLU to 256, 1x1 conv to the classes; bilinear upsampling to the input.

Layout: inside a stage the tokens stay a 4-D [N, H, W, C] tensor (Linear = MatMul on the last
axis, LayerNorm over the last axis) and attention runs on [N, heads, H, W, d] against
[N, heads, 1, d, L'] keys, so every Reshape has a constant shape (ONNX 0/-1 codes) and no
Shape op is needed to turn tokens back into an image: the graph is dynamic in N, H, W. It
computes exactly the official function. LayerNorm exports decomposed at opset 13
(ReduceMean, Sub, Pow, Sqrt, Div, ...) and GELU as its erf form.

Deviations: stochastic depth and dropout (training only) are not built. H and W must be
multiples of 32.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from common import ConvBN, relu, reshape, upsample


def to_nchw(x):
    return x.permute(0, 3, 1, 2)


def to_nhwc(x):
    return x.permute(0, 2, 3, 1)


class Attention(nn.Module):
    def __init__(self, dim, heads, sr):
        super().__init__()
        self.heads, self.d, self.sr = heads, dim // heads, sr
        self.scale = self.d ** -0.5
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        if sr > 1:
            self.sr_conv = nn.Conv2d(dim, dim, sr, sr)
            self.norm = nn.LayerNorm(dim, eps=1e-5)  # mmseg's default eps for this LayerNorm

    def forward(self, x):  # x: [N, H, W, C]
        h, d = self.heads, self.d
        q = reshape(self.q(x), (0, 0, 0, h, d)).permute(0, 3, 1, 2, 4)      # N,h,H,W,d
        if self.sr > 1:
            x = self.norm(to_nhwc(self.sr_conv(to_nchw(x))))                # N,H',W',C
        k, v = self.kv(x).split(h * d, dim=-1)
        k = reshape(k, (0, 1, -1, h, d)).permute(0, 3, 1, 4, 2)            # N,h,1,d,L'
        v = reshape(v, (0, 1, -1, h, d)).permute(0, 3, 1, 2, 4)            # N,h,1,L',d
        attn = torch.softmax(torch.matmul(q, k) * self.scale, dim=-1)       # N,h,H,W,L'
        out = torch.matmul(attn, v).permute(0, 2, 3, 1, 4)                  # N,H,W,h,d
        return self.proj(reshape(out, (0, 0, 0, -1)))


class MixFFN(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        x = to_nhwc(self.dwconv(to_nchw(self.fc1(x))))
        return self.fc2(F.gelu(x))


class Block(nn.Module):
    def __init__(self, dim, heads, sr, mlp_ratio=4):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, sr)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MixFFN(dim, dim * mlp_ratio)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Stage(nn.Module):
    def __init__(self, cin, dim, patch, stride, depth, heads, sr):
        super().__init__()
        self.patch_embed = nn.Conv2d(cin, dim, patch, stride, patch // 2)
        self.patch_norm = nn.LayerNorm(dim, eps=1e-5)
        self.blocks = nn.ModuleList([Block(dim, heads, sr) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x):  # NCHW in, NHWC out
        x = self.patch_norm(to_nhwc(self.patch_embed(x)))
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)


class SegFormer(nn.Module):
    def __init__(self, num_classes=19, dims=(32, 64, 160, 256), depths=(2, 2, 2, 2),
                 heads=(1, 2, 5, 8), srs=(8, 4, 2, 1), decoder_dim=256):
        super().__init__()
        cins = (3,) + tuple(dims[:-1])
        self.stages = nn.ModuleList([
            Stage(cins[i], dims[i], 7 if i == 0 else 3, 4 if i == 0 else 2, depths[i], heads[i], srs[i])
            for i in range(4)])
        self.linear_c = nn.ModuleList([nn.Linear(d, decoder_dim) for d in dims])
        self.linear_fuse = ConvBN(4 * decoder_dim, decoder_dim, 1, act=relu())
        self.dropout = nn.Dropout2d(0.1)
        self.linear_pred = nn.Conv2d(decoder_dim, num_classes, 1)

    def forward(self, x):
        feats = []
        for stage in self.stages:
            y = stage(x)                 # NHWC
            feats.append(y)
            x = to_nchw(y)
        # decoder: c4, c3, c2, c1 projected, upsampled to /4 and concatenated (official order)
        ups = [upsample(to_nchw(self.linear_c[i](feats[i])), 2 ** i) for i in (3, 2, 1, 0)]
        y = self.linear_fuse(torch.cat(ups, dim=1))
        y = self.linear_pred(self.dropout(y))
        return upsample(y, 4)


def segformer_b0(num_classes=19):
    return SegFormer(num_classes)
