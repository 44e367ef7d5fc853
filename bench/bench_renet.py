"""RE-Net all-AU inference: images/s of the batched pass against the naive C passes.

    python bench/bench_renet.py [--aus 12] [--image-sizes 112 224] [--batch-sizes 1 8 32]
                                [--repeats 5] [--threads N]

RE-Net predicts AU c by running the whole network with AU c's BN parameters (Yang & Yin,
Sec. 3.4), so the paper's inference is C full passes (5.4 ms/image for 12 AUs on a 2080Ti,
Sec. 4.7). :meth:`au_renet.RelationEmbeddedResNet.forward` runs all AUs in one pass instead:
the first convolution, which precedes every BN, once per image, and from there each image
carried C times with every AU's statistics in one batch norm over C x F channels.
:meth:`~au_renet.RelationEmbeddedResNet.forward_each` is the naive loop. Both give the same
outputs (``tests/test_renet.py``); this measures their speed, in eval mode under
``torch.inference_mode``, ResNet-18, random pixels.

Each variant runs one warm-up call, then the variants take turns for ``--repeats`` timed calls
each; the table gives the median images/s and the ratio batched / naive.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor

from au_renet import RelationEmbeddedResNet


def images_per_second(run: Callable[[Tensor], Tensor], images: Tensor, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(images)
        times.append(time.perf_counter() - start)
    return len(images) / statistics.median(times)


def main(args: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--aus", type=int, default=12)
    parser.add_argument("--image-sizes", type=int, nargs="+", default=[112, 224])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    opts = parser.parse_args(args)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    torch.manual_seed(0)
    net = RelationEmbeddedResNet(opts.aus).eval()
    net.graph.set_relation(torch.rand(opts.aus, opts.aus))
    print(
        f"RE-Net ResNet-18, {opts.aus} AUs, {torch.get_num_threads()} threads, torch "
        f"{torch.__version__}, {platform.processor() or platform.machine()}\n"
    )
    print("| image size | batch | naive C passes (img/s) | batched (img/s) | batched / naive |")
    print("|---|---|---|---|---|")
    variants = {"naive": net.forward_each, "batched": net}
    with torch.inference_mode():
        for size in opts.image_sizes:
            for batch in opts.batch_sizes:
                images = torch.randn(batch, 3, size, size)
                for run in variants.values():
                    run(images)  # warm-up
                rates: dict[str, list[float]] = {name: [] for name in variants}
                for _ in range(opts.repeats):
                    for name, run in variants.items():
                        rates[name].append(images_per_second(run, images, 1))
                naive, batched = (statistics.median(rates[n]) for n in ("naive", "batched"))
                print(f"| {size} | {batch} | {naive:.1f} | {batched:.1f} | {batched / naive:.2f} |")


if __name__ == "__main__":
    main()
