"""The zoo's networks (torch): the Fashion-MNIST CNN and the cars UNet, apart from :mod:`.zoo` so that
registering the zoo imports no torch."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["FashionCNN", "UNet"]


class FashionCNN(nn.Module):
    """Conv(1→c)-BN-ReLU-pool, Conv(c→2c)-BN-ReLU-pool, Linear(2c·49→128), Linear(128→10).

    With c = 32 this is the 422 k-parameter CNN of offline-data.md (about 91 % on Fashion-MNIST).
    """

    def __init__(self, width: int = 32, hidden: int = 128, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(2 * width * 49, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class _DoubleConv(nn.Sequential):
    """(Conv3x3-BN-ReLU) twice: the UNet's block."""

    def __init__(self, cin: int, cout: int):
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """UNet (Ronneberger et al., 2015) with BatchNorm: ``depth`` poolings, widths ``width·2^level``,
    up-sampling by a 2x2 transposed convolution, skip connections by concatenation, and a 1x1 head
    giving ``classes`` logits per pixel (1: binary, foreground where the logit is > 0).

    Inputs need H and W divisible by 2^depth. The zoo's ``cars-unet`` is width 8, depth 3 (about 120 k
    parameters) on 64 x 96 images.
    """

    def __init__(
        self,
        width: int = 8,
        depth: int = 3,
        in_channels: int = 3,
        classes: int = 1,
        block: Callable[[int, int], nn.Module] = _DoubleConv,
    ):
        """``block(cin, cout)``: the unit of every level (a double convolution; R2U-Net passes its RRCU)."""
        super().__init__()
        widths = [width * 2**level for level in range(depth + 1)]
        self.down = nn.ModuleList([block(cin, cout) for cin, cout in zip([in_channels, *widths[:-2]], widths[:-1])])
        self.pool = nn.MaxPool2d(2)
        self.bottom = block(widths[-2], widths[-1])
        self.up = nn.ModuleList([nn.ConvTranspose2d(c, c // 2, 2, stride=2) for c in reversed(widths[1:])])
        self.merge = nn.ModuleList([block(c, c // 2) for c in reversed(widths[1:])])
        self.head = nn.Conv2d(width, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottom(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips)):
            x = merge(torch.cat([skip, up(x)], dim=1))
        return self.head(x)
