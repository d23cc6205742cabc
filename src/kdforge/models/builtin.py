"""Small built-in architectures in plain torch.nn, sized by arguments (`builtin:mlp`, `builtin:cnn`).

Submodule names are stable (`blocks.0`, `blocks.1`, `head`) so recipes can tap them by path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from kdforge.registry import MODELS


@MODELS.register("mlp")
class MLP(nn.Module):
    """Flatten -> [Linear -> ReLU (-> Dropout)] per hidden width -> Linear head.

    Args:
        input_shape: Shape of one input sample (filled in from the data when omitted).
        num_classes: Output width (filled in from the data when omitted).
        hidden: Widths of the hidden layers.
        dropout: Dropout probability after each hidden layer.
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (64,),
                 dropout: float = 0.0) -> None:
        super().__init__()
        in_features = math.prod(input_shape)
        blocks = []
        for width in hidden:
            layers: list[nn.Module] = [nn.Linear(in_features, width), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            blocks.append(nn.Sequential(*layers))
            in_features = width
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear(in_features, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)  # (B, D)
        for block in self.blocks:
            x = block(x)
        return self.head(x)  # (B, K)


@MODELS.register("cnn")
class ConvNet(nn.Module):
    """[Conv3x3 -> BatchNorm -> ReLU (-> MaxPool2)] per channel width -> global average pool -> MLP head.

    Args:
        input_shape: (C, H, W) of one image (filled in from the data when omitted).
        num_classes: Output width (filled in from the data when omitted).
        channels: Output channels of each conv block.
        pool_every: Max-pool after every n-th block (0 disables pooling).
        global_pool: Average over space before the head (any image size); else flatten (fixed size, keeps
            the layout, which small images like 8x8 digits need).
        hidden: Width of the hidden layer of the head (0 for a linear head).
        dropout: Dropout before the final layer.
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, channels: Sequence[int] = (32, 64),
                 pool_every: int = 2, global_pool: bool = False, hidden: int = 96, dropout: float = 0.2) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"ConvNet needs (C, H, W) image inputs; got input_shape {tuple(input_shape)}.")
        in_channels = input_shape[0]
        blocks = []
        for i, width in enumerate(channels):
            layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
            if pool_every and (i + 1) % pool_every == 0:
                layers.append(nn.MaxPool2d(2))
            blocks.append(nn.Sequential(*layers))
            in_channels = width
        self.blocks = nn.ModuleList(blocks)
        self.pool = nn.AdaptiveAvgPool2d(1) if global_pool else nn.Identity()
        if not global_pool:
            height, width = input_shape[1], input_shape[2]
            for i in range(len(channels)):
                if pool_every and (i + 1) % pool_every == 0:
                    height, width = height // 2, width // 2
            in_channels *= height * width
        head: list[nn.Module] = []
        if hidden:
            head += [nn.Linear(in_channels, hidden), nn.ReLU()]
            in_channels = hidden
        if dropout > 0:
            head.append(nn.Dropout(dropout))
        head.append(nn.Linear(in_channels, num_classes))
        self.head = nn.Sequential(*head)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)  # (B, C, H, W)
        return self.head(self.pool(x).flatten(1))  # (B, K)


@MODELS.register("rocket_mlp")
class RocketMLP(nn.Module):
    """Rocket launching's shared-trunk pair (Zhou et al. 2018): a light net and a booster net share the
    lower layers; the booster's extra layers run only in training mode, so the deployed model is the light
    net. Tap `booster` to read the booster's logits (the `rocket` loss does).

    Args:
        input_shape: Shape of one input sample (filled in from the data when omitted).
        num_classes: Output width (filled in from the data when omitted).
        trunk: Widths of the shared hidden layers.
        booster: Widths of the booster's own hidden layers on top of the trunk.
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, trunk: Sequence[int] = (32,),
                 booster: Sequence[int] = (256,)) -> None:
        super().__init__()
        self.trunk = MLP(input_shape, num_classes, hidden=trunk).blocks
        width = trunk[-1] if trunk else math.prod(input_shape)
        self.head = nn.Linear(width, num_classes)
        self.booster = MLP((width,), num_classes, hidden=booster)

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)  # (B, D)
        for block in self.trunk:
            x = block(x)
        if self.training:
            self.booster(x)  # its output is read through the `booster` tap
        return self.head(x)  # (B, K): the light net
