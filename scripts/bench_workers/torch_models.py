"""Random-weight torch models for speed only (no ImageNet ResNet / MobileNet weights install
offline): ResNet-50 v2 and MobileNetV2, plus one 3x3 conv layer."""
from __future__ import annotations


def _randomise_batchnorms(model):
    # BN statistics randomised so the folded weights are not all alike
    from torch import nn

    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            if m.affine:
                m.weight.data.uniform_(0.5, 1.0)
    return model.eval()


def resnet50_v2():
    """ResNet-50 v2 (He et al. 2016, pre-activation bottlenecks, as in MXNet gluon's
    resnet50_v2)."""
    import torch
    from torch import nn

    class Bottleneck(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            mid = cout // 4
            self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, mid, 1, bias=False)
            self.bn2, self.conv2 = nn.BatchNorm2d(mid), nn.Conv2d(mid, mid, 3, stride, 1, bias=False)
            self.bn3, self.conv3 = nn.BatchNorm2d(mid), nn.Conv2d(mid, cout, 1, bias=False)
            self.down = (nn.Conv2d(cin, cout, 1, stride, bias=False)
                         if stride != 1 or cin != cout else None)

        def forward(self, x):
            x = torch.relu(self.bn1(x))
            residual = self.down(x) if self.down is not None else x
            x = self.conv1(x)
            x = self.conv2(torch.relu(self.bn2(x)))
            x = self.conv3(torch.relu(self.bn3(x)))
            return x + residual

    class ResNet50V2(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn_data = nn.BatchNorm2d(3, affine=False)
            self.stem = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn0 = nn.BatchNorm2d(64)
            self.pool = nn.MaxPool2d(3, 2, 1)
            blocks, cin = [], 64
            for cout, n, stride in ((256, 3, 1), (512, 4, 2), (1024, 6, 2), (2048, 3, 2)):
                for i in range(n):
                    blocks.append(Bottleneck(cin, cout, stride if i == 0 else 1))
                    cin = cout
            self.blocks = nn.Sequential(*blocks)
            self.bn_out = nn.BatchNorm2d(2048)
            self.fc = nn.Linear(2048, 1000)

        def forward(self, x):
            x = self.pool(torch.relu(self.bn0(self.stem(self.bn_data(x)))))
            x = torch.relu(self.bn_out(self.blocks(x)))
            return self.fc(torch.flatten(torch.mean(x, dim=(2, 3), keepdim=True), 1))

    torch.manual_seed(0)
    return _randomise_batchnorms(ResNet50V2())


def mobilenet_v2():
    """MobileNetV2 1.0 (Sandler et al. 2018; torchvision's layout, which has no CPU wheel
    here): inverted residuals, depthwise 3x3, ReLU6, 224x224 input."""
    import torch
    from torch import nn

    def conv_bn(cin, cout, k, stride, groups=1, act=True):
        layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                  nn.BatchNorm2d(cout)]
        return layers + ([nn.ReLU6()] if act else [])

    class InvertedResidual(nn.Module):
        def __init__(self, cin, cout, stride, expand):
            super().__init__()
            mid = cin * expand
            layers = conv_bn(cin, mid, 1, 1) if expand != 1 else []
            layers += conv_bn(mid, mid, 3, stride, groups=mid) + conv_bn(mid, cout, 1, 1, act=False)
            self.body = nn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            return x + self.body(x) if self.residual else self.body(x)

    class MobileNetV2(nn.Module):
        def __init__(self):
            super().__init__()
            layers, cin = conv_bn(3, 32, 3, 2), 32
            for expand, cout, n, stride in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2),
                                            (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                                            (6, 320, 1, 1)):
                for i in range(n):
                    layers.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expand))
                    cin = cout
            self.features = nn.Sequential(*layers, *conv_bn(cin, 1280, 1, 1))
            self.classifier = nn.Linear(1280, 1000)

        def forward(self, x):
            x = torch.mean(self.features(x), dim=(2, 3))
            return self.classifier(x)

    torch.manual_seed(0)
    return _randomise_batchnorms(MobileNetV2())


def conv3x3_64():
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.ReLU()).eval()


TORCH_MODELS = {  # name -> (factory, input shape without batch)
    "resnet50_v2": (resnet50_v2, (3, 224, 224)),
    "mobilenet_v2": (mobilenet_v2, (3, 224, 224)),
    "conv3x3_64": (conv3x3_64, (64, 56, 56)),
}
