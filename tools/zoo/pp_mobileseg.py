"""PP-MobileSeg-Base (Tang et al., "PP-MobileSeg: Explore the Fast and Accurate Semantic
Segmentation Model on Mobile Devices", arXiv 2304.05152, 2023), as PaddleSeg implements it
(paddleseg/models/pp_mobileseg.py, backbones/strideformer.py: MobileSeg_Base) and configures
it for ADE20K (configs/pp_mobileseg/pp_mobileseg_base_ade20k_512x512_80k.yml: inj_type
AAMSx8, out_feat_chs [64, 128, 192], 150 classes):

* StrideFormer-Base: four stages of MobileNetV3 inverted residuals ([k, expanded, out, SE,
  act, stride]; a 3x3 stride-2 Hardswish stem to 16 channels) producing /8 (64), /16 (128)
  and /32 (192) features; the /16 and /32 features each pass 3 blocks of strided sea
  attention (SeaFormer's squeeze-enhanced axial attention: key dim 16 / 24, 8 heads, value
  ratio 2, row and column attention on the means over W and H with learned axial positional
  embeddings, a depthwise-conv detail branch gating the result with a hard sigmoid; computed
  at half resolution after a depthwise 3x3 stride-2 conv and upsampled back) and an MLP
  (1x1 ConvBN, depthwise 3x3, ReLU6, 1x1 ConvBN, ratio 2 / 4); activation ReLU6;
* AAM (AAMSx8, "ensemble voting"): out = sigmoid(ConvBN(up(f16))) * up(sigmoid(ConvBN(f32)))
  * ConvBN(f8) + up(ConvBN(f32)), 256 channels at /8 (sigmoid as in the paper, in one
  PaddleSeg revision and in OpenMMLab's port of the released weights; another PaddleSeg
  revision passes the backbone's ReLU6 here);
* head: depthwise 1x1 ConvBNReLU (256), 1x1 conv to 150 classes, bilinear upsampling to the
  input size.

Deviations: VIM (the "valid interpolate module", an inference trick that upsamples only the
classes present after an argmax: data-dependent Unique/Gather) is replaced by the plain
bilinear upsampling of all logits, which is also what PaddleSeg runs with the config's
`upsample: intepolate` and in training; stochastic depth and dropout are not built.
SE uses Paddle's hard sigmoid slope 0.2 / offset 0.5 (one ONNX HardSigmoid). H and W must be
multiples of 32.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from common import ConvBN, HardSigmoid, reshape, resize_to, upsample


def make_divisible(v, divisor=8, min_value=None):
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def act_layer(name):
    return {"relu": nn.ReLU, "hardswish": nn.Hardswish, "relu6": nn.ReLU6}[name]()


class SEModule(nn.Module):
    def __init__(self, ch, reduction=4):
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch // reduction, 1)
        self.conv2 = nn.Conv2d(ch // reduction, ch, 1)
        self.hsig = HardSigmoid(0.2, 0.5)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * self.hsig(self.conv2(torch.relu(self.conv1(s))))


class ResidualUnit(nn.Module):
    def __init__(self, cin, mid, cout, k, stride, use_se, act):
        super().__init__()
        self.shortcut = stride == 1 and cin == cout
        self.expand_conv = ConvBN(cin, mid, 1, act=act_layer(act))
        self.bottleneck_conv = ConvBN(mid, mid, k, stride, groups=mid, act=act_layer(act))
        self.se = SEModule(mid) if use_se else nn.Identity()
        self.linear_conv = ConvBN(mid, cout, 1)

    def forward(self, x):
        y = self.linear_conv(self.se(self.bottleneck_conv(self.expand_conv(x))))
        return x + y if self.shortcut else y


class StackedMV3Block(nn.Module):
    def __init__(self, cfgs, stem, cin):
        super().__init__()
        layers = []
        if stem:
            layers.append(ConvBN(3, make_divisible(cin), 3, 2, act=nn.Hardswish()))
        for k, exp, c, se, act, s in cfgs:
            layers.append(ResidualUnit(make_divisible(cin), make_divisible(exp), make_divisible(c),
                                       k, s, se, act))
            cin = make_divisible(c)
        self.blocks = nn.Sequential(*layers)

    def forward(self, x):
        return self.blocks(x)


class AxialPosEmbed(nn.Module):
    """SqueezeAxialPositionalEmbedding: a learned [dim, 16] table linearly interpolated
    (align_corners=False) to the axis length. Kept 4-D ([1, dim, 16, 1] for rows, [1, dim,
    1, 16] for columns) so that the interpolation is a bilinear Resize of a singleton axis,
    which is exactly 1-D linear interpolation."""

    def __init__(self, dim, shape=16, axis=2):
        super().__init__()
        self.axis = axis
        size = (1, dim, shape, 1) if axis == 2 else (1, dim, 1, shape)
        self.pos_embed = nn.Parameter(torch.zeros(size))

    def forward(self, x):  # x: N, dim, L, 1 (rows) or N, dim, 1, L (columns)
        return x + resize_to(self.pos_embed, x)


class SeaAttention(nn.Module):
    def __init__(self, dim, key_dim, heads, attn_ratio=2):
        super().__init__()
        self.heads, self.key_dim = heads, key_dim
        self.scale = key_dim ** -0.5
        self.nh_kd = nh_kd = key_dim * heads
        self.d = attn_ratio * key_dim
        self.dh = dh = self.d * heads
        self.to_q = ConvBN(dim, nh_kd, 1)
        self.to_k = ConvBN(dim, nh_kd, 1)
        self.to_v = ConvBN(dim, dh, 1)
        self.stride_conv = ConvBN(dim, dim, 3, 2, groups=dim, bias=True)
        self.proj = nn.Sequential(nn.ReLU6(), ConvBN(dh, dim, 1))
        self.proj_encode_row = nn.Sequential(nn.ReLU6(), ConvBN(dh, dh, 1))
        self.proj_encode_column = nn.Sequential(nn.ReLU6(), ConvBN(dh, dh, 1))
        self.pos_emb_rowq = AxialPosEmbed(nh_kd, axis=2)
        self.pos_emb_rowk = AxialPosEmbed(nh_kd, axis=2)
        self.pos_emb_columnq = AxialPosEmbed(nh_kd, axis=3)
        self.pos_emb_columnk = AxialPosEmbed(nh_kd, axis=3)
        self.dwconv = ConvBN(2 * dh, 2 * dh, 3, groups=2 * dh, act=nn.ReLU6())
        self.pwconv = ConvBN(2 * dh, dim, 1)
        self.sigmoid = nn.Hardsigmoid()  # relu6(x + 3) / 6

    def axial(self, q, k, v, axis):
        """Attention along one axis of the squeezed (mean over the other axis) q, k, v."""
        h = self.heads
        if axis == 2:
            q, k = self.pos_emb_rowq(q), self.pos_emb_rowk(k)      # N, nh_kd, H, 1
            proj = self.proj_encode_row
        else:
            q, k = self.pos_emb_columnq(q), self.pos_emb_columnk(k)  # N, nh_kd, 1, W
            proj = self.proj_encode_column
        q = reshape(q, (0, h, self.key_dim, -1)).transpose(2, 3)   # N, h, L, kd
        k = reshape(k, (0, h, self.key_dim, -1))                    # N, h, kd, L
        v = reshape(v, (0, h, self.d, -1)).transpose(2, 3)          # N, h, L, d
        attn = torch.softmax(torch.matmul(q, k) * self.scale, dim=-1)
        xx = torch.matmul(attn, v).transpose(2, 3)                  # N, h, d, L
        shape = (0, self.dh, -1, 1) if axis == 2 else (0, self.dh, 1, -1)
        return proj(reshape(xx, shape))

    def forward(self, x_ori):
        x = self.stride_conv(x_ori)
        q, k, v = self.to_q(x), self.to_k(x), self.to_v(x)
        qkv = self.pwconv(self.dwconv(torch.cat([q, k, v], dim=1)))  # detail enhancement
        row = self.axial(q.mean(3, keepdim=True), k.mean(3, keepdim=True), v.mean(3, keepdim=True), 2)
        col = self.axial(q.mean(2, keepdim=True), k.mean(2, keepdim=True), v.mean(2, keepdim=True), 3)
        xx = self.proj(v + (row + col))  # [N,dh,H,1] + [N,dh,1,W] broadcasts to [N,dh,H,W]
        xx = self.sigmoid(xx) * qkv
        return resize_to(xx, x_ori)


class MLP(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = ConvBN(dim, hidden, 1)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act = nn.ReLU6()
        self.fc2 = ConvBN(hidden, dim, 1)

    def forward(self, x):
        return self.fc2(self.act(self.dwconv(self.fc1(x))))


class Block(nn.Module):
    def __init__(self, dim, key_dim, heads, mlp_ratio):
        super().__init__()
        self.attn = SeaAttention(dim, key_dim, heads)
        self.mlp = MLP(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(x)
        return x + self.mlp(x)


class AAM(nn.Module):
    """InjectionMultiSumallmultiallsumSimpx8."""

    def __init__(self, in_chs=(64, 128, 192), out=256):
        super().__init__()
        self.embed8 = ConvBN(in_chs[0], out, 1)
        self.act_embed16 = ConvBN(in_chs[1], out, 1)
        self.embed32 = ConvBN(in_chs[2], out, 1)
        self.act_embed32 = ConvBN(in_chs[2], out, 1)
        self.act = nn.Sigmoid()

    def forward(self, f8, f16, f32):
        low1 = self.embed8(f8)
        low2_act = self.act(self.act_embed16(upsample(f16, 2)))
        high_act = upsample(self.act(self.act_embed32(f32)), 4)
        high = upsample(self.embed32(f32), 4)
        return low2_act * high_act * low1 + high


class PPMobileSeg(nn.Module):
    def __init__(self, num_classes=150):
        super().__init__()
        cfgs = [
            [[3, 16, 16, True, "relu", 1], [3, 64, 32, False, "relu", 2], [3, 96, 32, False, "relu", 1]],
            [[5, 128, 64, True, "hardswish", 2], [5, 240, 64, True, "hardswish", 1]],
            [[5, 384, 128, True, "hardswish", 2], [5, 384, 128, True, "hardswish", 1]],
            [[5, 768, 192, True, "hardswish", 2], [5, 768, 192, True, "hardswish", 1]],
        ]
        channels = [16, 32, 64, 128, 192]
        self.smb = nn.ModuleList([StackedMV3Block(cfgs[i], i == 0, channels[i]) for i in range(4)])
        self.trans = nn.ModuleList([
            nn.Sequential(*[Block(dim, kd, 8, r) for _ in range(3)])
            for dim, kd, r in ((128, 16, 2), (192, 24, 4))])
        self.aam = AAM((64, 128, 192), 256)
        self.linear_fuse = ConvBN(256, 256, 1, groups=256, act=nn.ReLU())
        self.dropout = nn.Dropout2d(0.1)
        self.conv_seg = nn.Conv2d(256, num_classes, 1)

    def forward(self, x):
        f8 = self.smb[1](self.smb[0](x))
        f16 = self.trans[0](self.smb[2](f8))
        f32 = self.trans[1](self.smb[3](f16))
        y = self.linear_fuse(self.aam(f8, f16, f32))
        return upsample(self.conv_seg(self.dropout(y)), 8)


def pp_mobileseg_base(num_classes=150):
    return PPMobileSeg(num_classes)
