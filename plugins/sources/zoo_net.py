"""The zoo's Fashion-MNIST network (torch), apart from :mod:`.zoo` so that registering the zoo imports no torch."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["FashionCNN"]


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
