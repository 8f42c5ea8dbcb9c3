"""OCRNet on HRNet-W48 (Yuan et al., "Object-Contextual Representations for Semantic
Segmentation", ECCV 2020; Wang et al., "Deep High-Resolution Representation Learning for
Visual Recognition", TPAMI 2020), as PaddleSeg implements it (paddleseg/models/ocrnet.py,
backbones/hrnet.py; configs/ocrnet/ocrnet_hrnetw48_cityscapes_1024x512_160k.yml):

* HRNetV2-W48: stem of two 3x3 stride-2 ConvBNReLU (64); stage 1: 4 bottlenecks (64 -> 256);
  stages 2/3/4 with 1/4/3 modules of 2/3/4 branches (48, 96, 192, 384 channels), 4 basic
  blocks per branch, fused by 1x1 ConvBN + bilinear upsampling (from lower resolutions) and
  chains of 3x3 stride-2 ConvBN (from higher ones), ReLU after each sum; the four outputs
  upsampled to /4 and concatenated (720 channels);
* OCR head: soft object regions from an auxiliary head (1x1 ConvBNReLU 720, 1x1 conv to the
  classes); pixel representation 3x3 ConvBNReLU 720 -> 512; object region representations
  = softmax over pixels of the regions times the pixels; object attention with 256 key
  channels (f_pixel, f_object: two 1x1 ConvBNReLU; f_down, f_up: one), scaled by 256^-0.5;
  concat(context, pixels) -> 1x1 ConvBNReLU 512; 1x1 conv to the classes; bilinear
  upsampling to the input size. PaddleSeg's ConvBNReLU keeps conv biases in the OCR head
  (not in HRNet), so do we.

Layout: the attention runs with the query kept as an image, [N, H, W, 256] x [N, 1, 256, K]
-> [N, H, W, K], so the context needs no Shape-dependent reshape back to H x W.

Deviations: dropout (training only) is not built as an op; the auxiliary head's logits are
used inside the network (object regions) but only the main logits are an output, as in
PaddleSeg's inference model. H and W must be multiples of 32.
"""
import torch
import torch.nn as nn

from common import ConvBN, relu, reshape, upsample


class BasicBlock(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv1 = ConvBN(ch, ch, 3, act=relu())
        self.conv2 = ConvBN(ch, ch, 3)

    def forward(self, x):
        return torch.relu(self.conv2(self.conv1(x)) + x)


class Bottleneck(nn.Module):
    def __init__(self, cin, planes, downsample):
        super().__init__()
        self.conv1 = ConvBN(cin, planes, 1, act=relu())
        self.conv2 = ConvBN(planes, planes, 3, act=relu())
        self.conv3 = ConvBN(planes, planes * 4, 1)
        self.downsample = ConvBN(cin, planes * 4, 1) if downsample else None

    def forward(self, x):
        res = self.downsample(x) if self.downsample is not None else x
        return torch.relu(self.conv3(self.conv2(self.conv1(x))) + res)


class HRModule(nn.Module):
    def __init__(self, channels, blocks=4):
        super().__init__()
        n = len(channels)
        self.branches = nn.ModuleList([nn.Sequential(*[BasicBlock(c) for _ in range(blocks)])
                                       for c in channels])
        self.fuse = nn.ModuleList()
        for i in range(n):
            row = nn.ModuleList()
            for j in range(n):
                if j > i:
                    row.append(ConvBN(channels[j], channels[i], 1))
                elif j == i:
                    row.append(nn.Identity())
                else:
                    chain = [ConvBN(channels[j], channels[j], 3, 2, act=relu()) for _ in range(i - j - 1)]
                    chain.append(ConvBN(channels[j], channels[i], 3, 2))
                    row.append(nn.Sequential(*chain))
            self.fuse.append(row)

    def forward(self, xs):
        xs = [b(x) for b, x in zip(self.branches, xs)]
        out = []
        for i, row in enumerate(self.fuse):
            y = xs[i]
            for j, f in enumerate(row):
                if j > i:
                    y = y + upsample(f(xs[j]), 2 ** (j - i))
                elif j < i:
                    y = y + f(xs[j])
            out.append(torch.relu(y))
        return out


class HRNet(nn.Module):
    def __init__(self, width=48):
        super().__init__()
        c = [width, width * 2, width * 4, width * 8]
        self.stem = nn.Sequential(ConvBN(3, 64, 3, 2, act=relu()), ConvBN(64, 64, 3, 2, act=relu()))
        self.layer1 = nn.Sequential(Bottleneck(64, 64, True), *[Bottleneck(256, 64, False) for _ in range(3)])
        self.transition1 = nn.ModuleList([ConvBN(256, c[0], 3, act=relu()),
                                          ConvBN(256, c[1], 3, 2, act=relu())])
        self.stage2 = nn.Sequential(*[HRModule(c[:2]) for _ in range(1)])
        self.transition2 = ConvBN(c[1], c[2], 3, 2, act=relu())
        self.stage3 = nn.Sequential(*[HRModule(c[:3]) for _ in range(4)])
        self.transition3 = ConvBN(c[2], c[3], 3, 2, act=relu())
        self.stage4 = nn.Sequential(*[HRModule(c) for _ in range(3)])
        self.feat_channels = sum(c)

    def forward(self, x):
        x = self.layer1(self.stem(x))
        xs = self.stage2([t(x) for t in self.transition1])
        xs = self.stage3(xs + [self.transition2(xs[-1])])
        xs = self.stage4(xs + [self.transition3(xs[-1])])
        return torch.cat([xs[0]] + [upsample(xs[j], 2 ** j) for j in (1, 2, 3)], dim=1)


class ObjectAttention(nn.Module):
    def __init__(self, cin, key):
        super().__init__()
        self.key = key
        def cbr(a, b):
            return ConvBN(a, b, 1, bias=True, act=relu())

        self.f_pixel = nn.Sequential(cbr(cin, key), cbr(key, key))
        self.f_object = nn.Sequential(cbr(cin, key), cbr(key, key))
        self.f_down = cbr(cin, key)
        self.f_up = cbr(key, cin)

    def forward(self, x, proxy):  # x: N,C,H,W; proxy: N,C,K,1
        query = self.f_pixel(x).permute(0, 2, 3, 1)                        # N,H,W,key
        key = reshape(self.f_object(proxy), (0, 1, self.key, -1))          # N,1,key,K
        value = reshape(self.f_down(proxy), (0, 1, self.key, -1)).transpose(2, 3)  # N,1,K,key
        sim = torch.softmax(torch.matmul(query, key) * self.key ** -0.5, dim=-1)  # N,H,W,K
        context = torch.matmul(sim, value).permute(0, 3, 1, 2)             # N,key,H,W
        return self.f_up(context)


class OCRHead(nn.Module):
    def __init__(self, num_classes, cin, mid=512, key=256):
        super().__init__()
        self.mid = mid
        self.aux_head = nn.Sequential(ConvBN(cin, cin, 1, bias=True, act=relu()),
                                      nn.Conv2d(cin, num_classes, 1))
        self.conv3x3_ocr = ConvBN(cin, mid, 3, bias=True, act=relu())
        self.attention = ObjectAttention(mid, key)
        self.conv1x1 = ConvBN(2 * mid, mid, 1, bias=True, act=relu())
        self.dropout = nn.Dropout2d(0.1)
        self.cls_head = nn.Conv2d(mid, num_classes, 1)

    def forward(self, feats):
        regions = self.aux_head(feats)                                     # N,K,H,W
        pixels = self.conv3x3_ocr(feats)                                   # N,C,H,W
        # spatial gather: object region representations, softmax over the pixels
        probs = torch.softmax(reshape(regions, (0, 0, -1)), dim=2)         # N,K,HW
        pix = reshape(pixels, (0, 0, -1)).transpose(1, 2)                  # N,HW,C
        objects = torch.matmul(probs, pix).transpose(1, 2)                 # N,C,K
        objects = reshape(objects, (0, 0, -1, 1))                          # N,C,K,1
        context = self.attention(pixels, objects)
        ocr = self.conv1x1(torch.cat([context, pixels], dim=1))
        return self.cls_head(self.dropout(ocr))


class OCRNet(nn.Module):
    def __init__(self, num_classes=19):
        super().__init__()
        self.backbone = HRNet(48)
        self.head = OCRHead(num_classes, self.backbone.feat_channels)

    def forward(self, x):
        return upsample(self.head(self.backbone(x)), 4)


def ocrnet_hrnetw48(num_classes=19):
    return OCRNet(num_classes)


class FCNHRNet(nn.Module):
    """PaddleSeg's FCN on HRNet-W48 (1x1 ConvBNReLU 720 with bias, 1x1 conv to the classes):
    not a zoo member, only to check our HRNet-W48 against PaddleSeg's published FCN count."""

    def __init__(self, num_classes=19):
        super().__init__()
        self.backbone = HRNet(48)
        self.head = nn.Sequential(ConvBN(720, 720, 1, bias=True, act=relu()), nn.Conv2d(720, num_classes, 1))

    def forward(self, x):
        return upsample(self.head(self.backbone(x)), 4)
