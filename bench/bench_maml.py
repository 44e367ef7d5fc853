"""MAML meta-steps/s: the higher and func backends of au_lightning.meta.InnerLoop against a
minimal hand-written torch.func loop, on the same tasks in one run.

    python bench/bench_maml.py [--image-size 64] [--tasks 12] [--shots 5] [--inner-steps 1]
                               [--optimizer sgd|adam] [--order 1|2] [--repeats 5] [--threads N]

The net is the plugin's ``au_maml.Conv4`` (Lee et al. Sec. 3.1): 4 modules of 5x5
convolutions with 64, 48, 32 and 16 filters, each with BatchNorm, ReLU and 2x2 max-pooling,
then one linear logit. A meta-step is Alg. 1 lines 6-11 on a meta-batch of ``--tasks`` tasks
with (K+, K-) support and query images (K = ``--shots``, random pixels): the query losses
after the inner steps, their mean, one backward and an Adam step of θ (β = 0.03), in train
mode. The hand-written loop is always SGD, of the ``--order`` asked.

The ``plugin`` rows are the MAML plugin's whole training step as a Lightning Trainer runs it
(manual optimization, logging, and the no-grad forward that updates the running batch-norm
statistics), timed from ``on_train_batch_start`` to ``on_train_batch_end`` on the same tasks.

Each variant runs one warm-up step, then the variants take turns for ``--repeats`` timed
steps each; the table gives the median and its cost relative to the hand-written loop.
"""

from __future__ import annotations

import argparse
import copy
import logging
import statistics
import time
import warnings
from collections.abc import Callable

import lightning as L
import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn import functional as F
from torch.utils.data import DataLoader

from au_lightning import InnerLoop
from au_maml import MAML, Conv4

Task = tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]


def bce(logits: Tensor, target: Tensor) -> Tensor:
    return F.binary_cross_entropy_with_logits(logits.view(-1), target)


def make_tasks(count: int, shots: int, image_size: int) -> list[Task]:
    gen = torch.Generator().manual_seed(0)
    target = torch.tensor([1.0] * shots + [0.0] * shots)

    def batch() -> tuple[Tensor, Tensor]:
        return torch.randn(2 * shots, 3, image_size, image_size, generator=gen), target

    return [(batch(), batch()) for _ in range(count)]


def hand_written_loss(
    model: nn.Module, tasks: list[Task], lr: float, steps: int, order: int
) -> Tensor:
    """The mean query loss of plain functional MAML with SGD inner steps."""
    theta = dict(model.named_parameters())
    losses = []
    for (xs, ys), (xq, yq) in tasks:
        buffers = {name: b.clone() for name, b in model.named_buffers()}
        params = theta
        for _ in range(steps):
            loss = bce(functional_call(model, (params, buffers), (xs,)), ys)
            grads = torch.autograd.grad(loss, list(params.values()), create_graph=order == 2)
            params = {name: p - lr * g for (name, p), g in zip(params.items(), grads, strict=True)}
        losses.append(bce(functional_call(model, (params, buffers), (xq,)), yq))
    return torch.stack(losses).mean()


def variants(options: argparse.Namespace) -> dict[str, Callable[[nn.Module, list[Task]], Tensor]]:
    def backend(name: str) -> Callable[[nn.Module, list[Task]], Tensor]:
        inner = InnerLoop(
            lr=0.03,
            steps=options.inner_steps,
            optimizer=options.optimizer,
            first_order=options.order == 1,
            backend=name,
        )

        def meta_loss(model: nn.Module, tasks: list[Task]) -> Tensor:
            return torch.stack([inner.query_loss(model, bce, s, q) for s, q in tasks]).mean()

        return meta_loss

    def hand_written(model: nn.Module, tasks: list[Task]) -> Tensor:
        return hand_written_loss(model, tasks, 0.03, options.inner_steps, options.order)

    return {"higher": backend("higher"), "func": backend("func"), "hand-written": hand_written}


class StepTimer(L.Callback):
    """Seconds of each training step, hook to hook."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_train_batch_start(self, *args: object) -> None:
        self.start = time.perf_counter()

    def on_train_batch_end(self, *args: object) -> None:
        self.seconds.append(time.perf_counter() - self.start)


def plugin_step(model: MAML, tasks: list[Task]) -> Callable[[], float]:
    """One Trainer step of ``model`` on ``tasks`` per call; returns its seconds."""
    batch = {
        "support_image": torch.stack([s[0] for s, _ in tasks]),
        "support_label": torch.stack([s[1] for s, _ in tasks]),
        "query_image": torch.stack([q[0] for _, q in tasks]),
        "query_label": torch.stack([q[1] for _, q in tasks]),
    }

    def step() -> float:
        timer = StepTimer()
        trainer = L.Trainer(accelerator="cpu", max_steps=1, logger=False, callbacks=[timer],
                            enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, num_sanity_val_steps=0)  # fmt: skip
        trainer.fit(model, DataLoader([batch], batch_size=None))
        return timer.seconds[0]

    return step


def outer_step(
    model: nn.Module, meta_loss: Callable[[nn.Module, list[Task]], Tensor], tasks: list[Task]
) -> Callable[[], float]:
    """One meta-step of ``meta_loss`` and Adam per call; returns its seconds."""
    outer = torch.optim.Adam(model.parameters(), lr=0.03)

    def step() -> float:
        start = time.perf_counter()
        outer.zero_grad()
        meta_loss(model, tasks).backward()
        outer.step()
        return time.perf_counter() - start

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--tasks", type=int, default=12)
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--inner-steps", type=int, default=1)
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    parser.add_argument("--order", type=int, choices=(1, 2), default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    options = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    if options.threads:
        torch.set_num_threads(options.threads)

    torch.manual_seed(0)
    base = Conv4(options.image_size)
    tasks = make_tasks(options.tasks, options.shots, options.image_size)
    steps: dict[str, Callable[[], float]] = {}
    for name, meta_loss in variants(options).items():
        steps[name] = outer_step(copy.deepcopy(base), meta_loss, tasks)
    for backend in ("higher", "func"):
        model = MAML(image_size=options.image_size, inner_lr=0.03, inner_steps=options.inner_steps,
                     inner_optimizer=options.optimizer, first_order=options.order == 1,
                     backend=backend, lr=0.03)  # fmt: skip
        model.net.load_state_dict(base.state_dict())
        steps[f"plugin ({backend})"] = plugin_step(model, tasks)
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    for repeat in range(options.repeats + 1):
        for name, step in steps.items():
            elapsed = step()
            if repeat:
                seconds[name].append(elapsed)

    shots = f"({options.shots}+, {options.shots}-)"
    print(
        f"MAML meta-step, Conv4 at {options.image_size} px, {options.tasks} tasks of support "
        f"{shots} and query {shots}, {options.inner_steps} inner step(s) of "
        f"{options.optimizer} (hand-written: sgd), order {options.order}, "
        f"{torch.get_num_threads()} threads, median of {options.repeats}\n"
    )
    print("| variant | s/meta-step | meta-steps/s | cost vs hand-written |\n|---|---|---|---|")
    reference = statistics.median(seconds["hand-written"])
    for name, times in seconds.items():
        median = statistics.median(times)
        print(f"| {name} | {median:.3f} | {1 / median:.2f} | {median / reference:.2f}x |")


if __name__ == "__main__":
    main()
