#!/usr/bin/python3
"""A custom fedpod model written in Python and scripted to TorchScript.

    /usr/bin/python3 examples/torchscript_model/digits_net.py --out digits_net.pt

writes digits_net.pt, a TorchScript archive that fedpod pods can train: a small
convolutional network for the 8x8 digits images (job datastructure input_shape
[1, 8, 8], num_classes 10). The contract is in model/include/fedpod/model/torchscript.h:
forward plus the @torch.jit.export-ed training_step, validation_step and test_step,
and optionally configure_optimizers.

Run it with Debian's interpreter (/usr/bin/python3), which has python3-torch; the
archive must be produced by the same PyTorch version as fedpod's libtorch (1.13).
"""
import argparse
from typing import Dict, Tuple

import torch
import torch.nn.functional as F


class DigitsNet(torch.nn.Module):
    def __init__(self, channels: int = 16, classes: int = 10):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, channels, kernel_size=3, padding=1)
        self.head = torch.nn.Linear(channels * 4 * 4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv(x)), 2)
        return self.head(x.flatten(1))

    @torch.jit.export
    def training_step(self, x: torch.Tensor, y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        logits = self.forward(x)
        return F.cross_entropy(logits, y), logits

    @torch.jit.export
    def validation_step(self, x: torch.Tensor, y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        logits = self.forward(x)
        return F.cross_entropy(logits, y), logits

    @torch.jit.export
    def test_step(self, x: torch.Tensor, y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        logits = self.forward(x)
        return F.cross_entropy(logits, y), logits

    @torch.jit.export
    def configure_optimizers(self) -> Tuple[str, Dict[str, float]]:
        return "adam", {"lr": 0.01}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="digits_net.pt")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.jit.save(torch.jit.script(DigitsNet()), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
