#!/usr/bin/python3
"""An STDC1-like segmentation network (Fan et al., "Rethinking BiSeNet", CVPR 2021: STDC
modules of 1x1 + three 3x3 convs whose outputs are concatenated, stride-2 stages, AvgPool on the
skip branch) with a small FPN-style head: a bilinear 2x upsample, a concat with the /16 feature
and a bilinear upsample back to the input size. Conv-heavy by design: the engine benchmark's
"conv-heavy test network". Random weights (latency only); BatchNormalization kept, as exported
for training; dynamic N, H, W.

Tooling only (Debian python3-torch):
    /usr/bin/python3 tools/zoo/stdc_like.py OUT.onnx
"""
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F


def conv_bn_relu(cin, cout, k, stride=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class STDCModule(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.b1 = conv_bn_relu(cin, cout // 2, 1)
        self.b2 = conv_bn_relu(cout // 2, cout // 4, 3, stride)
        self.b3 = conv_bn_relu(cout // 4, cout // 8, 3)
        self.b4 = conv_bn_relu(cout // 8, cout // 8, 3)
        self.skip = nn.AvgPool2d(3, 2, 1) if stride == 2 else nn.Identity()

    def forward(self, x):
        a = self.b1(x)
        b = self.b2(a)
        c = self.b3(b)
        d = self.b4(c)
        return torch.cat([self.skip(a), b, c, d], dim=1)


class STDCLike(nn.Module):
    def __init__(self, num_classes=19):
        super().__init__()
        self.stem = nn.Sequential(conv_bn_relu(3, 32, 3, 2), conv_bn_relu(32, 64, 3, 2))  # /4
        self.stage3 = nn.Sequential(STDCModule(64, 256, 2), STDCModule(256, 256, 1))        # /8
        self.stage4 = nn.Sequential(STDCModule(256, 512, 2), STDCModule(512, 512, 1))       # /16
        self.stage5 = nn.Sequential(STDCModule(512, 1024, 2), STDCModule(1024, 1024, 1))    # /32
        self.reduce5 = conv_bn_relu(1024, 128, 1)
        self.reduce4 = conv_bn_relu(512, 128, 1)
        self.fuse = conv_bn_relu(256, 128, 3)
        self.classifier = nn.Conv2d(128, num_classes, 1)

    def forward(self, x):
        f4 = self.stage4(self.stage3(self.stem(x)))
        f5 = self.reduce5(self.stage5(f4))
        up = F.interpolate(f5, scale_factor=2.0, mode="bilinear", align_corners=False)
        y = self.fuse(torch.cat([up, self.reduce4(f4)], dim=1))
        y = self.classifier(y)
        return F.interpolate(y, scale_factor=16.0, mode="bilinear", align_corners=False)


def main(out):
    torch.manual_seed(0)
    net = STDCLike().eval()
    with torch.no_grad():  # non-trivial BN statistics
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(1, 3, 256, 512)
    torch.onnx.export(net, (x,), out, opset_version=13, input_names=["x"],
                      output_names=["logits"],
                      dynamic_axes={"x": {0: "N", 2: "H", 3: "W"},
                                    "logits": {0: "N", 2: "H", 3: "W"}},
                      training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
    params = sum(p.numel() for p in net.parameters())
    print(f"wrote {out}: {params / 1e6:.2f} M parameters")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "stdc_like.onnx")
