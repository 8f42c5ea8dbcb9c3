"""PP-LiteSeg (Peng et al., "PP-LiteSeg: A Superior Real-Time Semantic Segmentation Model",
arXiv 2204.02681, 2022), as PaddleSeg implements it (paddleseg/models/pp_liteseg.py,
backbones/stdcnet.py, layers/tensor_fusion.py) and configures it for Cityscapes
(configs/pp_liteseg/pp_liteseg_stdc{1,2}_cityscapes_1024x512_scale0.5_160k.yml):

* encoder: STDC1 (T) or STDC2 (B) (Fan et al., "Rethinking BiSeNet", CVPR 2021): two
  stride-2 3x3 ConvBNReLU, then stages of STDC modules (1x1 conv to C/2, 3x3 convs to C/4,
  C/8, C/8 concatenated; at stride 2 a depthwise 3x3 stride-2 ConvBN before the first 3x3
  and a 3x3 average pool on the 1x1 branch); 2/2/2 (STDC1) or 4/5/3 (STDC2) modules at /8,
  /16, /32 with 256/512/1024 channels;
* SPPM on the /32 feature: average pooling to 1x1, 2x2, 4x4 bins, a 1x1 ConvBNReLU to 128
  each, bilinear upsampling, sum, a 3x3 ConvBNReLU (128);
* FLD decoder of UAFMs with spatial attention (/32, /16, /8): x -> 3x3 ConvBNReLU to the
  high-level channels; y upsampled 2x; alpha = sigmoid(ConvBN(ConvBNReLU(cat[mean_c(x),
  max_c(x), mean_c(y), max_c(y)]))); out = 3x3 ConvBNReLU(alpha x + (1 - alpha) y);
  output channels 32/64/128 (T) and 64/96/128 (B, PaddleSeg's defaults);
* segmentation head on the /8 output: 3x3 ConvBNReLU (32 for T, 64 for B) and a 1x1 conv
  to the classes; bilinear upsampling to the input size.

Deviations: the auxiliary /16 and /32 heads (training-time deep supervision, absent from
the exported inference model) and STDCNet's unused `conv_last` are not built; the UAFM at
/32, whose "upsampling" of the SPPM output is to the same size (an identity), has no Resize.
Input H and W must be multiples of 128 (the 4x4 SPPM bins pool equal blocks of the /32 map).
"""
import torch
import torch.nn as nn

from common import ConvBN, avg_pool_bins, relu, resize_to, upsample


class STDCModule(nn.Module):
    """STDC "CatBottleneck" with block_num 4."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.stride = stride
        self.conv0 = ConvBN(cin, cout // 2, 1, act=relu())
        if stride == 2:
            self.avd = ConvBN(cout // 2, cout // 2, 3, 2, groups=cout // 2)
            # Paddle's AvgPool2D is exclusive: padded zeros are not counted
            self.skip = nn.AvgPool2d(3, 2, 1, count_include_pad=False)
        self.conv1 = ConvBN(cout // 2, cout // 4, 3, act=relu())
        self.conv2 = ConvBN(cout // 4, cout // 8, 3, act=relu())
        self.conv3 = ConvBN(cout // 8, cout // 8, 3, act=relu())

    def forward(self, x):
        a = self.conv0(x)
        b = self.conv1(self.avd(a) if self.stride == 2 else a)
        c = self.conv2(b)
        d = self.conv3(c)
        return torch.cat([self.skip(a) if self.stride == 2 else a, b, c, d], dim=1)


class STDCNet(nn.Module):
    def __init__(self, layers, base=64):
        super().__init__()
        self.x2 = ConvBN(3, base // 2, 3, 2, act=relu())
        self.x4 = ConvBN(base // 2, base, 3, 2, act=relu())
        stages, cin = [], base
        for i, n in enumerate(layers):
            cout = base * 4 * 2 ** i
            stages.append(nn.Sequential(*[STDCModule(cin if j == 0 else cout, cout, 2 if j == 0 else 1)
                                          for j in range(n)]))
            cin = cout
        self.x8, self.x16, self.x32 = stages
        self.feat_channels = [base // 2, base, base * 4, base * 8, base * 16]

    def forward(self, x):
        f2 = self.x2(x)
        f4 = self.x4(f2)
        f8 = self.x8(f4)
        f16 = self.x16(f8)
        return f2, f4, f8, f16, self.x32(f16)


class SPPM(nn.Module):
    """Simple pyramid pooling module (PaddleSeg's PPContextModule)."""

    def __init__(self, cin, mid, cout, bins=(1, 2, 4)):
        super().__init__()
        self.bins = bins
        # PaddleSeg's layers.ConvBNReLU keeps the conv bias unless told otherwise
        self.stages = nn.ModuleList([ConvBN(cin, mid, 1, bias=True, act=relu()) for _ in bins])
        self.conv_out = ConvBN(mid, cout, 3, bias=True, act=relu())

    def forward(self, x):
        out = None
        for b, conv in zip(self.bins, self.stages):
            y = resize_to(conv(avg_pool_bins(x, b)), x)
            out = y if out is None else out + y
        return self.conv_out(out)


class UAFM(nn.Module):
    """Unified attention fusion module with spatial attention (UAFM_SpAtten)."""

    def __init__(self, x_ch, y_ch, out_ch, upsample_y=True):
        super().__init__()
        self.upsample_y = upsample_y
        self.conv_x = ConvBN(x_ch, y_ch, 3, act=relu())
        self.conv_out = ConvBN(y_ch, out_ch, 3, act=relu())
        self.conv_xy_atten = nn.Sequential(ConvBN(4, 2, 3, act=relu()), ConvBN(2, 1, 3))

    def forward(self, x, y):
        x = self.conv_x(x)
        if self.upsample_y:
            y = upsample(y, 2)
        atten = torch.cat([x.mean(1, keepdim=True), torch.amax(x, 1, keepdim=True),
                           y.mean(1, keepdim=True), torch.amax(y, 1, keepdim=True)], dim=1)
        atten = torch.sigmoid(self.conv_xy_atten(atten))
        return self.conv_out(x * atten + y * (1.0 - atten))


class SegHead(nn.Module):
    def __init__(self, cin, mid, num_classes):
        super().__init__()
        self.conv = ConvBN(cin, mid, 3, act=relu())
        self.conv_out = nn.Conv2d(mid, num_classes, 1, bias=False)

    def forward(self, x):
        return self.conv_out(self.conv(x))


class PPLiteSeg(nn.Module):
    def __init__(self, layers, arm_out_chs, seg_head_mid, num_classes=19, cm_out_ch=128):
        super().__init__()
        self.backbone = STDCNet(layers)
        chs = self.backbone.feat_channels[2:]  # /8, /16, /32
        self.cm = SPPM(chs[-1], cm_out_ch, cm_out_ch)
        self.arms = nn.ModuleList()
        for i in range(3):
            high = cm_out_ch if i == 2 else arm_out_chs[i + 1]
            self.arms.append(UAFM(chs[i], high, arm_out_chs[i], upsample_y=i != 2))
        self.seg_head = SegHead(arm_out_chs[0], seg_head_mid, num_classes)

    def forward(self, x):
        _, _, f8, f16, f32 = self.backbone(x)
        high = self.cm(f32)
        for feat, arm in zip((f32, f16, f8), reversed(self.arms)):
            high = arm(feat, high)
        return upsample(self.seg_head(high), 8)


def pp_liteseg_t(num_classes=19):
    """PP-LiteSeg-T: STDC1, decoder channels 32/64/128, head 32."""
    return PPLiteSeg([2, 2, 2], [32, 64, 128], 32, num_classes)


def pp_liteseg_b(num_classes=19):
    """PP-LiteSeg-B: STDC2, decoder channels 64/96/128, head 64."""
    return PPLiteSeg([4, 5, 3], [64, 96, 128], 64, num_classes)


class STDCClassifier(nn.Module):
    """STDC1/STDC2 with the ImageNet head of the STDC paper (conv_last 1x1 to 1024, global
    pooling, fc 1024 + BN + ReLU, linear to 1000 classes): only to compare the backbone with
    the STDC paper's FLOPs at 224x224; not part of PP-LiteSeg."""

    def __init__(self, layers):
        super().__init__()
        self.backbone = STDCNet(layers)
        self.conv_last = ConvBN(1024, 1024, 1, act=relu())
        self.fc = nn.Linear(1024, 1024, bias=False)
        self.bn = nn.BatchNorm1d(1024)
        self.linear = nn.Linear(1024, 1000, bias=False)

    def forward(self, x):
        x = self.conv_last(self.backbone(x)[-1]).mean((2, 3))
        return self.linear(torch.relu(self.bn(self.fc(x))))
