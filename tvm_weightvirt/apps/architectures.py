"""Thirteen common architectures in miniature (4k-25k weights each), written in plain torch as
a user would: the coverage matrix (`benchmarks.coverage`, `tests/zoo/`) takes each through
intake (torch and ONNX), lossless builds, a sharing pack and Cortex-M.

`ARCHITECTURES[name]` is `(constructor, input shape at batch 1)`; `architecture(name, seed)`
gives a seeded model (random weights, non-trivial batch-norm statistics) in eval mode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .examples import seeded


def _conv_bn(c_in: int, c_out: int, k: int = 3, stride: int = 1, groups: int = 1, act=None):
    layers = [nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False)]
    layers.append(nn.BatchNorm2d(c_out))
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class _InvertedResidual(nn.Module):
    """MobileNetV2's block: expand 1x1, depthwise 3x3, project 1x1, residual when shapes match."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = c_in * expand
        self.residual = stride == 1 and c_in == c_out
        self.body = nn.Sequential(
            _conv_bn(c_in, hidden, 1, act=nn.ReLU6),
            _conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
            _conv_bn(hidden, c_out, 1),
        )

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


class MobileNetV2(nn.Module):
    """MobileNetV2: a stem, then per (expand, channels, repeats, stride) of `blocks` that many
    inverted residuals (the first of them strided), optionally a 1x1 conv to `last` channels,
    average pooling and a linear head. The default is the suite-sized net; `IMAGENET_MOBILENET_V2`
    is the paper's table (1.0 width, 224 x 224; every block expands, also where torchvision's
    first does not)."""

    def __init__(
        self,
        classes: int = 10,
        stem: int = 8,
        blocks=((2, 8, 1, 1), (3, 16, 2, 2)),
        last: int | None = None,
    ) -> None:
        super().__init__()
        self.stem = _conv_bn(3, stem, 3, 2, act=nn.ReLU6)
        layers, c_in = [], stem
        for expand, c_out, repeats, stride in blocks:
            for i in range(repeats):
                layers.append(_InvertedResidual(c_in, c_out, stride if i == 0 else 1, expand))
                c_in = c_out
        self.blocks = nn.Sequential(*layers)
        self.last = nn.Identity() if last is None else _conv_bn(c_in, last, 1, act=nn.ReLU6)
        self.head = nn.Linear(last or c_in, classes)

    def forward(self, x):
        x = self.last(self.blocks(self.stem(x)))
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


IMAGENET_MOBILENET_V2 = {
    "classes": 1000,
    "stem": 32,
    "blocks": ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1))
    + ((6, 160, 3, 2), (6, 320, 1, 1)),
    "last": 1280,
}


class _SqueezeExcite(nn.Module):
    def __init__(self, channels: int, squeezed: int, gate) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeezed, 1)
        self.expand = nn.Conv2d(squeezed, channels, 1)
        self.gate = gate

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * self.gate(self.expand(F.relu(self.reduce(s))))


class MobileNetV3Small(nn.Module):
    """Hardswish activations and a squeeze-excite block gated by hardsigmoid."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = _conv_bn(3, 8, 3, 2, act=nn.Hardswish)
        self.dw = _conv_bn(8, 8, 3, 2, groups=8, act=nn.Hardswish)
        self.se = _SqueezeExcite(8, 4, nn.Hardsigmoid())
        self.project = _conv_bn(8, 16, 1)
        self.expand = _conv_bn(16, 48, 1, act=nn.Hardswish)
        self.head = nn.Sequential(nn.Linear(48, 32), nn.Hardswish(), nn.Linear(32, classes))

    def forward(self, x):
        x = self.expand(self.project(self.se(self.dw(self.stem(x)))))
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


class EfficientNetMBConv(nn.Module):
    """SiLU activations, an MBConv block with squeeze-excite gated by sigmoid."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = _conv_bn(3, 8, 3, 2, act=nn.SiLU)
        self.expand = _conv_bn(8, 32, 1, act=nn.SiLU)
        self.dw = _conv_bn(32, 32, 3, 1, groups=32, act=nn.SiLU)
        self.se = _SqueezeExcite(32, 8, nn.Sigmoid())
        self.project = _conv_bn(32, 8, 1)
        self.head = nn.Linear(8, classes)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.project(self.se(self.dw(self.expand(x))))
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


def _channel_shuffle(x, groups: int):
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class _ShuffleUnit(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.branch = nn.Sequential(
            _conv_bn(half, half, 1, act=nn.ReLU),
            _conv_bn(half, half, 3, groups=half),
            _conv_bn(half, half, 1, act=nn.ReLU),
        )

    def forward(self, x):
        a, b = x.chunk(2, dim=1)
        return _channel_shuffle(torch.cat([a, self.branch(b)], 1), 2)


class ShuffleNetV2(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = _conv_bn(3, 16, 3, 2, act=nn.ReLU)
        self.units = nn.Sequential(_ShuffleUnit(16), _ShuffleUnit(16))
        self.head = nn.Linear(16, classes)

    def forward(self, x):
        return self.head(F.adaptive_avg_pool2d(self.units(self.stem(x)), 1).flatten(1))


class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.a = _conv_bn(c_in, c_out, 3, stride, act=nn.ReLU)
        self.b = _conv_bn(c_out, c_out, 3)
        self.skip = _conv_bn(c_in, c_out, 1, stride) if stride != 1 or c_in != c_out else None

    def forward(self, x):
        skip = x if self.skip is None else self.skip(x)
        return F.relu(self.b(self.a(x)) + skip)


class ResNet8(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = _conv_bn(3, 8, 3, act=nn.ReLU)
        self.stages = nn.Sequential(
            _BasicBlock(8, 8, 1), _BasicBlock(8, 16, 2), _BasicBlock(16, 16, 2)
        )
        self.head = nn.Linear(16, classes)

    def forward(self, x):
        return self.head(F.adaptive_avg_pool2d(self.stages(self.stem(x)), 1).flatten(1))


class DSCNN(nn.Module):
    """Keyword spotting's depthwise-separable CNN on a 49x10 MFCC map."""

    def __init__(self, classes: int = 12) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, 32, (10, 4), (2, 2), (5, 1)), nn.BatchNorm2d(32), nn.ReLU()
        )
        self.blocks = nn.Sequential(
            *(
                nn.Sequential(
                    _conv_bn(32, 32, 3, groups=32, act=nn.ReLU), _conv_bn(32, 32, 1, act=nn.ReLU)
                )
                for _ in range(2)
            )
        )
        self.head = nn.Linear(32, classes)

    def forward(self, x):
        return self.head(F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1).flatten(1))


class Autoencoder(nn.Module):
    def __init__(self, features: int = 64) -> None:
        super().__init__()
        self.encode = nn.Sequential(
            nn.Linear(features, 48), nn.ReLU(), nn.Linear(48, 16), nn.ReLU()
        )
        self.decode = nn.Sequential(nn.Linear(16, 48), nn.ReLU(), nn.Linear(48, features))

    def forward(self, x):
        return self.decode(self.encode(x))


class _Recurrent(nn.Module):
    def __init__(self, cell, classes: int = 6) -> None:
        super().__init__()
        self.rnn = cell(8, 24, batch_first=True)
        self.head = nn.Linear(24, classes)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])  # the last step: a negative index


class GRU(_Recurrent):
    def __init__(self) -> None:
        super().__init__(nn.GRU)


class LSTM(_Recurrent):
    def __init__(self) -> None:
        super().__init__(nn.LSTM)


class TinyViT(nn.Module):
    """Patches of 4x4, a class token, learned positions, one pre-norm encoder layer (GELU)."""

    def __init__(self, classes: int = 10, dim: int = 32) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, 4)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.zeros(1, 17, dim))
        self.encoder = nn.TransformerEncoderLayer(
            dim, 2, 2 * dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
        return self.head(self.norm(self.encoder(x))[:, 0])


class TCN(nn.Module):
    """Causal dilated 1-d convolutions (left padding), residual; the last step classifies."""

    def __init__(self, classes: int = 6, channels: int = 24) -> None:
        super().__init__()
        self.inp = nn.Conv1d(6, channels, 1)
        self.convs = nn.ModuleList(nn.Conv1d(channels, channels, 3, dilation=d) for d in (1, 2, 4))
        self.head = nn.Linear(channels, classes)

    def forward(self, x):
        x = self.inp(x)
        for conv in self.convs:
            x = x + F.relu(conv(F.pad(x, (2 * conv.dilation[0], 0))))
        return self.head(x[:, :, -1])


class UNetLite(nn.Module):
    """One level down and up: max pooling, a transposed convolution, a skip concatenation."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.down = _conv_bn(3, 12, 3, act=nn.ReLU)
        self.bottom = _conv_bn(12, 24, 3, act=nn.ReLU)
        self.up = nn.ConvTranspose2d(24, 12, 2, 2)
        self.fuse = _conv_bn(24, 12, 3, act=nn.ReLU)
        self.out = nn.Conv2d(12, classes, 1)

    def forward(self, x):
        skip = self.down(x)
        x = self.up(self.bottom(F.max_pool2d(skip, 2)))
        return self.out(self.fuse(torch.cat([x, skip], 1)))


class BatchNorm1dPool(nn.Module):
    """Conv1d, BatchNorm1d, Dropout and adaptive pooling, then a BatchNorm1d'd dense head."""

    def __init__(self, classes: int = 6) -> None:
        super().__init__()
        self.conv = nn.Conv1d(6, 32, 5, padding=2)
        self.bn = nn.BatchNorm1d(32)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(32, 64)
        self.bn_fc = nn.BatchNorm1d(64)
        self.head = nn.Linear(64, classes)

    def forward(self, x):
        x = F.adaptive_avg_pool1d(self.drop(F.relu(self.bn(self.conv(x)))), 1).flatten(1)
        return self.head(F.relu(self.bn_fc(self.fc(x))))


ARCHITECTURES: dict[str, tuple[type[nn.Module], tuple[int, ...]]] = {
    "mobilenet_v2": (MobileNetV2, (1, 3, 32, 32)),
    "mobilenet_v3_small": (MobileNetV3Small, (1, 3, 32, 32)),
    "efficientnet_mbconv": (EfficientNetMBConv, (1, 3, 32, 32)),
    "shufflenet_v2": (ShuffleNetV2, (1, 3, 32, 32)),
    "resnet8": (ResNet8, (1, 3, 32, 32)),
    "ds_cnn": (DSCNN, (1, 1, 49, 10)),
    "autoencoder": (Autoencoder, (1, 64)),
    "gru": (GRU, (1, 20, 8)),
    "lstm": (LSTM, (1, 20, 8)),
    "tiny_vit": (TinyViT, (1, 3, 16, 16)),
    "tcn": (TCN, (1, 6, 32)),
    "unet_lite": (UNetLite, (1, 3, 16, 16)),
    "bn1d_pool": (BatchNorm1dPool, (1, 6, 32)),
}


def architecture(name: str, seed: int = 0) -> tuple[nn.Module, tuple[int, ...]]:
    """The seeded model `name` (eval mode) and its input shape at batch 1."""
    if name not in ARCHITECTURES:
        raise ValueError(f"no architecture '{name}' (has {sorted(ARCHITECTURES)})")
    cls, shape = ARCHITECTURES[name]
    torch.manual_seed(seed)
    model = cls()
    seeded(model, seed)
    for p in model.parameters():  # zero-initialized tokens and positions: random, small
        if not p.abs().sum():
            p.data.normal_(0, 0.1)
    return model.eval(), shape
