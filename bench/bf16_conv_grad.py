"""How often the CPU's bf16 convolution weight gradient is wrong, per convolution shape: one
convolution under ``torch.autocast("cpu", bfloat16)`` against the same one in float32, on
random inputs and output gradients; a draw is wrong when the two weight gradients differ by
more than 1 anywhere (bf16 rounding alone stays near 0.1 at these sizes).

    python bench/bf16_conv_grad.py                # 40 draws per shape, oneDNN on and off
    ONEDNN_MAX_CPU_ISA=AVX2 python bench/bf16_conv_grad.py

Measured with torch 2.14.1 on an AVX-512 + AMX Xeon: a 3x3 stride-2 convolution on a 1x1
map, which is ResNet-18's ``layer4.0.conv1`` at inputs of 16 px or less, gets a wrong weight
gradient in 34 to 40 of 40 draws (the count varies from run to run), sometimes inf. Other
shapes, and this one with oneDNN off (``torch.backends.mkldnn.enabled = False``) or limited
to AVX2, were always right.
The test suite's bf16 runs use 24-px crops for this reason (``tests/test_precision.py``).
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

#: (batch, in channels, map size, out channels, kernel, stride, padding)
SHAPES = (
    (4, 256, 1, 512, 3, 2, 1),
    (8, 256, 1, 512, 3, 2, 1),
    (4, 256, 1, 512, 3, 1, 1),
    (4, 256, 1, 512, 1, 2, 0),
    (4, 256, 2, 512, 3, 2, 1),
    (4, 128, 2, 256, 3, 2, 1),
    (4, 256, 4, 512, 3, 2, 1),
)


def wrong_draws(shape: tuple[int, ...], draws: int) -> int:
    """Draws whose bf16-autocast weight gradient differs from float32's by more than 1."""
    batch, channels, size, out, kernel, stride, padding = shape
    wrong = 0
    for draw in range(draws):
        torch.manual_seed(draw)
        conv = nn.Conv2d(channels, out, kernel, stride=stride, padding=padding, bias=False)
        x = torch.randn(batch, channels, size, size)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = conv(x)
        grad = torch.randn(y.shape)
        y.backward(grad)
        low = conv.weight.grad.clone()
        conv.weight.grad = None
        conv(x).backward(grad)
        wrong += bool(((low - conv.weight.grad).abs() > 1).any())
    return wrong


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--draws", type=int, default=40)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    lines = [
        f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}",
        "",
        "| batch | in | map | out | kernel | stride | padding | wrong, oneDNN on | wrong, off |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for shape in SHAPES:
        counts = []
        for enabled in (True, False):
            torch.backends.mkldnn.enabled = enabled
            counts.append(f"{wrong_draws(shape, args.draws)}/{args.draws}")
        torch.backends.mkldnn.enabled = True
        lines.append("| " + " | ".join(map(str, shape)) + " | " + " | ".join(counts) + " |")
    table = "\n".join(lines)
    print(table)
    return table


if __name__ == "__main__":
    main()
