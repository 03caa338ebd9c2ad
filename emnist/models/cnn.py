"""Feed-forward CNNs for 28x28 characters: the original project's model and an improved one.

`cnn-seed` keeps the original "multistack" CNN recognisable: three conv blocks of 64, 128 and
256 channels, each conv 3x3 -> batch norm -> ReLU -> 2x2 max-pool, then three fully connected
layers (flatten -> 256 -> 64 -> classes) with dropout between them. We read "multistack" as
the stack of three blocks, one convolution each; `convs_per_block=2` gives the other reading
(two stacked convolutions per block). The original ended in a softmax layer and was trained
with cross-entropy (softmax twice); this one returns logits.

`cnn` is the improved design: a compact VGG-style network (two 3x3 conv-BN-ReLU per stage at
28, 14 and 7 pixels, widths w, 2w, 4w), global average pooling instead of a large flattened
fully connected layer, and dropout before the classifier. With the default width 48 it has
0.65M parameters, within 3% of RCNN-96 (0.67M), so it doubles as the parameter-matched
feed-forward baseline of the CNN-vs-RCNN study; `width` scales it for other matches (the
count grows as width^2).
"""

import torch
from torch import nn

from emnist.models import register


def conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    # No conv bias: batch norm's shift makes it redundant.
    return [
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


@register("cnn-seed")
class SeedCNN(nn.Module):
    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int = 1,
        convs_per_block: int = 1,
        dropout: float = 0.5,
    ):
        super().__init__()
        assert num_classes >= 2, f"num_classes must be at least 2, got {num_classes}"
        assert in_channels >= 1, f"in_channels must be positive, got {in_channels}"
        assert convs_per_block >= 1, f"convs_per_block must be positive, got {convs_per_block}"
        assert 0.0 <= dropout < 1.0, f"dropout must be in [0, 1), got {dropout}"
        layers: list[nn.Module] = []
        channels = in_channels
        for width in (64, 128, 256):
            for _ in range(convs_per_block):
                layers += conv_bn_relu(channels, width)
                channels = width
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        # 28 -> 14 -> 7 -> 3 pixels after three 2x2 poolings.
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(256 * 3 * 3, 256),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(256, 64),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(64, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register("cnn")
class CNN(nn.Module):
    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int = 1,
        width: int = 48,
        dropout: float = 0.3,
    ):
        super().__init__()
        assert num_classes >= 2, f"num_classes must be at least 2, got {num_classes}"
        assert in_channels >= 1, f"in_channels must be positive, got {in_channels}"
        assert width >= 4, f"width must be at least 4, got {width}"
        assert 0.0 <= dropout < 1.0, f"dropout must be in [0, 1), got {dropout}"
        w = width
        self.features = nn.Sequential(
            *conv_bn_relu(in_channels, w),
            *conv_bn_relu(w, w),
            nn.MaxPool2d(2),  # 28 -> 14
            *conv_bn_relu(w, 2 * w),
            *conv_bn_relu(2 * w, 2 * w),
            nn.MaxPool2d(2),  # 14 -> 7
            *conv_bn_relu(2 * w, 4 * w),
            *conv_bn_relu(4 * w, 4 * w),
        )
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).mean(dim=(2, 3))  # global average pooling
        return self.classifier(self.dropout(x))
